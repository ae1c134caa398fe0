// Package httpapi is Parley's HTTP surface: the one route table, authentication and
// rate-limit middleware, JSON envelopes and errors, OpenAPI, and the Call24x7
// compatibility routes. It maps requests onto the domain packages and owns no data.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/httpapi/ratelimit"
	"github.com/parleyhq/parley/knowledge"
	"github.com/parleyhq/parley/telephony"
)

// Config configures the HTTP layer.
type Config struct {
	// Addr is the listen address (PARLEY_ADDR, default ":8080").
	Addr string
	// PublicURL is how clients reach this server, used in links (PARLEY_PUBLIC_URL;
	// default derived from Addr).
	PublicURL string
	// MaxBodyBytes caps request bodies (PARLEY_MAX_BODY_BYTES, default 1 MiB). JSON
	// bodies for this API are small; a cap stops memory exhaustion by large uploads.
	MaxBodyBytes int64
	// CORSOrigins lists origins allowed to call the API from a browser
	// (PARLEY_CORS_ORIGINS, comma-separated; "*" allows any; empty disables CORS).
	CORSOrigins []string
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed when finding the client
	// IP for per-IP rate limits (PARLEY_TRUSTED_PROXIES). Empty: use the socket address.
	TrustedProxies []netip.Prefix
	// RateLimitUser is the per-user limit on authenticated routes, per RateLimitWindow
	// (PARLEY_RATE_LIMIT_USER, default 100; 0 disables).
	RateLimitUser int
	// RateLimitIP is the per-IP limit on public routes (PARLEY_RATE_LIMIT_IP, default 30;
	// 0 disables).
	RateLimitIP int
	// MaxUploadBytes is the knowledge-base file limit (PARLEY_KB_MAX_UPLOAD_BYTES, default
	// 20 MiB); the upload route's body limit is derived from it.
	MaxUploadBytes int64
	// ReadHeaderTimeout bounds slow-loris clients (default 10s).
	ReadHeaderTimeout time.Duration
	// ShutdownTimeout bounds graceful shutdown of in-flight requests (default 30s).
	ShutdownTimeout time.Duration
}

// Defaults fills zero fields with their defaults.
func (c *Config) Defaults() {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = 20 << 20
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.PublicURL == "" {
		host := c.Addr
		if strings.HasPrefix(host, ":") {
			host = "localhost" + host
		}
		c.PublicURL = "http://" + host
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
}

func (c Config) validate() error {
	if c.MaxBodyBytes < 1024 {
		return errors.New("httpapi: MaxBodyBytes must be at least 1024")
	}
	if c.RateLimitUser < 0 || c.RateLimitIP < 0 {
		return errors.New("httpapi: rate limits must not be negative")
	}
	if !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		return fmt.Errorf("httpapi: PublicURL %q must start with http:// or https://", c.PublicURL)
	}
	return nil
}

// ReadyCheck is one dependency /readyz reports on.
type ReadyCheck struct {
	Name string
	// Optional checks report their state but do not make /readyz fail.
	Optional bool
	Check    func(ctx context.Context) error
}

// Deps are the domain services the API serves.
type Deps struct {
	Logger    *slog.Logger
	Registry  *prometheus.Registry // metrics registry served at /metrics
	Accounts  *accounts.Service
	Agents    *agents.Service
	Knowledge *knowledge.Service
	Calls     *calls.Service // /v1/calls and /v1/livekit; nil: those routes answer 503
	Twilio    *calls.Twilio  // POST /inbound_call and /v1/twilio/...; nil: those routes answer 503
	// Telephony serves /v1/phone-numbers and /v1/sip-trunks; nil: those routes answer 503.
	Telephony *telephony.Service
	Limiter   *ratelimit.Limiter
	Ready     []ReadyCheck
	Version   string

	// Recordings serves GET /v1/calls/{id}/recording; nil: that route answers 503.
	Recordings *calls.Recordings
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler
	table   []route
	metrics *httpMetrics
	openapi openAPIDoc
	promh   http.Handler
}

// New builds the server and its route table.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, mux: http.NewServeMux()}
	s.metrics = newHTTPMetrics(deps.Registry)
	s.promh = promhttp.HandlerFor(deps.Registry, promhttp.HandlerOpts{})
	s.table = s.routes()
	for _, rt := range s.table {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.mux.HandleFunc("/", s.unmatched)
	s.handler = s.withRequestID(s.withRecover(s.withCORS(s.mux)))
	return s, nil
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Routes returns the route table (for documentation and tests).
func (s *Server) Routes() []RouteInfo {
	out := make([]RouteInfo, len(s.table))
	for i, rt := range s.table {
		out[i] = RouteInfo{Method: rt.Method, Path: rt.Path, Public: rt.Auth != authUser, Scope: rt.Scope}
	}
	return out
}

// RouteInfo describes one route.
type RouteInfo struct {
	Method, Path, Scope string
	Public              bool
}

// ListenAndServe serves until ctx is cancelled, then drains in-flight requests.
func (s *Server) ListenAndServe(ctx context.Context, ready func(addr string)) error {
	srv := &http.Server{
		Addr:              s.cfg.Addr,
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("httpapi: listen %s: %w", s.cfg.Addr, err)
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("httpapi: shutdown: %w", err)
	}
	return nil
}
