package telephony

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/twitchtv/twirp"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/telephony/carrier"
)

// Config configures the telephony service.
type Config struct {
	// LiveKitURL is the LiveKit server whose SIP service mirrors trunks and numbers
	// (ws(s):// or http(s)://; the API calls go over http(s)). It must be the server the
	// LiveKit SIP bridge uses (same Redis). APIKey and APISecret sign the requests.
	LiveKitURL, APIKey, APISecret string
	// AgentName is the agent name Parley's voice workers register with (default
	// "parley"): dispatch rules send inbound calls to it. It also names the LiveKit
	// objects this installation owns ("parley/<AgentName>/…"), so two installations
	// sharing one LiveKit never touch each other's trunks and rules.
	AgentName string
	// Carriers are the number providers POST /v1/phone-numbers/buy may use, by name
	// ("telnyx", "twilio"). Nil or empty: buying is not available (422).
	Carriers map[string]carrier.Carrier
	// AddressChecker, when set, vets every outbound address a trunk stores and every
	// address POST /v1/sip-trunks/{id}/test probes, so that neither LiveKit's INVITEs nor
	// the probe can be pointed at internal hosts: pass the safehttp guard agents use
	// (it honours PARLEY_ALLOW_PRIVATE_URLS, which an on-premises PBX needs). Nil checks
	// nothing (tests, `parley dev`).
	AddressChecker AddressChecker
	// Logger records compensations and failed clean-ups (default slog.Default()).
	Logger *slog.Logger
	// TestTimeout bounds POST /v1/sip-trunks/{id}/test (default 4 s: SIP's UDP
	// retransmissions at 0.5, 1 and 2 s all fit, and a carrier that takes longer than
	// that to answer OPTIONS would also time out LiveKit's INVITEs).
	TestTimeout time.Duration
	// TLSConfig verifies trunks tested over TLS (nil: the system's root CAs, as
	// LiveKit SIP itself uses).
	TLSConfig *tls.Config
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.AgentName == "" {
		c.AgentName = "parley"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TestTimeout == 0 {
		c.TestTimeout = 4 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if c.LiveKitURL == "" || c.APIKey == "" || c.APISecret == "" {
		return errors.New("telephony: LiveKitURL, APIKey and APISecret are required (LiveKit SIP mirrors every trunk and number)")
	}
	if !slices.ContainsFunc([]string{"ws://", "wss://", "http://", "https://"}, func(p string) bool {
		return strings.HasPrefix(c.LiveKitURL, p)
	}) {
		return fmt.Errorf("telephony: LiveKitURL %q must start with ws://, wss://, http:// or https://", c.LiveKitURL)
	}
	if strings.ContainsAny(c.AgentName, "/ ") {
		return fmt.Errorf("telephony: AgentName %q must not contain '/' or spaces", c.AgentName)
	}
	if c.TestTimeout < 100*time.Millisecond {
		return errors.New("telephony: TestTimeout must be at least 100ms")
	}
	for name, cr := range c.Carriers {
		if cr == nil {
			return fmt.Errorf("telephony: carrier %q is nil", name)
		}
	}
	return nil
}

// AddressChecker is the SSRF guard (*safehttp.Client implements it). It is given
// "http://host:port/" for a SIP address: only the host and port matter. An error
// wrapping safehttp.ErrBlocked or safehttp.ErrBadURL is shown to the user.
type AddressChecker interface {
	CheckURL(ctx context.Context, rawURL string) error
}

// checkAddress runs the AddressChecker on a SIP host[:port]; a refusal is a 422 on
// field.
func (s *Service) checkAddress(ctx context.Context, field, addr string) error {
	if s.cfg.AddressChecker == nil || addr == "" {
		return nil
	}
	err := s.cfg.AddressChecker.CheckURL(ctx, "http://"+addr+"/")
	if errors.Is(err, safehttp.ErrBlocked) || errors.Is(err, safehttp.ErrBadURL) {
		return errInvalidField(field, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "url "), "safehttp: "))
	}
	if err != nil {
		return fmt.Errorf("telephony: check %s: %w", field, err)
	}
	return nil
}

// Service stores trunks and numbers and keeps LiveKit SIP in step with them. It is
// safe for concurrent use.
type Service struct {
	pool *pgxpool.Pool
	cfg  Config
	box  *crypt.Box
	sip  *lksdk.SIPClient
	log  *slog.Logger
}

// New returns a Service. box seals SIP passwords at rest (the same key as agents'
// provider keys is fine).
func New(pool *pgxpool.Pool, cfg Config, box *crypt.Box) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("telephony: nil pool")
	}
	if box == nil {
		return nil, errors.New("telephony: nil crypt.Box (needed to seal SIP passwords)")
	}
	return &Service{pool: pool, cfg: cfg, box: box, log: cfg.Logger,
		sip: lksdk.NewSIPClient(cfg.LiveKitURL, cfg.APIKey, cfg.APISecret)}, nil
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// How the database and LiveKit stay in step.
//
// Every change runs in one database transaction that first locks the rows it changes
// (the phone number, then its trunks in ID order, so two changes never deadlock) and
// then changes LiveKit while holding those locks, so changes to one trunk's LiveKit
// objects are serialised. The LiveKit steps follow three rules:
//
//   - Creates happen before the commit. Each registers an undo (delete it) that runs if
//     a later step, LiveKit or database, fails, or the commit does.
//   - Replaces (updates) happen before the commit, each undone by replacing the object
//     with what LiveKit held before.
//   - Deletes happen after the commit: a deleted object cannot be brought back under its
//     ID, so undoing one would leave the row pointing nowhere. An object about to be
//     deleted is already inert or harmless: a deleted or moved number leaves its
//     inbound trunk's numbers first (a replace), a deleted trunk has no numbers, and a
//     call reaching an unbound number's old rule before it goes is refused by the
//     worker, whose InboundRoute reads the committed unbinding. A delete that fails is
//     logged and leaves only an object no row refers to.
//
// So a failure on either side leaves the database as it was and LiveKit as it was
// (give or take an inert object). What this cannot cover is a crash between a LiveKit
// step and the commit, or a commit whose outcome was lost; Reconcile (run it at
// start-up) settles both by recreating what rows refer to and deleting what they do
// not.
type change struct {
	svc   *Service
	undo  []func(context.Context) error
	after []func(context.Context) error
	what  []string
}

// onFail registers an undo step.
func (c *change) onFail(what string, f func(context.Context) error) {
	c.undo = append(c.undo, f)
	c.what = append(c.what, what)
}

// afterCommit registers a step that runs once the transaction committed.
func (c *change) afterCommit(f func(context.Context) error) { c.after = append(c.after, f) }

// cleanupCtx is a context for compensations: they must run even when the request's
// context has ended, but not forever.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
}

func (c *change) rollback(ctx context.Context) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	for i := len(c.undo) - 1; i >= 0; i-- {
		if err := c.undo[i](ctx); err != nil {
			c.svc.log.Error("telephony: compensation failed; Reconcile will repair LiveKit", "step", c.what[i], "err", err)
		}
	}
}

func (c *change) committed(ctx context.Context) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	for _, f := range c.after {
		if err := f(ctx); err != nil {
			c.svc.log.Warn("telephony: LiveKit clean-up after commit failed; Reconcile will remove the object", "err", err)
		}
	}
}

// mirrorLock is the advisory lock key that keeps Reconcile's orphan sweep out of the way
// of changes in flight (an arbitrary constant, unique in Parley's schema).
const mirrorLock int64 = 0x7061726c65790007 // "parley" + migration 0007

// inTx runs fn in a transaction with the rules above.
func (s *Service) inTx(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx, c *change) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("telephony: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// Shared with every other change, exclusive with Reconcile's orphan sweep: an object
	// a change creates in LiveKit is never seen by the sweep before its ID is committed.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, mirrorLock); err != nil {
		return fmt.Errorf("telephony: lock: %w", err)
	}
	c := &change{svc: s}
	if err := fn(ctx, tx, c); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		c.rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		c.rollback(ctx)
		return fmt.Errorf("telephony: commit: %w", err)
	}
	c.committed(ctx)
	return nil
}

// lkNotFound reports whether a LiveKit API error says the object does not exist.
func lkNotFound(err error) bool {
	var te twirp.Error
	return errors.As(err, &te) && te.Code() == twirp.NotFound
}

// errLiveKitConflict: LiveKit SIP refused a trunk or rule as clashing with one it holds.
// Parley's own numbers are unique, so the other party is an object made outside this
// installation (or a leftover that Reconcile removes).
var errLiveKitConflict = errs.Conflict("livekit_sip_conflict",
	"LiveKit SIP refused the change: another SIP trunk or dispatch rule on the LiveKit server claims the same number")

// errLiveKit wraps a LiveKit SIP failure. Invalid arguments LiveKit rejects (a number
// another trunk on the same LiveKit already claims, say) are the caller's to fix: 409.
func errLiveKit(op string, err error) error {
	var te twirp.Error
	if errors.As(err, &te) {
		switch te.Code() {
		case twirp.InvalidArgument, twirp.FailedPrecondition, twirp.AlreadyExists:
			// LiveKit's message names the other objects (their IDs may be another
			// tenant's), so it stays in the error chain, not in the detail.
			return fmt.Errorf("telephony: livekit %s: %s: %w", op, te.Msg(), errLiveKitConflict)
		case twirp.Unavailable, twirp.Unimplemented, twirp.Internal:
			if te.Code() == twirp.Internal && !strings.Contains(te.Msg(), "redis required") {
				break
			}
			return &errs.Error{Kind: errs.KindUnavailable, Code: "livekit_sip_unavailable",
				Detail: "LiveKit SIP is not available (is livekit-server running with Redis?)"}
		}
	}
	return fmt.Errorf("telephony: livekit %s: %w", op, err)
}

// errInvalidField is a 422 about one field.
func errInvalidField(field, msg string) error { return errs.Invalid(map[string]string{field: msg}) }
