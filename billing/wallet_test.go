package billing_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/billing"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

func tenant(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	id := ids.New("ten")
	if _, err := pool.Exec(context.Background(), `INSERT INTO tenants (id, name) VALUES ($1, 'T')`, id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestWallet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	svc, err := billing.New(pool, billing.Config{Enforce: true})
	if err != nil {
		t.Fatal(err)
	}
	a, b := tenant(t, pool), tenant(t, pool)

	// A tenant that never had a credit has 0, and 0 is not enough.
	if w, err := svc.Balance(ctx, a); err != nil || w.BalanceUSD != 0 || w.Currency != "USD" {
		t.Fatalf("fresh balance %+v, %v", w, err)
	}
	if err := svc.RequireBalance(ctx, a); !errors.Is(err, billing.ErrInsufficientBalance) {
		t.Fatalf("empty wallet: %v", err)
	}

	e, err := svc.Credit(ctx, a, 10.1234567, "welcome credit")
	if err != nil {
		t.Fatal(err)
	}
	if e.AmountUSD != 10.123457 || e.BalanceAfterUSD != 10.123457 || e.Reason != "welcome credit" {
		t.Fatalf("entry %+v", e)
	}
	if err := svc.RequireBalance(ctx, a); err != nil {
		t.Fatalf("funded wallet refused: %v", err)
	}
	// Tenancy: b is untouched.
	if w, _ := svc.Balance(ctx, b); w.BalanceUSD != 0 {
		t.Fatalf("other tenant's balance %v", w.BalanceUSD)
	}
	// A debit back to exactly zero refuses again (the rule is balance > 0).
	if _, err := svc.Credit(ctx, a, -10.123457, "adjustment"); err != nil {
		t.Fatal(err)
	}
	if err := svc.RequireBalance(ctx, a); !errors.Is(err, billing.ErrInsufficientBalance) {
		t.Fatalf("zero balance: %v", err)
	}
	led, err := svc.Ledger(ctx, a, 10)
	if err != nil || len(led) != 2 || led[0].Reason != "adjustment" || led[0].BalanceAfterUSD != 0 || led[1].AmountUSD != 10.123457 {
		t.Fatalf("ledger %+v, %v", led, err)
	}

	// Enforcement off: even an empty wallet may place calls.
	off, _ := billing.New(pool, billing.Config{})
	if err := off.RequireBalance(ctx, b); err != nil {
		t.Fatalf("not enforced: %v", err)
	}
}

func TestCreditRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	svc, _ := billing.New(pool, billing.Config{})
	a := tenant(t, pool)
	for _, c := range []struct {
		amount float64
		reason string
	}{{0, "x"}, {math.NaN(), "x"}, {math.Inf(1), "x"}, {2e7, "x"}, {1, " "}} {
		if _, err := svc.Credit(ctx, a, c.amount, c.reason); errs.KindOf(err) != errs.KindInvalid {
			t.Errorf("Credit(%v, %q) = %v, want invalid", c.amount, c.reason, err)
		}
	}
	if _, err := svc.Credit(ctx, "ten_nope", 1, "x"); !errors.Is(err, billing.ErrTenantNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

// Concurrent credits serialise on the wallet row: the balance is the sum, and every
// ledger line's balance_after is distinct (none computed from a stale balance).
func TestConcurrentCredits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	svc, _ := billing.New(pool, billing.Config{})
	a := tenant(t, pool)
	const n = 20
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Credit(ctx, a, 0.5, "top-up")
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	if w, _ := svc.Balance(ctx, a); w.BalanceUSD != n*0.5 {
		t.Fatalf("balance %v, want %v", w.BalanceUSD, n*0.5)
	}
	led, _ := svc.Ledger(ctx, a, 100)
	seen := map[float64]bool{}
	for _, e := range led {
		seen[e.BalanceAfterUSD] = true
	}
	if len(led) != n || len(seen) != n {
		t.Fatalf("%d entries with %d distinct balances", len(led), len(seen))
	}
}
