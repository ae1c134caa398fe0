package telephony

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/livekit/protocol/livekit"
)

// Reconcile makes LiveKit SIP match the database: every trunk's LiveKit trunks and
// trunk-level dispatch rule, and every bound number's dispatch rule, are recreated if
// missing and replaced with their stored
// state otherwise, rules of numbers whose agent was deleted are removed, and objects
// this installation made that no row refers to (left by a crash between a LiveKit call
// and its commit, or by a deleted tenant) are deleted.
//
// It is safe while the API serves (the sweep holds changes back for its duration), but
// belongs at start-up: LiveKit keeps SIP state in Redis, and the Redis
// `parley dev` manages does not persist, so after a restart every trunk and rule must be
// pushed again.
func (s *Service) Reconcile(ctx context.Context) error {
	type key struct{ tenant, id string }
	var trunks []key
	rows, err := s.pool.Query(ctx, `SELECT tenant_id, id FROM sip_trunks ORDER BY id`)
	if err != nil {
		return fmt.Errorf("telephony: reconcile: %w", err)
	}
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.tenant, &k.id); err != nil {
			rows.Close()
			return fmt.Errorf("telephony: reconcile: %w", err)
		}
		trunks = append(trunks, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("telephony: reconcile: %w", err)
	}
	var failed []error
	for _, k := range trunks {
		if err := s.reconcileTrunk(ctx, k.tenant, k.id); err != nil && !errors.Is(err, ErrTrunkNotFound) {
			failed = append(failed, fmt.Errorf("trunk %s: %w", k.id, err))
		}
	}
	if err := s.removeOrphans(ctx); err != nil {
		failed = append(failed, err)
	}
	if len(failed) > 0 {
		return fmt.Errorf("telephony: reconcile: %w", errors.Join(failed...))
	}
	return nil
}

func (s *Service) reconcileTrunk(ctx context.Context, tenantID, id string) error {
	return s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		// Numbers first, then the trunk: the order every change locks in.
		rows, err := tx.Query(ctx, `SELECT `+numberCols+` FROM phone_numbers WHERE tenant_id = $1 AND trunk_id = $2
			ORDER BY id FOR UPDATE`, tenantID, id)
		if err != nil {
			return err
		}
		var numbers []*numberRow
		for rows.Next() {
			n, err := scanNumber(rows)
			if err != nil {
				rows.Close()
				return err
			}
			numbers = append(numbers, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		trunks, err := lockTrunks(ctx, tx, tenantID, id)
		if err != nil {
			return err
		}
		if trunks[id] == nil {
			return ErrTrunkNotFound
		}
		if err := s.pushTrunk(ctx, tx, c, trunks[id]); err != nil {
			return err
		}
		for _, n := range numbers {
			after := *n
			if err := s.pushRule(ctx, tx, c, n, &after, trunks); err != nil {
				return err
			}
		}
		return nil
	})
}

// removeOrphans deletes this installation's LiveKit trunks and rules that no row refers
// to.
func (s *Service) removeOrphans(ctx context.Context) error {
	// The exclusive lock waits for changes in flight and holds new ones back, so every
	// object this installation has in LiveKit is either referenced by a committed row or
	// an orphan.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("orphans: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, mirrorLock); err != nil {
		return fmt.Errorf("orphans: lock: %w", err)
	}
	known := map[string]bool{}
	rows, err := tx.Query(ctx, `SELECT lk_inbound_id FROM sip_trunks UNION ALL SELECT lk_outbound_id FROM sip_trunks
		UNION ALL SELECT lk_rule_id FROM sip_trunks UNION ALL SELECT lk_rule_id FROM phone_numbers`)
	if err != nil {
		return fmt.Errorf("orphans: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("orphans: %w", err)
		}
		known[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("orphans: %w", err)
	}
	orphan := func(id, name string) bool { return !known[id] && strings.HasPrefix(name, s.lkPrefix()) }
	var failed []error
	in, err := s.sip.ListSIPInboundTrunk(ctx, &livekit.ListSIPInboundTrunkRequest{})
	if err != nil {
		return errLiveKit("list inbound trunks", err)
	}
	for _, t := range in.Items {
		if orphan(t.SipTrunkId, t.Name) {
			failed = appendErr(failed, s.deleteTrunk(ctx, t.SipTrunkId))
		}
	}
	out, err := s.sip.ListSIPOutboundTrunk(ctx, &livekit.ListSIPOutboundTrunkRequest{})
	if err != nil {
		return errLiveKit("list outbound trunks", err)
	}
	for _, t := range out.Items {
		if orphan(t.SipTrunkId, t.Name) {
			failed = appendErr(failed, s.deleteTrunk(ctx, t.SipTrunkId))
		}
	}
	rules, err := s.sip.ListSIPDispatchRule(ctx, &livekit.ListSIPDispatchRuleRequest{})
	if err != nil {
		return errLiveKit("list dispatch rules", err)
	}
	for _, r := range rules.Items {
		if orphan(r.SipDispatchRuleId, r.Name) {
			failed = appendErr(failed, s.deleteRule(ctx, r.SipDispatchRuleId))
		}
	}
	return errors.Join(failed...)
}

func appendErr(errs []error, err error) []error {
	if err != nil {
		return append(errs, err)
	}
	return errs
}
