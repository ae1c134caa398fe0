// Package billing owns tenants' wallets: a balance per tenant in USD, the ledger of
// credits and debits that explains it, and the balance check that gates paid actions
// (placing an outbound call). It is deliberately small for now: no pricing, top-ups or
// usage debits yet.
package billing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// Config configures billing. The zero value is usable: nothing is enforced.
type Config struct {
	// Enforce refuses paid actions (outbound calls) to tenants whose balance is zero or
	// less (PARLEY_BILLING_ENFORCE, default false). Off by default because a
	// self-hosted Parley pays its carriers directly and has no wallet to fill.
	Enforce bool
	// Now returns the current time (default time.Now); tests pin it.
	Now func() time.Time
}

// Wallet is a tenant's balance, as GET /v1/wallet shows it.
type Wallet struct {
	BalanceUSD float64 `json:"balance_usd"`
	Currency   string  `json:"currency"`
}

// Entry is one ledger line.
type Entry struct {
	ID              string    `json:"id"`
	AmountUSD       float64   `json:"amount_usd"`
	BalanceAfterUSD float64   `json:"balance_after_usd"`
	Reason          string    `json:"reason"`
	CreatedAt       time.Time `json:"created_at"`
}

// Errors.
var (
	// ErrInsufficientBalance: enforcement is on and the tenant's balance is zero or
	// less. Its kind is Conflict (a state the caller can change by topping up); the
	// HTTP routes that place calls answer it as 402 Payment Required.
	ErrInsufficientBalance = errs.Conflict("insufficient_balance", "Insufficient balance; top up your wallet to place calls")
	// ErrTenantNotFound: Credit for a tenant that does not exist.
	ErrTenantNotFound = errs.NotFound("tenant_not_found", "Tenant not found")
)

// Limits of one ledger entry.
const (
	// maxAmountUSD bounds one credit or debit: far above any real top-up, and well
	// inside numeric(14, 6).
	maxAmountUSD = 1e7
	maxReasonLen = 500
)

// Service reads and moves tenants' balances. It is safe for concurrent use.
type Service struct {
	pool *pgxpool.Pool
	cfg  Config
}

// New returns a Service.
func New(pool *pgxpool.Pool, cfg Config) (*Service, error) {
	if pool == nil {
		return nil, errors.New("billing: nil pool")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{pool: pool, cfg: cfg}, nil
}

// Enforced reports whether balance checks refuse anything.
func (s *Service) Enforced() bool { return s.cfg.Enforce }

// Balance returns the tenant's wallet; a tenant that never had a credit has 0.
func (s *Service) Balance(ctx context.Context, tenantID string) (Wallet, error) {
	w := Wallet{Currency: "USD"}
	err := s.pool.QueryRow(ctx, `SELECT balance_usd::float8 FROM wallets WHERE tenant_id = $1`, tenantID).Scan(&w.BalanceUSD)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return Wallet{}, fmt.Errorf("billing: balance of %s: %w", tenantID, err)
	}
	return w, nil
}

// Credit adds amountUSD (negative: a debit or adjustment) to the tenant's balance and
// records why in the ledger, in one statement; it returns the new entry. It is for
// tests and administrators until top-ups exist.
func (s *Service) Credit(ctx context.Context, tenantID string, amountUSD float64, reason string) (Entry, error) {
	f := errs.Fields{}
	switch {
	case math.IsNaN(amountUSD) || math.IsInf(amountUSD, 0):
		f.Add("amount_usd", "must be a number")
	case amountUSD == 0 || math.Abs(amountUSD) > maxAmountUSD:
		f.Add("amount_usd", "must be non-zero and at most %.0f in absolute value", float64(maxAmountUSD))
	}
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > maxReasonLen {
		f.Add("reason", "is required, at most %d bytes", maxReasonLen)
	}
	if err := f.Err(); err != nil {
		return Entry{}, err
	}
	// Micro-dollars, as the columns store them, so the entry returned is what a read
	// would show.
	amountUSD = math.Round(amountUSD*1e6) / 1e6
	e := Entry{ID: ids.New("txn"), AmountUSD: amountUSD, Reason: reason, CreatedAt: s.cfg.Now().UTC().Truncate(time.Microsecond)}
	// The upsert takes the wallet row's lock, so concurrent credits serialise and each
	// ledger line's balance_after is exact.
	err := s.pool.QueryRow(ctx, `
		WITH w AS (
			INSERT INTO wallets (tenant_id, balance_usd, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (tenant_id) DO UPDATE SET balance_usd = wallets.balance_usd + EXCLUDED.balance_usd,
				updated_at = EXCLUDED.updated_at
			RETURNING balance_usd
		)
		INSERT INTO wallet_ledger (id, tenant_id, amount_usd, balance_after_usd, reason, created_at)
		SELECT $4, $1, $2, w.balance_usd, $5, $3 FROM w
		RETURNING balance_after_usd::float8`,
		tenantID, amountUSD, e.CreatedAt, e.ID, reason).Scan(&e.BalanceAfterUSD)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" { // foreign_key_violation
		return Entry{}, ErrTenantNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("billing: credit %s: %w", tenantID, err)
	}
	return e, nil
}

// Ledger returns the tenant's latest entries, newest first (at most limit, 1 to 100).
func (s *Service) Ledger(ctx context.Context, tenantID string, limit int) ([]Entry, error) {
	limit = min(max(limit, 1), 100)
	rows, err := s.pool.Query(ctx, `SELECT id, amount_usd::float8, balance_after_usd::float8, reason, created_at
		FROM wallet_ledger WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`, tenantID, limit)
	if err != nil {
		return nil, fmt.Errorf("billing: ledger of %s: %w", tenantID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		err := r.Scan(&e.ID, &e.AmountUSD, &e.BalanceAfterUSD, &e.Reason, &e.CreatedAt)
		e.CreatedAt = e.CreatedAt.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("billing: ledger of %s: %w", tenantID, err)
	}
	if out == nil {
		out = []Entry{}
	}
	return out, nil
}

// RequireBalance is the check before a paid action: nil when enforcement is off or the
// tenant's balance is above zero, ErrInsufficientBalance otherwise. It does not reserve
// anything: a tenant with a cent left may start several calls at once, and usage
// billing (a later issue) takes the balance below zero rather than cut calls short.
func (s *Service) RequireBalance(ctx context.Context, tenantID string) error {
	if !s.cfg.Enforce {
		return nil
	}
	w, err := s.Balance(ctx, tenantID)
	if err != nil {
		return err
	}
	if w.BalanceUSD <= 0 {
		return ErrInsufficientBalance
	}
	return nil
}
