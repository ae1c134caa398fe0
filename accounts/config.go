package accounts

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"
)

// Config configures a Service. The zero value of every field except JWTSecret means its
// documented default.
type Config struct {
	// JWTSecret is the HMAC-SHA256 key that signs access tokens. It must be at least 32
	// bytes: RFC 7518 §3.2 requires an HS256 key at least as long as the hash output, and a
	// shorter one would be the weakest link against offline brute force of a captured token.
	JWTSecret []byte
	// Issuer is the JWT "iss" claim; tokens with another issuer are refused. Default "parley".
	Issuer string
	// AccessTTL is the lifetime of an access token. Default 15 minutes: short enough that
	// a leaked token is worth little, long enough that clients refresh rarely. Revocation
	// does not wait for it: every request also checks the session (cached, see cache.go).
	AccessTTL time.Duration
	// RefreshTTL is the absolute lifetime of a login session and so of its refresh tokens.
	// Default 30 days; rotation does not extend it, so a stolen session cannot live forever.
	RefreshTTL time.Duration
	// CacheTTL bounds how long a cached API key or session is trusted without re-reading
	// PostgreSQL. Notifications evict entries within milliseconds; the TTL only matters if
	// a notification is lost without the listener noticing. Default 60 seconds.
	CacheTTL time.Duration
	// CacheMaxEntries caps each cache (keys, sessions). A full cache is cleared, which
	// costs one database read per live credential; misses (unknown keys) only fill half
	// of it, so random invalid keys cannot cause that. Default 100000.
	CacheMaxEntries int
	// UsageFlushInterval is how often API key usage counters are written. Default 2
	// seconds: one statement per interval, whatever the request rate.
	UsageFlushInterval time.Duration
	// Password is the argon2id cost for new hashes. Zero means DefaultPasswordParams.
	// Existing hashes keep verifying with the parameters stored in them, and are upgraded
	// at the next successful login when these change.
	Password PasswordParams
	// MaxConcurrentHashes bounds password hashes in flight. Each holds Password.Memory
	// KiB, so this is what stops a login flood from exhausting memory; requests beyond it
	// wait. Default 2×GOMAXPROCS (on 2 cores: 4 × 46 MiB ≈ 184 MiB at most).
	MaxConcurrentHashes int
	// Logger receives errors from background work. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Issuer == "" {
		c.Issuer = "parley"
	}
	if c.AccessTTL == 0 {
		c.AccessTTL = 15 * time.Minute
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = 30 * 24 * time.Hour
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 60 * time.Second
	}
	if c.CacheMaxEntries == 0 {
		c.CacheMaxEntries = 100_000
	}
	if c.UsageFlushInterval == 0 {
		c.UsageFlushInterval = 2 * time.Second
	}
	if c.Password == (PasswordParams{}) {
		c.Password = DefaultPasswordParams()
	}
	if c.MaxConcurrentHashes == 0 {
		c.MaxConcurrentHashes = 2 * runtime.GOMAXPROCS(0)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	var problems []error
	if len(c.JWTSecret) < 32 {
		problems = append(problems, fmt.Errorf("JWTSecret must be at least 32 bytes, got %d", len(c.JWTSecret)))
	}
	if c.AccessTTL < 0 || c.RefreshTTL < 0 || c.CacheTTL < 0 || c.UsageFlushInterval < 0 {
		problems = append(problems, errors.New("durations must not be negative"))
	}
	if c.AccessTTL >= c.RefreshTTL {
		problems = append(problems, errors.New("AccessTTL must be shorter than RefreshTTL"))
	}
	if c.CacheMaxEntries < 0 || c.MaxConcurrentHashes < 0 {
		problems = append(problems, errors.New("CacheMaxEntries and MaxConcurrentHashes must not be negative"))
	}
	if err := c.Password.validate(); err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("accounts: invalid config: %w", errors.Join(problems...))
	}
	return nil
}
