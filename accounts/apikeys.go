package accounts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// API key format: "sk_" followed by 32 base62 characters, 32×log2(62) ≈ 190 random bits.
// Only its SHA-256 is stored (see the api_keys table), plus the first keyPrefixLen
// characters so users can tell keys apart in a list.
const (
	apiKeyPrefix  = "sk_"
	apiKeyRandLen = 32
	keyPrefixLen  = 10
	maxKeyNameLen = 100
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newAPIKeySecret returns a fresh secret. Bytes ≥ 248 are rejected so that every base62
// character is equally likely (248 = 4×62).
func newAPIKeySecret() string {
	out := make([]byte, 0, len(apiKeyPrefix)+apiKeyRandLen)
	out = append(out, apiKeyPrefix...)
	var buf [64]byte
	for len(out) < cap(out) {
		rand.Read(buf[:])
		for _, b := range buf {
			if b < 248 && len(out) < cap(out) {
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out)
}

// APIKey is an API key as listed; the secret itself is never stored.
type APIKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	KeyPrefix  string     `json:"key_prefix"`
	Scopes     []string   `json:"scopes"`
	UserID     string     `json:"user_id"` // who created it; it acts with their role
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	IsActive   bool       `json:"is_active"`
}

const apiKeyCols = `id, name, key_prefix, scopes, user_id, created_at, last_used_at, expires_at, revoked_at`

func scanAPIKey(row pgx.Row, extra ...any) (APIKey, error) {
	var k APIKey
	err := row.Scan(append([]any{&k.ID, &k.Name, &k.KeyPrefix, &k.Scopes, &k.UserID, &k.CreatedAt,
		&k.LastUsedAt, &k.ExpiresAt, &k.RevokedAt}, extra...)...)
	k.IsActive = k.RevokedAt == nil && (k.ExpiresAt == nil || time.Now().Before(*k.ExpiresAt))
	return k, err
}

// CreateKeyInput describes a new API key.
type CreateKeyInput struct {
	Name      string
	Scopes    []string // empty means DefaultScopes
	ExpiresAt *time.Time
}

// CreateAPIKey creates a key for p's tenant, acting as p's user. Only owners and admins
// may create keys (an API key also needs api_keys:write), and a key never gets a scope
// its creator lacks. The secret is returned once and cannot be recovered.
func (s *Service) CreateAPIKey(ctx context.Context, p Principal, in CreateKeyInput) (APIKey, string, error) {
	if err := p.requireAdmin(ScopeAPIKeysWrite); err != nil {
		return APIKey{}, "", fmt.Errorf("accounts: create api key: %w", err)
	}
	f := map[string]string{}
	checkText(f, "name", in.Name, maxKeyNameLen, true)
	if in.ExpiresAt != nil && !in.ExpiresAt.After(time.Now()) {
		f["expires_at"] = "must be in the future"
	}
	scopes, err := normalizeScopes(in.Scopes)
	if err != nil {
		if e, ok := errs.As(err); ok {
			for k, v := range e.Fields {
				f[k] = v
			}
		}
	}
	if len(f) > 0 {
		return APIKey{}, "", errs.Invalid(f)
	}
	for _, sc := range scopes {
		if !p.canGrant(sc) {
			return APIKey{}, "", errs.Forbidden("scope_not_grantable", "You cannot grant the scope "+sc+", which you do not have")
		}
	}
	secret := newAPIKeySecret()
	hash := hashToken(secret)
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `
		INSERT INTO api_keys (tenant_id, id, user_id, name, key_prefix, key_hash, scopes, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		RETURNING `+apiKeyCols,
		p.TenantID, ids.New("key"), p.UserID, in.Name, secret[:keyPrefixLen], hash, scopes, in.ExpiresAt))
	if err != nil {
		return APIKey{}, "", fmt.Errorf("accounts: create api key: %w", err)
	}
	return k, secret, nil
}

// ListAPIKeys lists a tenant's keys, newest first, with the total count.
func (s *Service) ListAPIKeys(ctx context.Context, tenantID string, limit, offset int) ([]APIKey, int, error) {
	limit, offset = normalizePage(limit, offset)
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE tenant_id = $1`, tenantID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("accounts: list api keys: %w", err)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+apiKeyCols+` FROM api_keys WHERE tenant_id = $1
		ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`, tenantID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("accounts: list api keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) { return scanAPIKey(r) })
	if err != nil {
		return nil, 0, fmt.Errorf("accounts: list api keys: %w", err)
	}
	return keys, total, nil
}

// GetAPIKey returns one key of the tenant.
func (s *Service) GetAPIKey(ctx context.Context, tenantID, id string) (APIKey, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if err != nil {
		return APIKey{}, wrapNoRows(err, ErrAPIKeyNotFound, "accounts: get api key %s", id)
	}
	return k, nil
}

// RevokeAPIKey revokes a key of p's tenant; it is refused at once in this process and,
// through the notification sent in the same transaction, within milliseconds in every
// other. Revoking a revoked key is not an error. Owners and admins only.
func (s *Service) RevokeAPIKey(ctx context.Context, p Principal, id string) (APIKey, error) {
	if err := p.requireAdmin(ScopeAPIKeysWrite); err != nil {
		return APIKey{}, fmt.Errorf("accounts: revoke api key %s: %w", id, err)
	}
	var (
		k    APIKey
		hash []byte
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		k, err = scanAPIKey(tx.QueryRow(ctx, `
			UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
			WHERE tenant_id = $1 AND id = $2
			RETURNING `+apiKeyCols+`, key_hash`, p.TenantID, id), &hash)
		if err != nil {
			return err
		}
		return notify(ctx, tx, "key:"+hex.EncodeToString(hash))
	})
	if err != nil {
		return APIKey{}, wrapNoRows(err, ErrAPIKeyNotFound, "accounts: revoke api key %s", id)
	}
	s.keys.evict([32]byte(hash))
	return k, nil
}

// DeleteAPIKey deletes a key of p's tenant, with its usage history. Owners and admins only.
func (s *Service) DeleteAPIKey(ctx context.Context, p Principal, id string) error {
	if err := p.requireAdmin(ScopeAPIKeysWrite); err != nil {
		return fmt.Errorf("accounts: delete api key %s: %w", id, err)
	}
	var hash []byte
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2 RETURNING key_hash`, p.TenantID, id).Scan(&hash)
		if err != nil {
			return err
		}
		return notify(ctx, tx, "key:"+hex.EncodeToString(hash))
	})
	if err != nil {
		return wrapNoRows(err, ErrAPIKeyNotFound, "accounts: delete api key %s", id)
	}
	s.keys.evict([32]byte(hash))
	return nil
}

// KeyUsage is the use of one API key over a period.
type KeyUsage struct {
	APIKeyID      string        `json:"api_key_id"`
	Days          int           `json:"days"`
	TotalRequests int64         `json:"total_requests"`
	TotalErrors   int64         `json:"total_errors"`
	LastUsedAt    *time.Time    `json:"last_used_at"`
	Daily         []KeyUsageDay `json:"daily"`
}

// KeyUsageDay is one UTC day of KeyUsage; days without requests are included.
type KeyUsageDay struct {
	Date     string `json:"date"` // YYYY-MM-DD
	Requests int64  `json:"requests"`
	Errors   int64  `json:"errors"`
}

// APIKeyUsage reports a key's requests per UTC day over the last days days (1..365),
// today included. Counts this process has not written yet are flushed first; other
// processes' counts are at most Config.UsageFlushInterval behind.
func (s *Service) APIKeyUsage(ctx context.Context, tenantID, id string, days int) (KeyUsage, error) {
	if err := checkDays(days); err != nil {
		return KeyUsage{}, err
	}
	if err := s.FlushUsage(ctx); err != nil {
		s.log.Warn("accounts: usage flush before report failed", "err", err)
	}
	u := KeyUsage{APIKeyID: id, Days: days, Daily: make([]KeyUsageDay, 0, days)}
	err := s.pool.QueryRow(ctx, `SELECT last_used_at FROM api_keys WHERE tenant_id = $1 AND id = $2`, tenantID, id).Scan(&u.LastUsedAt)
	if err != nil {
		return KeyUsage{}, wrapNoRows(err, ErrAPIKeyNotFound, "accounts: api key usage %s", id)
	}
	rows, err := s.pool.Query(ctx, `
		WITH d AS (
			SELECT g::date AS day FROM generate_series(
				(now() AT TIME ZONE 'UTC')::date - ($3::int - 1), (now() AT TIME ZONE 'UTC')::date, interval '1 day') g
		)
		SELECT to_char(d.day, 'YYYY-MM-DD'), coalesce(u.requests, 0), coalesce(u.errors, 0)
		FROM d LEFT JOIN api_key_usage u ON u.tenant_id = $1 AND u.api_key_id = $2 AND u.day = d.day
		ORDER BY d.day`, tenantID, id, days)
	if err != nil {
		return KeyUsage{}, fmt.Errorf("accounts: api key usage %s: %w", id, err)
	}
	var day KeyUsageDay
	_, err = pgx.ForEachRow(rows, []any{&day.Date, &day.Requests, &day.Errors}, func() error {
		u.Daily = append(u.Daily, day)
		u.TotalRequests += day.Requests
		u.TotalErrors += day.Errors
		return nil
	})
	if err != nil {
		return KeyUsage{}, fmt.Errorf("accounts: api key usage %s: %w", id, err)
	}
	return u, nil
}
