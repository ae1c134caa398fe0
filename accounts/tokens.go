package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/internal/ids"
)

// TokenPair is what login and refresh return.
type TokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"` // always "bearer"
	ExpiresIn    int    `json:"expires_in"` // seconds until AccessToken expires
}

// accessClaims are the claims of an access token. Role is informational (clients may
// show it); authorization uses the member's current role, read with the session.
type accessClaims struct {
	TenantID  string `json:"tid"`
	SessionID string `json:"sid"`
	Role      string `json:"role"`
	jwt.RegisteredClaims
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newRefreshToken returns a refresh token (256 random bits) and its SHA-256, which is
// all the database keeps. A fast hash is enough: the token is random, not a password.
func newRefreshToken() (string, []byte) {
	tok := "rt_" + randomToken(32)
	return tok, hashToken(tok)
}

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

func (s *Service) issueAccessToken(userID, tenantID, sessionID, role string, now time.Time) (string, error) {
	claims := accessClaims{
		TenantID:  tenantID,
		SessionID: sessionID,
		Role:      role,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   userID,
			Issuer:    s.cfg.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.AccessTTL)),
			ID:        ids.New("jti"),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.cfg.JWTSecret)
}

func (s *Service) tokenPair(userID, tenantID, sessionID, role, refresh string, now time.Time) (TokenPair, error) {
	access, err := s.issueAccessToken(userID, tenantID, sessionID, role, now)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, TokenType: "bearer",
		ExpiresIn: int(s.cfg.AccessTTL / time.Second)}, nil
}

// parseAccessToken verifies an access token. Only HS256 is accepted, so "alg":"none" and
// tokens signed with an asymmetric algorithm (the RS/HS confusion attack, where the
// public key is used as an HMAC secret) fail before the key is even consulted. The
// issuer and an expiry are required.
func (s *Service) parseAccessToken(tok string) (*accessClaims, error) {
	var c accessClaims
	_, err := jwt.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, errors.New("unexpected signing method")
		}
		return s.cfg.JWTSecret, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5*time.Second), // clock skew between processes
	)
	if err != nil {
		return nil, err
	}
	if c.Subject == "" || c.TenantID == "" || c.SessionID == "" {
		return nil, errors.New("missing claims")
	}
	return &c, nil
}
