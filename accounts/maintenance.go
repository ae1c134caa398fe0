package accounts

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// BootstrapAdminEmail is the email of the administrator created on a fresh installation.
const BootstrapAdminEmail = "admin@parley.local"

// EnsureBootstrapAdmin creates BootstrapAdminEmail, with a random password, as the owner
// of a new tenant (and superadmin of the installation) when there are no users at all, and returns the password (`parley dev`
// prints it once). Otherwise it does nothing and created is false. Concurrent calls from
// several processes create at most one admin.
func (s *Service) EnsureBootstrapAdmin(ctx context.Context) (email, password string, created bool, err error) {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users)`).Scan(&exists); err != nil {
		return "", "", false, fmt.Errorf("accounts: bootstrap admin: %w", err)
	}
	if exists {
		return "", "", false, nil
	}
	password = newAPIKeySecret()[len(apiKeyPrefix) : len(apiKeyPrefix)+24] // 24 base62 characters, ~143 bits
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return "", "", false, fmt.Errorf("accounts: bootstrap admin: %w", err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// The lock makes the check-then-insert atomic across processes.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('parley_bootstrap_admin'))`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users)`).Scan(&exists); err != nil || exists {
			return err
		}
		u, err := createAccount(ctx, tx, RegisterInput{Email: BootstrapAdminEmail, FullName: "Administrator", CompanyName: "Parley"}, hash)
		if err != nil {
			return err
		}
		// The installation's first user also administers the installation itself.
		if _, err := tx.Exec(ctx, `UPDATE users SET is_superadmin = true WHERE id = $1`, u.ID); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return "", "", false, fmt.Errorf("accounts: bootstrap admin: %w", err)
	}
	if !created {
		return "", "", false, nil
	}
	return BootstrapAdminEmail, password, true, nil
}

// PurgeExpired deletes expired sessions and, by cascade, their refresh tokens, and
// returns how many sessions went. Revoked sessions stay until they expire, so a reused
// refresh token keeps being recognised as such. A periodic job calls it.
func (s *Service) PurgeExpired(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM auth_sessions WHERE expires_at < now()`)
	if err != nil {
		return 0, fmt.Errorf("accounts: purge expired sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}
