package telephony

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// InboundRoute says where a call to number (E.164; LiveKit's forms without "+" or with
// spaces are accepted too) goes. It takes no tenant: the number is unique across
// tenants and identifies it. ErrNumberNotFound for a number Parley does not have,
// ErrUnbound for one no agent answers.
func (s *Service) InboundRoute(ctx context.Context, number string) (Route, error) {
	number = normalizeNumber(number)
	var r Route
	var agent *string
	err := s.pool.QueryRow(ctx, `SELECT tenant_id, agent_id, id, number FROM phone_numbers WHERE number = $1`, number).
		Scan(&r.TenantID, &agent, &r.NumberID, &r.Number)
	if errors.Is(err, pgx.ErrNoRows) {
		return Route{}, ErrNumberNotFound
	}
	if err != nil {
		return Route{}, fmt.Errorf("telephony: inbound route %s: %w", number, err)
	}
	if agent == nil {
		return Route{}, ErrUnbound
	}
	r.AgentID = *agent
	return r, nil
}

// OutboundLine picks how the tenant's agent calls out. With fromNumber, that number of
// the tenant (ErrNumberNotFound if it has no such number, ErrNoLine if it cannot dial
// out: a SIP number whose trunk has no outbound address). Without, the number bound to
// agentID if one can dial out, else the tenant's oldest number that can.
func (s *Service) OutboundLine(ctx context.Context, tenantID, agentID, fromNumber string) (Line, error) {
	const q = `SELECT n.id, n.number, n.provider, COALESCE(t.lk_outbound_id, '') FROM phone_numbers n
		LEFT JOIN sip_trunks t ON t.tenant_id = n.tenant_id AND t.id = n.trunk_id
		WHERE n.tenant_id = $1 `
	var l Line
	if fromNumber != "" {
		err := s.pool.QueryRow(ctx, q+`AND n.number = $2`, tenantID, normalizeNumber(fromNumber)).
			Scan(&l.NumberID, &l.Number, &l.Provider, &l.SIPTrunkID)
		if errors.Is(err, pgx.ErrNoRows) {
			return Line{}, ErrNumberNotFound
		}
		if err != nil {
			return Line{}, fmt.Errorf("telephony: outbound line: %w", err)
		}
		if l.Provider == ProviderSIP && l.SIPTrunkID == "" {
			return Line{}, ErrNoLine
		}
		if l.Provider != ProviderSIP {
			l.SIPTrunkID = ""
		}
		return l, nil
	}
	err := s.pool.QueryRow(ctx, q+`AND (n.provider = 'twilio' OR (n.provider = 'sip' AND t.lk_outbound_id <> ''))
		ORDER BY n.agent_id IS NOT DISTINCT FROM $2 DESC, n.created_at, n.id LIMIT 1`, tenantID, agentID).
		Scan(&l.NumberID, &l.Number, &l.Provider, &l.SIPTrunkID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Line{}, ErrNoLine
	}
	if err != nil {
		return Line{}, fmt.Errorf("telephony: outbound line: %w", err)
	}
	if l.Provider != ProviderSIP {
		l.SIPTrunkID = ""
	}
	return l, nil
}
