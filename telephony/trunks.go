package telephony

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// Limits of a trunk's fields: generous for real carriers, small enough that a trunk can
// never become a storage or LiveKit payload problem.
const (
	maxNameLen        = 100
	maxCredentialLen  = 128
	maxInboundAddrs   = 50
	maxAddressLen     = 253 + 6 // a DNS name and ":65535"
	trunkIDPrefix     = "trk"
	phoneNumberPrefix = "pn"
)

// CreateTrunk validates in, stores a trunk and creates its LiveKit mirrors: an inbound
// trunk, its trunk-level dispatch rule and, with an outbound address, an outbound trunk.
func (s *Service) CreateTrunk(ctx context.Context, tenantID string, in TrunkInput) (Trunk, error) {
	t := &trunkRow{id: ids.New(trunkIDPrefix), tenantID: tenantID, outTransport: TransportUDP}
	if in.Name == nil {
		in.Name = new(string)
	}
	if err := s.applyTrunkInput(t, in); err != nil {
		return Trunk{}, err
	}
	if err := s.checkAddress(ctx, "outbound_address", t.outAddr); err != nil {
		return Trunk{}, err
	}
	now := s.now()
	t.created, t.updated = now, now
	err := s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		_, err := tx.Exec(ctx, `INSERT INTO sip_trunks (id, tenant_id, name, outbound_address, outbound_transport,
			outbound_username, outbound_password, inbound_addresses, inbound_username, inbound_password, created_at, updated_at)
			VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)`,
			tenantID, t.id, t.name, t.outAddr, t.outTransport, t.outUser, t.outPass, t.inAddrs, t.inUser, t.inPass, now)
		if err != nil {
			return fmt.Errorf("telephony: create trunk: %w", err)
		}
		return s.pushTrunk(ctx, tx, c, t)
	})
	if err != nil {
		return Trunk{}, err
	}
	return t.public(), nil
}

// applyTrunkInput validates in and applies it to t, sealing new passwords. Every broken
// rule is reported at once.
func (s *Service) applyTrunkInput(t *trunkRow, in TrunkInput) error {
	f := errs.Fields{}
	if in.Name != nil {
		name := strings.TrimSpace(*in.Name)
		switch {
		case name == "":
			f.Add("name", "is required")
		case utf8.RuneCountInString(name) > maxNameLen:
			f.Add("name", "must be at most %d characters", maxNameLen)
		default:
			t.name = name
		}
	}
	if in.OutboundAddress != nil {
		addr := strings.TrimSpace(*in.OutboundAddress)
		if addr != "" {
			if err := checkHostPort(addr); err != nil {
				f.Add("outbound_address", "%s", err.Error())
			}
		}
		t.outAddr = addr
	}
	if in.OutboundTransport != nil {
		tr := strings.ToLower(strings.TrimSpace(*in.OutboundTransport))
		if tr == "" {
			tr = TransportUDP
		}
		if _, ok := lkTransports[tr]; !ok {
			f.Add("outbound_transport", "must be udp, tcp or tls")
		}
		t.outTransport = tr
	}
	credential := func(field string, v *string, dst *string) {
		if v == nil {
			return
		}
		if utf8.RuneCountInString(*v) > maxCredentialLen {
			f.Add(field, "must be at most %d characters", maxCredentialLen)
			return
		}
		if strings.ContainsAny(*v, "\r\n") {
			f.Add(field, "must not contain line breaks")
			return
		}
		*dst = *v
	}
	credential("outbound_username", in.OutboundUsername, &t.outUser)
	credential("inbound_username", in.InboundUsername, &t.inUser)
	password := func(field string, v *string, dst *string) {
		if v == nil || *v == Mask {
			return // Mask is what GET showed: keep the stored password
		}
		if utf8.RuneCountInString(*v) > maxCredentialLen {
			f.Add(field, "must be at most %d characters", maxCredentialLen)
			return
		}
		if *v == "" {
			*dst = ""
			return
		}
		sealed, err := s.box.Seal(*v)
		if err != nil {
			f.Add(field, "could not be stored") // crypto/rand failure; never expected
			return
		}
		*dst = sealed
	}
	password("outbound_password", in.OutboundPassword, &t.outPass)
	password("inbound_password", in.InboundPassword, &t.inPass)
	if t.outPass != "" && t.outUser == "" {
		f.Add("outbound_username", "is required with outbound_password")
	}
	if (t.inUser == "") != (t.inPass == "") {
		f.Add("inbound_password", "inbound_username and inbound_password go together")
	}
	if in.InboundAddresses != nil {
		addrs := *in.InboundAddresses
		if len(addrs) > maxInboundAddrs {
			f.Add("inbound_allowed_addresses", "at most %d entries", maxInboundAddrs)
		}
		clean := make([]string, 0, len(addrs))
		for i, a := range addrs {
			a = strings.TrimSpace(a)
			norm, ok := normalizeAddrMask(a)
			if !ok {
				f.Add("inbound_allowed_addresses", "entry %d (%q) is not an IP address or CIDR", i, a)
				continue
			}
			clean = append(clean, norm)
		}
		t.inAddrs = clean
	}
	if t.inAddrs == nil {
		t.inAddrs = []string{}
	}
	return f.Err()
}

// normalizeAddrMask accepts an IP (1.2.3.4, ::1) or a CIDR (10.0.0.0/8) and returns it
// in canonical form: what LiveKit matches a call's source address against.
func normalizeAddrMask(s string) (string, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return "", false
		}
		return p.Masked().String(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", false
	}
	return a.String(), true
}

// checkHostPort validates a SIP host[:port]: a DNS name or an IP ([v6] with a port),
// not a SIP URI.
func checkHostPort(addr string) error {
	if len(addr) > maxAddressLen {
		return errors.New("is too long")
	}
	if strings.HasPrefix(addr, "sip:") || strings.HasPrefix(addr, "sips:") || strings.ContainsAny(addr, "@; \t/") {
		return errors.New("must be host or host:port, not a SIP URI")
	}
	host, port := addr, ""
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host, port = h, p
	} else if strings.Count(addr, ":") > 1 {
		// a bare IPv6 address
		if _, err := netip.ParseAddr(addr); err != nil {
			return errors.New("must be host or host:port (IPv6 with a port as [addr]:port)")
		}
		return nil
	} else if strings.Contains(addr, ":") {
		return errors.New("must be host or host:port with a port from 1 to 65535")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return errors.New("port must be from 1 to 65535")
		}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%q is not a valid host name or IP address", host)
	}
	return nil
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// GetTrunk returns one of the tenant's trunks.
func (s *Service) GetTrunk(ctx context.Context, tenantID, id string) (Trunk, error) {
	t, err := scanTrunk(s.pool.QueryRow(ctx, `SELECT `+trunkCols+` FROM sip_trunks WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Trunk{}, ErrTrunkNotFound
	}
	if err != nil {
		return Trunk{}, fmt.Errorf("telephony: get trunk %s: %w", id, err)
	}
	return t.public(), nil
}

// ListTrunks returns a page of the tenant's trunks, newest first, and the total.
func (s *Service) ListTrunks(ctx context.Context, tenantID string, limit, offset int) ([]Trunk, int, error) {
	limit, offset = clampPage(limit, offset)
	rows, err := s.pool.Query(ctx, `SELECT `+trunkCols+`, count(*) OVER () FROM sip_trunks WHERE tenant_id = $1
		ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`, tenantID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("telephony: list trunks: %w", err)
	}
	defer rows.Close()
	var out []Trunk
	total := 0
	for rows.Next() {
		var t trunkRow
		if err := rows.Scan(&t.id, &t.tenantID, &t.name, &t.outAddr, &t.outTransport, &t.outUser, &t.outPass,
			&t.inAddrs, &t.inUser, &t.inPass, &t.lkIn, &t.lkOut, &t.lkRule, &t.created, &t.updated, &total); err != nil {
			return nil, 0, fmt.Errorf("telephony: list trunks: %w", err)
		}
		out = append(out, t.public())
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("telephony: list trunks: %w", err)
	}
	if len(out) == 0 && offset > 0 {
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM sip_trunks WHERE tenant_id = $1`, tenantID).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("telephony: list trunks: count: %w", err)
		}
	}
	return out, total, nil
}

func clampPage(limit, offset int) (int, int) {
	if limit <= 0 {
		limit = 20
	}
	return min(limit, 100), max(offset, 0)
}

// UpdateTrunk applies in (nil fields stay) and pushes the result to LiveKit.
func (s *Service) UpdateTrunk(ctx context.Context, tenantID, id string, in TrunkInput) (Trunk, error) {
	var out Trunk
	err := s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		trunks, err := lockTrunks(ctx, tx, tenantID, id)
		if err != nil {
			return err
		}
		t := trunks[id]
		if t == nil {
			return ErrTrunkNotFound
		}
		prevAddr := t.outAddr
		if err := s.applyTrunkInput(t, in); err != nil {
			return err
		}
		if t.outAddr != prevAddr {
			if err := s.checkAddress(ctx, "outbound_address", t.outAddr); err != nil {
				return err
			}
		}
		t.updated = bumped(s.now(), t.updated)
		_, err = tx.Exec(ctx, `UPDATE sip_trunks SET name = $3, outbound_address = $4, outbound_transport = $5,
			outbound_username = $6, outbound_password = $7, inbound_addresses = $8, inbound_username = $9,
			inbound_password = $10, updated_at = $11 WHERE tenant_id = $1 AND id = $2`,
			tenantID, id, t.name, t.outAddr, t.outTransport, t.outUser, t.outPass, t.inAddrs, t.inUser, t.inPass, t.updated)
		if err != nil {
			return fmt.Errorf("telephony: update trunk %s: %w", id, err)
		}
		if err := s.pushTrunk(ctx, tx, c, t); err != nil {
			return err
		}
		out = t.public()
		return nil
	})
	return out, err
}

// bumped returns now, or just after prev when the clock has not moved past it, so
// updated_at always increases.
func bumped(now, prev time.Time) time.Time {
	if !now.After(prev) {
		return prev.Add(time.Microsecond)
	}
	return now
}

// DeleteTrunk deletes a trunk no number uses, and its LiveKit mirrors. It can be
// retried after any failure: LiveKit objects already gone count as deleted.
func (s *Service) DeleteTrunk(ctx context.Context, tenantID, id string) error {
	return s.inTx(ctx, func(ctx context.Context, tx pgx.Tx, c *change) error {
		trunks, err := lockTrunks(ctx, tx, tenantID, id)
		if err != nil {
			return err
		}
		t := trunks[id]
		if t == nil {
			return ErrTrunkNotFound
		}
		var used bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM phone_numbers WHERE tenant_id = $1 AND trunk_id = $2)`,
			tenantID, id).Scan(&used); err != nil {
			return fmt.Errorf("telephony: delete trunk %s: %w", id, err)
		}
		if used {
			return ErrTrunkInUse
		}
		if _, err := tx.Exec(ctx, `DELETE FROM sip_trunks WHERE tenant_id = $1 AND id = $2`, tenantID, id); err != nil {
			return fmt.Errorf("telephony: delete trunk %s: %w", id, err)
		}
		// With no numbers the inbound trunk lists only its placeholder and routes
		// nothing, so deleting it and its rule after the commit (the rule for deletes)
		// is safe. The rule goes first: a rule naming a trunk that no longer exists
		// would be the longer-lived leftover if the clean-up stopped half-way.
		if lk := t.lkRule; lk != "" {
			c.afterCommit(func(ctx context.Context) error { return s.deleteRule(ctx, lk) })
		}
		for _, lk := range []string{t.lkIn, t.lkOut} {
			if lk != "" {
				c.afterCommit(func(ctx context.Context) error { return s.deleteTrunk(ctx, lk) })
			}
		}
		return nil
	})
}
