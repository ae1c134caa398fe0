package accounts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
)

// RegisterInput is a sign-up.
type RegisterInput struct {
	Email       string
	Password    string
	FullName    string
	CompanyName string
}

// Register creates a tenant, its first user and the user's owner membership, in one
// transaction. A duplicate email (case-insensitive) is ErrEmailTaken.
func (s *Service) Register(ctx context.Context, in RegisterInput) (User, error) {
	f := map[string]string{}
	in.Email = checkEmail(f, in.Email)
	checkPassword(f, in.Password)
	checkText(f, "full_name", in.FullName, maxNameLen, false)
	checkText(f, "company_name", in.CompanyName, maxNameLen, false)
	if len(f) > 0 {
		return User{}, errs.Invalid(f)
	}
	hash, err := s.hashPassword(ctx, in.Password)
	if err != nil {
		return User{}, fmt.Errorf("accounts: register: %w", err)
	}
	var u User
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		u, err = createAccount(ctx, tx, in, hash)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("accounts: register: %w", err)
	}
	return u, nil
}

// createAccount inserts a tenant named after the company (or the person, or the email),
// the user, and the owner membership.
func createAccount(ctx context.Context, tx pgx.Tx, in RegisterInput, hash string) (User, error) {
	tenantName := in.CompanyName
	if strings.TrimSpace(tenantName) == "" {
		tenantName = in.FullName
	}
	if strings.TrimSpace(tenantName) == "" {
		tenantName = in.Email
	}
	tenantID, userID := ids.New("ten"), ids.New("usr")
	if _, err := tx.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $2)`, tenantID, tenantName); err != nil {
		return User{}, err
	}
	u := User{ID: userID, Email: in.Email, FullName: in.FullName, CompanyName: in.CompanyName, TenantID: tenantID, Role: RoleOwner}
	err := tx.QueryRow(ctx, `
		INSERT INTO users (id, email, password_hash, full_name, company_name, tenant_id)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at, updated_at`,
		userID, in.Email, hash, in.FullName, in.CompanyName, tenantID).Scan(&u.CreatedAt, &u.UpdatedAt)
	if isUniqueViolation(err, "users_email") {
		return User{}, ErrEmailTaken
	}
	if err != nil {
		return User{}, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO members (tenant_id, user_id, role) VALUES ($1, $2, 'owner')`, tenantID, userID); err != nil {
		return User{}, err
	}
	return u, nil
}

// Login checks a password and opens a session. Unknown emails cost the same argon2 work
// as wrong passwords, and both are ErrInvalidCredentials. The session lands in the user's
// home tenant, or in the oldest membership if they were removed from it.
func (s *Service) Login(ctx context.Context, email, password string) (TokenPair, User, error) {
	email = strings.TrimSpace(email)
	var userID, hash string
	err := s.pool.QueryRow(ctx, `SELECT id, password_hash FROM users WHERE lower(email) = lower($1)`, email).Scan(&userID, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, _, err := s.verifyPassword(ctx, password, s.dummyHash); err != nil {
			return TokenPair{}, User{}, fmt.Errorf("accounts: login: %w", err)
		}
		return TokenPair{}, User{}, fmt.Errorf("accounts: login: %w", ErrInvalidCredentials)
	}
	if err != nil {
		return TokenPair{}, User{}, fmt.Errorf("accounts: login: %w", err)
	}
	ok, stale, err := s.verifyPassword(ctx, password, hash)
	if err != nil {
		return TokenPair{}, User{}, fmt.Errorf("accounts: login %s: %w", userID, err)
	}
	if !ok {
		return TokenPair{}, User{}, fmt.Errorf("accounts: login %s: %w", userID, ErrInvalidCredentials)
	}
	if stale {
		s.rehash(ctx, userID, hash, password)
	}

	now := time.Now()
	var (
		pair TokenPair
		u    User
	)
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var tenantID string
		err := tx.QueryRow(ctx, `
			SELECT m.tenant_id FROM members m JOIN users u ON u.id = m.user_id
			WHERE m.user_id = $1
			ORDER BY (m.tenant_id = u.tenant_id) DESC, m.created_at, m.tenant_id LIMIT 1`, userID).Scan(&tenantID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrInvalidCredentials // a user who belongs to no tenant cannot do anything
		}
		if err != nil {
			return err
		}
		if u, err = getUser(ctx, tx, tenantID, userID); err != nil {
			return err
		}
		sessionID := ids.New("ses")
		if _, err := tx.Exec(ctx, `INSERT INTO auth_sessions (id, tenant_id, user_id, expires_at) VALUES ($1, $2, $3, $4)`,
			sessionID, tenantID, userID, now.Add(s.cfg.RefreshTTL)); err != nil {
			return err
		}
		refresh, refreshHash := newRefreshToken()
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, session_id, tenant_id) VALUES ($1, $2, $3)`,
			refreshHash, sessionID, tenantID); err != nil {
			return err
		}
		pair, err = s.tokenPair(userID, tenantID, sessionID, u.Role, refresh, now)
		return err
	})
	if err != nil {
		return TokenPair{}, User{}, fmt.Errorf("accounts: login %s: %w", userID, err)
	}
	return pair, u, nil
}

// rehash upgrades a hash made with old parameters. It is best effort: the login has
// already succeeded, and the next one will try again.
func (s *Service) rehash(ctx context.Context, userID, oldHash, password string) {
	newHash, err := s.hashPassword(ctx, password)
	if err == nil {
		_, err = s.pool.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3`, userID, newHash, oldHash)
	}
	if err != nil {
		s.log.Warn("accounts: password rehash failed", "user_id", userID, "err", err)
	}
}

// Refresh rotates a refresh token: it marks the presented token used and issues a new
// pair in the same session. Presenting a token that was already used means two parties
// hold it, one of them a thief; the whole session is revoked (reason
// refresh_token_reuse), so the newest token of that session stops working too, and the
// answer is ErrRefreshTokenReused.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (TokenPair, error) {
	if refreshToken == "" || len(refreshToken) > 512 {
		return TokenPair{}, fmt.Errorf("accounts: refresh: %w", ErrInvalidRefreshToken)
	}
	hash := hashToken(refreshToken)
	now := time.Now()
	var (
		pair      TokenPair
		sessionID string
		reused    bool
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var (
			tenantID, userID string
			usedAt, revoked  *time.Time
			expiresAt        time.Time
		)
		// The row locks serialise concurrent refreshes of one token: the second sees
		// used_at set and is treated as reuse.
		err := tx.QueryRow(ctx, `
			SELECT rt.session_id, s.tenant_id, s.user_id, rt.used_at, s.revoked_at, s.expires_at
			FROM refresh_tokens rt JOIN auth_sessions s ON s.id = rt.session_id
			WHERE rt.token_hash = $1
			FOR UPDATE`, hash).Scan(&sessionID, &tenantID, &userID, &usedAt, &revoked, &expiresAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrInvalidRefreshToken
		}
		if err != nil {
			return err
		}
		if revoked != nil || !now.Before(expiresAt) {
			return ErrInvalidRefreshToken
		}
		if usedAt != nil {
			if _, err := tx.Exec(ctx, `
				UPDATE auth_sessions SET revoked_at = now(), revoke_reason = 'refresh_token_reuse'
				WHERE tenant_id = $1 AND id = $2`, tenantID, sessionID); err != nil {
				return err
			}
			reused = true
			return notify(ctx, tx, "session:"+sessionID) // commit the revocation
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET used_at = now() WHERE tenant_id = $1 AND token_hash = $2`,
			tenantID, hash); err != nil {
			return err
		}
		var role string
		err = tx.QueryRow(ctx, `SELECT role FROM members WHERE tenant_id = $1 AND user_id = $2`, tenantID, userID).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrSessionRevoked // no longer a member of the session's tenant
		}
		if err != nil {
			return err
		}
		next, nextHash := newRefreshToken()
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, session_id, tenant_id) VALUES ($1, $2, $3)`,
			nextHash, sessionID, tenantID); err != nil {
			return err
		}
		pair, err = s.tokenPair(userID, tenantID, sessionID, role, next, now)
		return err
	})
	if err != nil {
		return TokenPair{}, fmt.Errorf("accounts: refresh: %w", err)
	}
	if reused {
		s.sessions.evict(sessionID)
		return TokenPair{}, fmt.Errorf("accounts: refresh session %s: %w", sessionID, ErrRefreshTokenReused)
	}
	return pair, nil
}

// Logout revokes the session of p's access token, and the session of refreshToken when
// given (it must belong to the same user). Access tokens of a revoked session are refused
// from then on. Logging out twice is not an error.
func (s *Service) Logout(ctx context.Context, p Principal, refreshToken string) error {
	var revoked []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		collect := func(rows pgx.Rows, err error) error {
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			revoked = append(revoked, ids...)
			return err
		}
		if p.SessionID != "" {
			if err := collect(tx.Query(ctx, `
				UPDATE auth_sessions SET revoked_at = now(), revoke_reason = 'logout'
				WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING id`, p.TenantID, p.SessionID)); err != nil {
				return err
			}
		}
		if refreshToken != "" {
			if err := collect(tx.Query(ctx, `
				UPDATE auth_sessions SET revoked_at = now(), revoke_reason = 'logout'
				WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL
				  AND id = (SELECT session_id FROM refresh_tokens WHERE tenant_id = $1 AND token_hash = $3)
				RETURNING id`, p.TenantID, p.UserID, hashToken(refreshToken))); err != nil {
				return err
			}
		}
		for _, id := range revoked {
			if err := notify(ctx, tx, "session:"+id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("accounts: logout: %w", err)
	}
	for _, id := range revoked {
		s.sessions.evict(id)
	}
	return nil
}

// sessionEntry is a cached session with what a principal needs from it.
type sessionEntry struct {
	found                   bool
	tenantID, userID, email string
	role                    string // "" when the user is no longer a member
	revoked                 bool
	expiresAt               time.Time
}

// keyEntry is a cached API key lookup.
type keyEntry struct {
	found                       bool
	id, tenantID, userID, email string
	role                        string // the creator's current role; "" when no longer a member
	scopes                      []string
	revoked                     bool
	expiresAt                   *time.Time
}

// Authenticate turns a bearer token (with or without the "Bearer " prefix) into a
// Principal: an API key when it starts with "sk_", else a JWT access token. Every
// failure is a 401-kind error.
func (s *Service) Authenticate(ctx context.Context, bearer string) (Principal, error) {
	tok := strings.TrimSpace(bearer)
	if len(tok) >= 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = strings.TrimSpace(tok[7:])
	}
	switch {
	case tok == "":
		return Principal{}, ErrMissingToken
	case len(tok) > 4096:
		return Principal{}, ErrInvalidToken
	case strings.HasPrefix(tok, apiKeyPrefix):
		return s.authenticateKey(ctx, tok)
	default:
		return s.authenticateJWT(ctx, tok)
	}
}

func (s *Service) authenticateJWT(ctx context.Context, tok string) (Principal, error) {
	c, err := s.parseAccessToken(tok)
	if err != nil {
		return Principal{}, fmt.Errorf("accounts: authenticate: %v: %w", err, ErrInvalidToken)
	}
	e, err := s.session(ctx, c.TenantID, c.SessionID)
	if err != nil {
		return Principal{}, err
	}
	if !e.found || e.revoked || !time.Now().Before(e.expiresAt) || e.role == "" || e.userID != c.Subject {
		return Principal{}, fmt.Errorf("accounts: authenticate session %s: %w", c.SessionID, ErrSessionRevoked)
	}
	return Principal{TenantID: e.tenantID, UserID: e.userID, Email: e.email, Role: e.role, SessionID: c.SessionID}, nil
}

func (s *Service) authenticateKey(ctx context.Context, key string) (Principal, error) {
	h := sha256.Sum256([]byte(key))
	e, err := s.apiKey(ctx, h)
	if err != nil {
		return Principal{}, err
	}
	switch {
	case !e.found || e.role == "":
		return Principal{}, ErrInvalidAPIKey
	case e.revoked:
		return Principal{}, ErrAPIKeyRevoked
	case e.expiresAt != nil && !time.Now().Before(*e.expiresAt):
		return Principal{}, ErrAPIKeyExpired
	}
	return Principal{TenantID: e.tenantID, UserID: e.userID, Email: e.email, Role: e.role,
		APIKeyID: e.id, Scopes: slices.Clone(e.scopes)}, nil
}

// loadTimeout bounds a credential load. It is detached from the caller's context because
// concurrent callers share the load (singleflight), and one caller giving up must not
// fail the others.
const loadTimeout = 5 * time.Second

// session returns the session, from the cache when possible.
func (s *Service) session(ctx context.Context, tenantID, sessionID string) (sessionEntry, error) {
	if s.listening.Load() {
		if e, ok := s.sessions.get(sessionID, time.Now()); ok && e.tenantID == tenantID {
			return e, nil
		}
	}
	// The epoch is part of the flight's key so that a caller arriving after an eviction
	// never joins a load that started before it.
	epoch := s.sessions.begin()
	v, err, _ := s.loads.Do("s"+strconv.FormatUint(epoch, 10)+":"+sessionID, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		e := sessionEntry{tenantID: tenantID}
		var role *string
		err := s.pool.QueryRow(lctx, `
			SELECT s.user_id, u.email, m.role, s.revoked_at IS NOT NULL, s.expires_at
			FROM auth_sessions s
			JOIN users u ON u.id = s.user_id
			LEFT JOIN members m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
			WHERE s.tenant_id = $1 AND s.id = $2`, tenantID, sessionID).Scan(&e.userID, &e.email, &role, &e.revoked, &e.expiresAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("accounts: load session %s: %w", sessionID, err)
		default:
			e.found = true
			if role != nil {
				e.role = *role
			}
		}
		if s.listening.Load() {
			s.sessions.put(sessionID, e, !e.found, epoch, time.Now())
		}
		return e, nil
	})
	if err != nil {
		return sessionEntry{}, err
	}
	return v.(sessionEntry), nil
}

// apiKey returns the key with SHA-256 h, from the cache when possible.
func (s *Service) apiKey(ctx context.Context, h [32]byte) (keyEntry, error) {
	if s.listening.Load() {
		if e, ok := s.keys.get(h, time.Now()); ok {
			return e, nil
		}
	}
	epoch := s.keys.begin()
	v, err, _ := s.loads.Do("k"+strconv.FormatUint(epoch, 10)+":"+string(h[:]), func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		var (
			e    keyEntry
			role *string
		)
		err := s.pool.QueryRow(lctx, `
			SELECT k.id, k.tenant_id, k.user_id, u.email, m.role, k.scopes, k.revoked_at IS NOT NULL, k.expires_at
			FROM api_keys k
			JOIN users u ON u.id = k.user_id
			LEFT JOIN members m ON m.tenant_id = k.tenant_id AND m.user_id = k.user_id
			WHERE k.key_hash = $1`, h[:]).Scan(&e.id, &e.tenantID, &e.userID, &e.email, &role, &e.scopes, &e.revoked, &e.expiresAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("accounts: load api key %s…: %w", hex.EncodeToString(h[:4]), err)
		default:
			e.found = true
			if role != nil {
				e.role = *role
			}
		}
		if s.listening.Load() {
			s.keys.put(h, e, !e.found, epoch, time.Now())
		}
		return e, nil
	})
	if err != nil {
		return keyEntry{}, err
	}
	return v.(keyEntry), nil
}
