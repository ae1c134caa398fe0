package telephony

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/telephony/carrier"
)

// e164 is an E.164 number: "+", a non-zero country code digit, at most 15 digits.
var e164 = regexp.MustCompile(`^\+[1-9]\d{1,14}$`)

// ValidNumber reports whether s is an E.164 phone number.
func ValidNumber(s string) bool { return e164.MatchString(s) }

// numberRow is a stored phone number.
type numberRow struct {
	id, tenantID, number, provider string
	trunkID, agentID               string // "" for NULL
	nickname, carrier, carrierID   string
	ruleID                         string
	created, updated               time.Time
}

const numberCols = `id, tenant_id, number, provider, COALESCE(trunk_id, ''), COALESCE(agent_id, ''), nickname,
	carrier, carrier_id, lk_rule_id, created_at, updated_at`

func scanNumber(row pgx.Row, extra ...any) (*numberRow, error) {
	var n numberRow
	dst := append([]any{&n.id, &n.tenantID, &n.number, &n.provider, &n.trunkID, &n.agentID, &n.nickname,
		&n.carrier, &n.carrierID, &n.ruleID, &n.created, &n.updated}, extra...)
	if err := row.Scan(dst...); err != nil {
		return nil, err
	}
	return &n, nil
}

func (n *numberRow) public() PhoneNumber {
	p := PhoneNumber{ID: n.id, Number: n.number, Provider: n.provider, Nickname: n.nickname, Carrier: n.carrier,
		CarrierNumberID: n.carrierID, LiveKitDispatchRuleID: n.ruleID, CreatedAt: n.created, UpdatedAt: n.updated}
	if n.trunkID != "" {
		p.TrunkID = &n.trunkID
	}
	if n.agentID != "" {
		p.AgentID = &n.agentID
	}
	return p
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// numberWhere selects a number by its E.164 form or its ID (pn_…): the API's paths take
// the number, and Call2Me's SDKs send the ID.
func numberWhere(key string) (string, string) {
	if ids.HasPrefix(key, phoneNumberPrefix) {
		return "id = $2", key
	}
	return "number = $2", normalizeNumber(key)
}

// normalizeNumber turns what a caller or a path may hold ("+1 555-0100", "15550100")
// into E.164 form, as LiveKit does for called numbers.
func normalizeNumber(s string) string {
	s = strings.TrimSpace(s)
	s = strings.NewReplacer(" ", "", "-", "", "(", "", ")", "", ".", "").Replace(s)
	if s != "" && !strings.HasPrefix(s, "+") {
		s = "+" + s
	}
	return s
}

// GetNumber returns one of the tenant's numbers, by E.164 number or ID.
func (s *Service) GetNumber(ctx context.Context, tenantID, key string) (PhoneNumber, error) {
	where, arg := numberWhere(key)
	n, err := scanNumber(s.pool.QueryRow(ctx, `SELECT `+numberCols+` FROM phone_numbers WHERE tenant_id = $1 AND `+where, tenantID, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return PhoneNumber{}, ErrNumberNotFound
	}
	if err != nil {
		return PhoneNumber{}, fmt.Errorf("telephony: get number %s: %w", key, err)
	}
	return n.public(), nil
}

// ListNumbers returns a page of the tenant's numbers, newest first, and the total.
func (s *Service) ListNumbers(ctx context.Context, tenantID string, limit, offset int) ([]PhoneNumber, int, error) {
	limit, offset = clampPage(limit, offset)
	rows, err := s.pool.Query(ctx, `SELECT `+numberCols+`, count(*) OVER () FROM phone_numbers WHERE tenant_id = $1
		ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`, tenantID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("telephony: list numbers: %w", err)
	}
	defer rows.Close()
	var out []PhoneNumber
	total := 0
	for rows.Next() {
		n, err := scanNumber(rows, &total)
		if err != nil {
			return nil, 0, fmt.Errorf("telephony: list numbers: %w", err)
		}
		out = append(out, n.public())
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("telephony: list numbers: %w", err)
	}
	if len(out) == 0 && offset > 0 {
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM phone_numbers WHERE tenant_id = $1`, tenantID).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("telephony: list numbers: count: %w", err)
		}
	}
	return out, total, nil
}

// checkAgent returns ErrAgentNotFound unless the tenant has the agent.
func checkAgent(ctx context.Context, tx pgx.Tx, tenantID, agentID string) error {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE tenant_id = $1 AND id = $2)`,
		tenantID, agentID).Scan(&ok); err != nil {
		return fmt.Errorf("telephony: check agent: %w", err)
	}
	if !ok {
		return ErrAgentNotFound
	}
	return nil
}

// CreateNumber registers a number the tenant already has. A SIP number needs a trunk;
// with AgentID it is bound at once.
func (s *Service) CreateNumber(ctx context.Context, tenantID string, in NumberInput) (PhoneNumber, error) {
	n, err := s.newNumber(tenantID, in)
	if err != nil {
		return PhoneNumber{}, err
	}
	err = s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		return s.insertNumber(ctx, tx, c, n)
	})
	if err != nil {
		return PhoneNumber{}, err
	}
	return n.public(), nil
}

// newNumber validates a registration.
func (s *Service) newNumber(tenantID string, in NumberInput) (*numberRow, error) {
	f := errs.Fields{}
	num := strings.TrimSpace(in.PhoneNumber)
	switch {
	case num == "":
		f.Add("phone_number", "is required")
	case !ValidNumber(num):
		f.Add("phone_number", "must be in E.164 format, like +14155550100")
	}
	provider := strings.ToLower(strings.TrimSpace(in.Provider))
	if provider == "" {
		provider = ProviderSIP
	}
	if provider != ProviderSIP && provider != ProviderTwilio {
		f.Add("provider", "must be sip or twilio")
	}
	trunk := strings.TrimSpace(in.TrunkID)
	if provider == ProviderSIP && trunk == "" {
		f.Add("trunk_id", "is required for a sip number (create one with POST /v1/sip-trunks)")
	}
	nick := strings.TrimSpace(in.Nickname)
	if utf8.RuneCountInString(nick) > maxNameLen {
		f.Add("nickname", "must be at most %d characters", maxNameLen)
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	now := s.now()
	return &numberRow{id: ids.New(phoneNumberPrefix), tenantID: tenantID, number: num, provider: provider,
		trunkID: trunk, agentID: strings.TrimSpace(in.AgentID), nickname: nick, created: now, updated: now}, nil
}

// insertNumber stores n and pushes it to LiveKit inside tx.
func (s *Service) insertNumber(ctx context.Context, tx pgx.Tx, c *change, n *numberRow) error {
	trunks, err := lockTrunks(ctx, tx, n.tenantID, n.trunkID)
	if err != nil {
		return err
	}
	if n.trunkID != "" && trunks[n.trunkID] == nil {
		return ErrTrunkNotFound
	}
	if n.agentID != "" {
		if err := checkAgent(ctx, tx, n.tenantID, n.agentID); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO phone_numbers (id, tenant_id, number, provider, trunk_id, agent_id, nickname,
		carrier, carrier_id, created_at, updated_at) VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
		n.tenantID, n.id, n.number, n.provider, nullable(n.trunkID), nullable(n.agentID), n.nickname, n.carrier, n.carrierID, n.created)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return ErrNumberTaken
	}
	if err != nil {
		return fmt.Errorf("telephony: create number: %w", err)
	}
	return s.pushNumber(ctx, tx, c, nil, n, trunks)
}

// lockNumber reads the tenant's number (by E.164 form or ID, see numberWhere) and
// locks its row until tx ends: ErrNumberNotFound when the tenant has none. op names
// the operation in a database error.
func lockNumber(ctx context.Context, tx pgx.Tx, tenantID, key, op string) (*numberRow, error) {
	where, arg := numberWhere(key)
	n, err := scanNumber(tx.QueryRow(ctx, `SELECT `+numberCols+` FROM phone_numbers WHERE tenant_id = $1 AND `+where+` FOR UPDATE`,
		tenantID, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNumberNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("telephony: %s number %s: %w", op, key, err)
	}
	return n, nil
}

// changeNumber locks the tenant's number, lets edit change a copy of it, writes it and
// brings LiveKit in line.
func (s *Service) changeNumber(ctx context.Context, tenantID, key string, edit func(ctx context.Context, tx pgx.Tx, n *numberRow) error) (PhoneNumber, error) {
	var out PhoneNumber
	err := s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		before, err := lockNumber(ctx, tx, tenantID, key, "change")
		if err != nil {
			return err
		}
		after := *before
		if err := edit(ctx, tx, &after); err != nil {
			return err
		}
		trunks, err := lockTrunks(ctx, tx, tenantID, before.trunkID, after.trunkID)
		if err != nil {
			return err
		}
		if after.trunkID != "" && trunks[after.trunkID] == nil {
			return ErrTrunkNotFound
		}
		after.updated = bumped(s.now(), before.updated)
		if _, err := tx.Exec(ctx, `UPDATE phone_numbers SET trunk_id = $3, agent_id = $4, nickname = $5, updated_at = $6
			WHERE tenant_id = $1 AND id = $2`, tenantID, before.id, nullable(after.trunkID), nullable(after.agentID),
			after.nickname, after.updated); err != nil {
			return fmt.Errorf("telephony: change number %s: %w", key, err)
		}
		if err := s.pushNumber(ctx, tx, c, before, &after, trunks); err != nil {
			return err
		}
		out = after.public()
		return nil
	})
	return out, err
}

// Bind makes agentID (an agent of the same tenant) answer the number. A SIP number gets
// its dispatch rule, which takes its calls from the trunk's rule.
func (s *Service) Bind(ctx context.Context, tenantID, key, agentID string) (PhoneNumber, error) {
	agentID = strings.TrimSpace(agentID)
	if agentID == "" {
		return PhoneNumber{}, errs.Invalid(map[string]string{"agent_id": "is required"})
	}
	return s.changeNumber(ctx, tenantID, key, func(ctx context.Context, tx pgx.Tx, n *numberRow) error {
		if err := checkAgent(ctx, tx, tenantID, agentID); err != nil {
			return err
		}
		n.agentID = agentID
		return nil
	})
}

// Unbind detaches the number's agent: its dispatch rule goes, and its calls fall to the
// trunk's rule, which has them refused.
func (s *Service) Unbind(ctx context.Context, tenantID, key string) (PhoneNumber, error) {
	return s.changeNumber(ctx, tenantID, key, func(ctx context.Context, tx pgx.Tx, n *numberRow) error {
		n.agentID = ""
		return nil
	})
}

// UpdateNumber applies p: a new nickname, trunk or agent.
func (s *Service) UpdateNumber(ctx context.Context, tenantID, key string, p NumberPatch) (PhoneNumber, error) {
	f := errs.Fields{}
	if p.Nickname != nil && utf8.RuneCountInString(strings.TrimSpace(*p.Nickname)) > maxNameLen {
		f.Add("nickname", "must be at most %d characters", maxNameLen)
	}
	if err := f.Err(); err != nil {
		return PhoneNumber{}, err
	}
	return s.changeNumber(ctx, tenantID, key, func(ctx context.Context, tx pgx.Tx, n *numberRow) error {
		if p.Nickname != nil {
			n.nickname = strings.TrimSpace(*p.Nickname)
		}
		if p.TrunkID != nil {
			n.trunkID = strings.TrimSpace(*p.TrunkID)
			if n.provider == ProviderSIP && n.trunkID == "" {
				return errs.Invalid(map[string]string{"trunk_id": "a sip number needs a trunk"})
			}
		}
		if p.AgentID != nil {
			n.agentID = strings.TrimSpace(*p.AgentID)
			if n.agentID != "" {
				if err := checkAgent(ctx, tx, tenantID, n.agentID); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// DeleteNumber removes the number, its dispatch rule and its place in the trunk's
// lists, and releases a number bought through Buy at its carrier.
//
// The release runs before the commit: if the carrier refuses, nothing changes and the
// caller can retry, rather than the number disappearing from Parley while the carrier
// keeps billing for it. (If the commit then fails, the row remains and a retried delete
// releases again, which carriers answer as "already released".)
func (s *Service) DeleteNumber(ctx context.Context, tenantID, key string) error {
	return s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		before, err := lockNumber(ctx, tx, tenantID, key, "delete")
		if err != nil {
			return err
		}
		trunks, err := lockTrunks(ctx, tx, tenantID, before.trunkID)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM phone_numbers WHERE tenant_id = $1 AND id = $2`, tenantID, before.id); err != nil {
			return fmt.Errorf("telephony: delete number %s: %w", key, err)
		}
		if err := s.pushNumber(ctx, tx, c, before, nil, trunks); err != nil {
			return err
		}
		if before.carrier != "" {
			cr := s.cfg.Carriers[before.carrier]
			if cr == nil {
				return errs.Conflict("carrier_unavailable", "This number was bought from "+before.carrier+
					", which this server is not configured for; it cannot be released")
			}
			if err := cr.Release(ctx, carrier.Purchased{PhoneNumber: before.number, Provider: before.carrier, ProviderID: before.carrierID}); err != nil {
				return fmt.Errorf("telephony: release %s at %s: %w", before.number, before.carrier, err)
			}
		}
		return nil
	})
}

// Buy buys a number from a configured carrier and registers it. Without PhoneNumber
// the carrier is searched and the first number offered is bought. If storing the number
// fails after the order, the number is released again.
func (s *Service) Buy(ctx context.Context, tenantID string, in BuyInput) (PhoneNumber, error) {
	name := strings.ToLower(strings.TrimSpace(in.Provider))
	f := errs.Fields{}
	if name == "" {
		f.Add("provider", "is required (telnyx or twilio)")
	}
	if in.PhoneNumber != "" && !ValidNumber(in.PhoneNumber) {
		f.Add("phone_number", "must be in E.164 format, like +14155550100")
	}
	country := strings.ToUpper(strings.TrimSpace(in.Country))
	// A Twilio number places calls through Twilio's API; any other carrier's number is
	// reached through a SIP trunk, which must exist before anything is bought.
	provider := ProviderSIP
	if name == ProviderTwilio {
		provider = ProviderTwilio
	}
	if provider == ProviderSIP && strings.TrimSpace(in.TrunkID) == "" && name != "" {
		f.Add("trunk_id", "is required for a number used over SIP")
	}
	if err := f.Err(); err != nil {
		return PhoneNumber{}, err
	}
	cr := s.cfg.Carriers[name]
	if cr == nil {
		return PhoneNumber{}, ErrUnknownCarrier
	}
	if in.TrunkID != "" {
		if _, err := s.GetTrunk(ctx, tenantID, in.TrunkID); err != nil {
			return PhoneNumber{}, err
		}
	}
	if in.PhoneNumber != "" {
		var taken bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM phone_numbers WHERE number = $1)`, in.PhoneNumber).Scan(&taken); err != nil {
			return PhoneNumber{}, fmt.Errorf("telephony: buy: %w", err)
		}
		if taken {
			return PhoneNumber{}, ErrNumberTaken
		}
	}
	// carrier.Buy searches when no number is named (the carrier validates the search
	// and reports "nothing found" as carrier.ErrNotAvailable) and orders the first hit.
	bought, err := carrier.Buy(ctx, cr, in.PhoneNumber, carrier.Query{Country: country, AreaCode: strings.TrimSpace(in.AreaCode), Limit: 1})
	if err != nil {
		return PhoneNumber{}, fmt.Errorf("telephony: buy from %s: %w", name, err)
	}
	n, err := s.newNumber(tenantID, NumberInput{PhoneNumber: bought.PhoneNumber, TrunkID: in.TrunkID, Provider: provider, Nickname: in.Nickname})
	if err == nil {
		n.carrier, n.carrierID = name, bought.ProviderID
		err = s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error { return s.insertNumber(ctx, tx, c, n) })
	}
	if err != nil {
		rctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if rerr := cr.Release(rctx, bought); rerr != nil {
			s.log.Error("telephony: a bought number could not be stored nor released; release it by hand",
				"carrier", name, "phone_number", bought.PhoneNumber, "provider_id", bought.ProviderID, "err", rerr)
		}
		return PhoneNumber{}, err
	}
	return n.public(), nil
}
