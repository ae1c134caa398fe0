package telephony

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/livekit/protocol/livekit"
)

// The LiveKit side of trunks and numbers. Each trunk has an inbound trunk in LiveKit
// listing all its numbers and a trunk-level dispatch rule (always), and an outbound
// trunk (when it has an outbound address); each bound SIP number has its own dispatch
// rule. Their desired state is computed from the database inside the change's
// transaction and pushed whole (create, or replace), so a push also repairs drift.

// RoomPrefix starts the name of every inbound call's room: call-<caller>_<random>.
const RoomPrefix = "call-"

// lkName names a LiveKit object this installation owns after the row it mirrors.
func (s *Service) lkName(id string) string { return s.lkPrefix() + id }

func (s *Service) lkPrefix() string { return "parley/" + s.cfg.AgentName + "/" }

// unboundNumber is what a LiveKit inbound trunk lists while the trunk has no numbers at
// all. LiveKit reads an empty number list as "every number" (a wildcard trunk, of
// which it allows only one per source), the opposite of what an unbound trunk means.
// This placeholder is unique per trunk and is not a phone number (livekit.NormalizeNumber
// leaves it as it is), so no real call matches it and two trunks never conflict.
// (The outbound trunk uses it for the same want of a number.)
func unboundNumber(trunkID string) string { return "parley-unbound-" + trunkID }

// trunkRow is a stored trunk, passwords sealed.
type trunkRow struct {
	id, tenantID, name                      string
	outAddr, outTransport, outUser, outPass string
	inAddrs                                 []string
	inUser, inPass                          string
	lkIn, lkOut, lkRule                     string
	created, updated                        time.Time
}

const trunkCols = `id, tenant_id, name, outbound_address, outbound_transport, outbound_username, outbound_password,
	inbound_addresses, inbound_username, inbound_password, lk_inbound_id, lk_outbound_id, lk_rule_id, created_at, updated_at`

func scanTrunk(row pgx.Row) (*trunkRow, error) {
	var t trunkRow
	err := row.Scan(&t.id, &t.tenantID, &t.name, &t.outAddr, &t.outTransport, &t.outUser, &t.outPass,
		&t.inAddrs, &t.inUser, &t.inPass, &t.lkIn, &t.lkOut, &t.lkRule, &t.created, &t.updated)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func (t *trunkRow) public() Trunk {
	addrs := t.inAddrs
	if addrs == nil {
		addrs = []string{}
	}
	return Trunk{ID: t.id, Name: t.name, OutboundAddress: t.outAddr, OutboundTransport: t.outTransport,
		OutboundUsername: t.outUser, OutboundPassword: Secret{set: t.outPass != ""},
		InboundAddresses: addrs, InboundUsername: t.inUser, InboundPassword: Secret{set: t.inPass != ""},
		LiveKitInboundTrunkID: t.lkIn, LiveKitOutboundTrunkID: t.lkOut, LiveKitDispatchRuleID: t.lkRule, CreatedAt: t.created, UpdatedAt: t.updated}
}

// lockTrunks locks the tenant's trunks with these IDs, in ID order (so two changes that
// lock the same trunks never deadlock), and returns them by ID.
func lockTrunks(ctx context.Context, tx pgx.Tx, tenantID string, ids ...string) (map[string]*trunkRow, error) {
	ids = slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == "" })
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := make(map[string]*trunkRow, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, `SELECT `+trunkCols+` FROM sip_trunks WHERE tenant_id = $1 AND id = ANY($2)
		ORDER BY id FOR UPDATE`, tenantID, ids)
	if err != nil {
		return nil, fmt.Errorf("telephony: lock trunks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		t, err := scanTrunk(rows)
		if err != nil {
			return nil, fmt.Errorf("telephony: lock trunks: %w", err)
		}
		out[t.id] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("telephony: lock trunks: %w", err)
	}
	return out, nil
}

func (s *Service) open(sealed string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	pt, err := s.box.Open(sealed)
	if err != nil {
		return "", fmt.Errorf("telephony: open SIP password: %w", err)
	}
	return pt, nil
}

// inboundInfo is the trunk's LiveKit inbound trunk. It lists every number on the trunk,
// bound or not: LiveKit SIP (server v1.13.5, livekit-sip v1.8.0) answers a call to a
// number no inbound trunk lists with nothing at all (its flood protection drops it, and
// the caller hears ringing until they give up), whereas a listed number reaches a
// dispatch rule, and the trunk rule (trunkRuleInfo) lets the worker refuse the call.
func (s *Service) inboundInfo(t *trunkRow, numbers []string) (*livekit.SIPInboundTrunkInfo, error) {
	pass, err := s.open(t.inPass)
	if err != nil {
		return nil, err
	}
	if len(numbers) == 0 {
		numbers = []string{unboundNumber(t.id)}
	}
	return &livekit.SIPInboundTrunkInfo{Name: s.lkName(t.id), Numbers: numbers,
		AllowedAddresses: slices.Clone(t.inAddrs), AuthUsername: t.inUser, AuthPassword: pass}, nil
}

var lkTransports = map[string]livekit.SIPTransport{
	TransportUDP: livekit.SIPTransport_SIP_TRANSPORT_UDP,
	TransportTCP: livekit.SIPTransport_SIP_TRANSPORT_TCP,
	TransportTLS: livekit.SIPTransport_SIP_TRANSPORT_TLS,
}

func (s *Service) outboundInfo(t *trunkRow, numbers []string) (*livekit.SIPOutboundTrunkInfo, error) {
	pass, err := s.open(t.outPass)
	if err != nil {
		return nil, err
	}
	if len(numbers) == 0 {
		// LiveKit requires at least one number; the dialler always names the caller
		// ID (CreateSIPParticipant's sip_number), so this one is never used.
		numbers = []string{unboundNumber(t.id)}
	}
	return &livekit.SIPOutboundTrunkInfo{Name: s.lkName(t.id), Address: t.outAddr,
		Transport: lkTransports[t.outTransport], Numbers: numbers, AuthUsername: t.outUser, AuthPassword: pass}, nil
}

// trunkNumbers returns, as the transaction sees them, all of the trunk's numbers: both
// its inbound and its outbound trunk list them. (A Twilio number on a trunk is listed
// too: its calls normally come through Twilio, but one that arrives over SIP has no
// rule of its own and is refused by the trunk rule rather than left ringing.)
func trunkNumbers(ctx context.Context, tx pgx.Tx, t *trunkRow) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT number FROM phone_numbers WHERE tenant_id = $1 AND trunk_id = $2 ORDER BY number`,
		t.tenantID, t.id)
	if err != nil {
		return nil, fmt.Errorf("telephony: trunk numbers: %w", err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("telephony: trunk numbers: %w", err)
	}
	return all, nil
}

// pushTrunk makes the trunk's LiveKit objects match the transaction's view of it and its
// numbers: creating what is missing (undone by deleting it), replacing what exists
// (undone by putting back what LiveKit held), deleting an outbound trunk the trunk no
// longer has an address for (after the commit). It stores the LiveKit IDs in the row.
func (s *Service) pushTrunk(ctx context.Context, tx pgx.Tx, c *change, t *trunkRow) error {
	all, err := trunkNumbers(ctx, tx, t)
	if err != nil {
		return err
	}
	in, err := s.inboundInfo(t, all)
	if err != nil {
		return err
	}
	if t.lkIn != "" {
		cur, err := s.sip.GetSIPInboundTrunksByIDs(ctx, []string{t.lkIn})
		if err != nil {
			return errLiveKit("get inbound trunk", err)
		}
		if len(cur) == 1 && cur[0] != nil {
			prev := cur[0]
			if _, err := s.sip.UpdateSIPInboundTrunk(ctx, &livekit.UpdateSIPInboundTrunkRequest{SipTrunkId: t.lkIn,
				Action: &livekit.UpdateSIPInboundTrunkRequest_Replace{Replace: in}}); err != nil {
				return errLiveKit("update inbound trunk", err)
			}
			c.onFail("restore inbound trunk "+t.lkIn, func(ctx context.Context) error {
				_, err := s.sip.UpdateSIPInboundTrunk(ctx, &livekit.UpdateSIPInboundTrunkRequest{SipTrunkId: prev.SipTrunkId,
					Action: &livekit.UpdateSIPInboundTrunkRequest_Replace{Replace: prev}})
				return err
			})
		} else {
			s.log.Warn("telephony: LiveKit lost an inbound trunk; recreating it", "trunk_id", t.id, "livekit_id", t.lkIn)
			t.lkIn = ""
		}
	}
	if t.lkIn == "" {
		created, err := s.sip.CreateSIPInboundTrunk(ctx, &livekit.CreateSIPInboundTrunkRequest{Trunk: in})
		if err != nil {
			return errLiveKit("create inbound trunk", err)
		}
		id := created.SipTrunkId
		c.onFail("delete new inbound trunk "+id, func(ctx context.Context) error { return s.deleteTrunk(ctx, id) })
		t.lkIn = id
	}
	// The trunk rule follows the inbound trunk (a recreated one has a new ID).
	if t.lkRule, err = s.ensureRule(ctx, c, t.lkRule, s.trunkRuleInfo(t)); err != nil {
		return err
	}

	switch {
	case t.outAddr != "":
		out, err := s.outboundInfo(t, all)
		if err != nil {
			return err
		}
		if t.lkOut != "" {
			cur, err := s.sip.GetSIPOutboundTrunksByIDs(ctx, []string{t.lkOut})
			if err != nil {
				return errLiveKit("get outbound trunk", err)
			}
			if len(cur) == 1 && cur[0] != nil {
				prev := cur[0]
				if _, err := s.sip.UpdateSIPOutboundTrunk(ctx, &livekit.UpdateSIPOutboundTrunkRequest{SipTrunkId: t.lkOut,
					Action: &livekit.UpdateSIPOutboundTrunkRequest_Replace{Replace: out}}); err != nil {
					return errLiveKit("update outbound trunk", err)
				}
				c.onFail("restore outbound trunk "+t.lkOut, func(ctx context.Context) error {
					_, err := s.sip.UpdateSIPOutboundTrunk(ctx, &livekit.UpdateSIPOutboundTrunkRequest{SipTrunkId: prev.SipTrunkId,
						Action: &livekit.UpdateSIPOutboundTrunkRequest_Replace{Replace: prev}})
					return err
				})
			} else {
				s.log.Warn("telephony: LiveKit lost an outbound trunk; recreating it", "trunk_id", t.id, "livekit_id", t.lkOut)
				t.lkOut = ""
			}
		}
		if t.lkOut == "" {
			created, err := s.sip.CreateSIPOutboundTrunk(ctx, &livekit.CreateSIPOutboundTrunkRequest{Trunk: out})
			if err != nil {
				return errLiveKit("create outbound trunk", err)
			}
			id := created.SipTrunkId
			c.onFail("delete new outbound trunk "+id, func(ctx context.Context) error { return s.deleteTrunk(ctx, id) })
			t.lkOut = id
		}
	case t.lkOut != "":
		id := t.lkOut
		c.afterCommit(func(ctx context.Context) error { return s.deleteTrunk(ctx, id) })
		t.lkOut = ""
	}
	if _, err := tx.Exec(ctx, `UPDATE sip_trunks SET lk_inbound_id = $3, lk_outbound_id = $4, lk_rule_id = $5
		WHERE tenant_id = $1 AND id = $2`, t.tenantID, t.id, t.lkIn, t.lkOut, t.lkRule); err != nil {
		return fmt.Errorf("telephony: store LiveKit trunk IDs: %w", err)
	}
	return nil
}

// deleteTrunk deletes a LiveKit trunk (inbound or outbound); a missing one is deleted.
func (s *Service) deleteTrunk(ctx context.Context, id string) error {
	if _, err := s.sip.DeleteSIPTrunk(ctx, &livekit.DeleteSIPTrunkRequest{SipTrunkId: id}); err != nil && !lkNotFound(err) {
		return fmt.Errorf("delete LiveKit trunk %s: %w", id, err)
	}
	return nil
}

// deleteRule deletes a LiveKit dispatch rule; a missing one is deleted.
func (s *Service) deleteRule(ctx context.Context, id string) error {
	if _, err := s.sip.DeleteSIPDispatchRule(ctx, &livekit.DeleteSIPDispatchRuleRequest{SipDispatchRuleId: id}); err != nil && !lkNotFound(err) {
		return fmt.Errorf("delete LiveKit dispatch rule %s: %w", id, err)
	}
	return nil
}

// phoneMetadata is the agent dispatch metadata of an inbound call (calls.DispatchMetadata
// with phone_number set): the worker looks the number up with InboundRoute.
func phoneMetadata(number string) string {
	b, _ := json.Marshal(map[string]string{"phone_number": number})
	return string(b)
}

// UnboundMetadata is the agent dispatch metadata of a call that reached a trunk's rule,
// not a number's: the number called has no agent. The worker deletes the room without
// joining it, which makes LiveKit SIP refuse the ringing call (486 Busy Here).
const UnboundMetadata = `{"unbound":true}`

// ruleInfo is the dispatch rule of a bound number: each call gets its own room
// (call-<caller>_<random>) with Parley's agent dispatched into it, carrying the number
// called.
func (s *Service) ruleInfo(n *numberRow, inboundTrunkID string) *livekit.SIPDispatchRuleInfo {
	return s.individualRule(n.id, inboundTrunkID, []string{n.number}, phoneMetadata(n.number))
}

// trunkRuleInfo is the trunk's own dispatch rule, which lists no numbers: LiveKit ranks
// a rule that lists the number called above one that lists none
// (sip.DispatchRulePriority), so a bound number's rule takes its calls and this one
// takes only calls to the trunk's other, unbound, numbers. Those get a room and a
// dispatch like any call, marked unbound, so that the worker can refuse them at once.
func (s *Service) trunkRuleInfo(t *trunkRow) *livekit.SIPDispatchRuleInfo {
	return s.individualRule(t.id, t.lkIn, nil, UnboundMetadata)
}

func (s *Service) individualRule(rowID, inboundTrunkID string, numbers []string, metadata string) *livekit.SIPDispatchRuleInfo {
	return &livekit.SIPDispatchRuleInfo{
		Name:     s.lkName(rowID),
		TrunkIds: []string{inboundTrunkID},
		Numbers:  numbers,
		Rule: &livekit.SIPDispatchRule{Rule: &livekit.SIPDispatchRule_DispatchRuleIndividual{
			DispatchRuleIndividual: &livekit.SIPDispatchRuleIndividual{RoomPrefix: RoomPrefix},
		}},
		RoomConfig: &livekit.RoomConfiguration{Agents: []*livekit.RoomAgentDispatch{{
			AgentName: s.cfg.AgentName, Metadata: metadata,
		}}},
	}
}

// sameRule reports whether LiveKit's rule already is what individualRule describes.
func sameRule(cur, want *livekit.SIPDispatchRuleInfo) bool {
	ca, wa := cur.GetRoomConfig().GetAgents(), want.GetRoomConfig().GetAgents()
	return cur.Name == want.Name && slices.Equal(cur.TrunkIds, want.TrunkIds) && slices.Equal(cur.Numbers, want.Numbers) &&
		len(cur.InboundNumbers) == 0 &&
		cur.GetRule().GetDispatchRuleIndividual().GetRoomPrefix() == want.GetRule().GetDispatchRuleIndividual().GetRoomPrefix() &&
		cur.GetRule().GetDispatchRuleIndividual().GetPin() == "" &&
		len(ca) == 1 && ca[0].GetAgentName() == wa[0].GetAgentName() && ca[0].GetMetadata() == wa[0].GetMetadata()
}

// wantsRule reports whether a number needs a dispatch rule: a SIP number on a trunk,
// bound to an agent.
func (n *numberRow) wantsRule() bool {
	return n != nil && n.provider == ProviderSIP && n.trunkID != "" && n.agentID != ""
}

// pushNumber brings LiveKit in line after a number changed from before to after (either
// may be nil: created, deleted). The new state is already written in tx. It pushes the
// trunks involved (their number lists change when a number comes, goes or moves), then
// creates, keeps or drops the number's dispatch rule, and stores the rule's ID.
func (s *Service) pushNumber(ctx context.Context, tx pgx.Tx, c *change, before, after *numberRow, trunks map[string]*trunkRow) error {
	var ids []string
	if before != nil {
		ids = append(ids, before.trunkID)
	}
	if after != nil {
		ids = append(ids, after.trunkID)
	}
	slices.Sort(ids)
	for _, id := range slices.Compact(ids) {
		if t := trunks[id]; t != nil {
			if err := s.pushTrunk(ctx, tx, c, t); err != nil {
				return err
			}
		}
	}
	return s.pushRule(ctx, tx, c, before, after, trunks)
}

// pushRule creates, keeps or drops the number's dispatch rule (see pushNumber); the
// trunks must already be pushed.
//
// A rule that goes is deleted after the commit (the rule for deletes). Until then it is
// harmless: a deleted or moved number has already left the inbound trunk, and a call
// that reaches an unbound number's old rule is refused by the worker, whose
// InboundRoute sees the committed unbinding (ErrUnbound), as the trunk rule's would be.
func (s *Service) pushRule(ctx context.Context, tx pgx.Tx, c *change, before, after *numberRow, trunks map[string]*trunkRow) error {
	oldRule := ""
	if before != nil {
		oldRule = before.ruleID
	}
	newRule := ""
	if after.wantsRule() {
		// The rule names the number, not the agent, so a rebind keeps it as it is; a
		// rule that drifted (its inbound trunk was recreated, say) is replaced under the
		// same ID.
		reuse := ""
		if before != nil && before.number == after.number {
			reuse = oldRule
		}
		var err error
		if newRule, err = s.ensureRule(ctx, c, reuse, s.ruleInfo(after, trunks[after.trunkID].lkIn)); err != nil {
			return err
		}
	}
	if oldRule != "" && oldRule != newRule {
		c.afterCommit(func(ctx context.Context) error { return s.deleteRule(ctx, oldRule) })
	}
	if after != nil {
		after.ruleID = newRule
		if _, err := tx.Exec(ctx, `UPDATE phone_numbers SET lk_rule_id = $3 WHERE tenant_id = $1 AND id = $2`,
			after.tenantID, after.id, newRule); err != nil {
			return fmt.Errorf("telephony: store dispatch rule ID: %w", err)
		}
	}
	return nil
}

// ensureRule makes LiveKit hold the dispatch rule want and returns its ID: the rule cur
// if LiveKit still has it (replaced when it differs from want, undone by restoring
// it), else a new rule (undone by deleting it).
func (s *Service) ensureRule(ctx context.Context, c *change, cur string, want *livekit.SIPDispatchRuleInfo) (string, error) {
	if cur != "" {
		got, err := s.sip.GetSIPDispatchRulesByIDs(ctx, []string{cur})
		if err != nil {
			return "", errLiveKit("get dispatch rule", err)
		}
		if len(got) == 1 && got[0] != nil {
			if prev := got[0]; !sameRule(prev, want) {
				if _, err := s.sip.UpdateSIPDispatchRule(ctx, &livekit.UpdateSIPDispatchRuleRequest{SipDispatchRuleId: cur,
					Action: &livekit.UpdateSIPDispatchRuleRequest_Replace{Replace: want}}); err != nil {
					return "", errLiveKit("update dispatch rule", err)
				}
				c.onFail("restore dispatch rule "+cur, func(ctx context.Context) error {
					_, err := s.sip.UpdateSIPDispatchRule(ctx, &livekit.UpdateSIPDispatchRuleRequest{SipDispatchRuleId: prev.SipDispatchRuleId,
						Action: &livekit.UpdateSIPDispatchRuleRequest_Replace{Replace: prev}})
					return err
				})
			}
			return cur, nil
		}
		s.log.Warn("telephony: LiveKit lost a dispatch rule; recreating it", "name", want.Name, "livekit_id", cur)
	}
	if err := s.dropStaleRules(ctx, want, cur); err != nil {
		return "", err
	}
	created, err := s.sip.CreateSIPDispatchRule(ctx, &livekit.CreateSIPDispatchRuleRequest{DispatchRule: want})
	if err != nil {
		return "", errLiveKit("create dispatch rule", err)
	}
	id := created.SipDispatchRuleId
	c.onFail("delete new dispatch rule "+id, func(ctx context.Context) error { return s.deleteRule(ctx, id) })
	return id, nil
}

// dropStaleRules deletes this installation's rules on want's inbound trunk that claim
// the same calls as want (the same number, or, for a trunk rule, no number) and that no
// row refers to (left by a delete that failed after its commit, or a crash before one),
// which would otherwise make LiveKit refuse want as a duplicate. keep is the rule the
// row still refers to (deleted after the commit instead).
func (s *Service) dropStaleRules(ctx context.Context, want *livekit.SIPDispatchRuleInfo, keep string) error {
	res, err := s.sip.ListSIPDispatchRule(ctx, &livekit.ListSIPDispatchRuleRequest{TrunkIds: want.TrunkIds})
	if err != nil {
		return errLiveKit("list dispatch rules", err)
	}
	for _, r := range res.Items {
		if r.SipDispatchRuleId == keep || !strings.HasPrefix(r.Name, s.lkPrefix()) || !slices.Contains(r.TrunkIds, want.TrunkIds[0]) {
			continue
		}
		clash := len(r.Numbers) == 0 && len(want.Numbers) == 0 ||
			slices.ContainsFunc(want.Numbers, func(n string) bool { return slices.Contains(r.Numbers, n) })
		if !clash {
			continue
		}
		if err := s.deleteRule(ctx, r.SipDispatchRuleId); err != nil {
			return errLiveKit("delete stale dispatch rule", err)
		}
	}
	return nil
}
