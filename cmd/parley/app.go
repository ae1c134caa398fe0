package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/billing"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/httpapi/ratelimit"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/knowledge"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/telephony/carrier"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/livekit/dispatch"
)

// role selects what a process runs.
type role struct {
	API     bool // serve HTTP
	Workers bool // work background jobs
}

// app is one wired Parley process. Components are built in dependency order and
// stopped in reverse, so shutdown drains: HTTP stops taking requests and finishes the
// in-flight ones, jobs finish or are released, usage counters are flushed, then the pool
// closes.
type app struct {
	cfg      appConfig
	role     role
	log      *slog.Logger
	pool     *pgxpool.Pool
	redis    *redis.Client
	registry *prometheus.Registry
	accounts *accounts.Service
	agents   *agents.Service
	know     *knowledge.Service
	calls    *calls.Service
	tel      *telephony.Service // nil without LiveKit
	twilio   *calls.Twilio      // nil without Twilio credentials or in a worker-only process
	voice    *dispatch.Worker   // nil without LiveKit or in an API-only process
	jobs     *jobs.Client
	api      *httpapi.Server
	stopOnce sync.Once
}

func newApp(ctx context.Context, cfg appConfig, r role, log *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, role: r, log: log, registry: prometheus.NewRegistry()}
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			a.Stop()
		}
	}()
	var err error
	if a.pool, err = db.Open(ctx, cfg.DB); err != nil {
		return nil, err
	}
	if n, err := db.Pending(ctx, a.pool); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, fmt.Errorf("the database has %d pending migrations: run `parley migrate up` first", n)
	}
	key, err := crypt.ParseKey(cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("PARLEY_SECRET_KEY: %w", err)
	}
	box, err := crypt.New(key)
	if err != nil {
		return nil, err
	}
	guard, err := safehttp.New(cfg.SafeHTTP)
	if err != nil {
		return nil, err
	}
	acfg := cfg.Accounts
	acfg.Logger = log
	if a.accounts, err = accounts.New(a.pool, acfg); err != nil {
		return nil, err
	}
	// Agent functions may take up to 30 s (their own timeout_ms bounds each call), so
	// they get a guarded client without the shorter default outbound timeout.
	fcfg := cfg.SafeHTTP
	fcfg.Timeout = 31 * time.Second
	fnGuard, err := safehttp.New(fcfg)
	if err != nil {
		return nil, err
	}
	if a.agents, err = agents.New(a.pool, agents.Config{}, box, guard, fnGuard); err != nil {
		return nil, err
	}

	// Embedding requests and page fetches can take longer than webhook calls (a CPU-only
	// Ollama embedding a batch): the knowledge service gets a guarded client with a
	// longer overall timeout; embedders bound each request themselves.
	kgcfg := cfg.SafeHTTP
	kgcfg.Timeout = 2 * time.Minute
	kguard, err := safehttp.New(kgcfg)
	if err != nil {
		return nil, err
	}
	kcfg := cfg.Knowledge
	kcfg.Logger = log
	if a.know, err = knowledge.New(a.pool, kcfg, box, kguard); err != nil {
		return nil, err
	}

	var store ratelimit.Store = ratelimit.NewPostgresStore(a.pool)
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("PARLEY_REDIS_URL: %w", err)
		}
		// Context deadlines must bound Redis calls (see ratelimit.NewRedisStore).
		opts.ContextTimeoutEnabled = true
		a.redis = redis.NewClient(opts)
		store = ratelimit.NewRedisStore(a.redis, "")
	}

	var rooms calls.Rooms
	if cfg.LiveKit.URL != "" {
		lk, err := calls.NewLiveKit(calls.LiveKitConfig{URL: cfg.LiveKit.URL, PublicURL: cfg.LiveKit.PublicURL, APIKey: cfg.LiveKit.APIKey,
			APISecret: cfg.LiveKit.APISecret, AgentName: cfg.Voice.AgentName})
		if err != nil {
			return nil, err
		}
		rooms = lk
	}
	if a.calls, err = calls.New(a.pool, calls.Config{Rooms: rooms, Logger: log}); err != nil {
		return nil, err
	}
	workers := river.NewWorkers()

	// Provider base URLs and tool URLs are user-configured: the guarded client. The
	// adapters bound each stage themselves (first token, first byte, stalls); the
	// overall bound only has to exceed the longest honest exchange, a model's answer
	// streamed to the end, which 2 minutes does. The engine serves voice sessions
	// (workers: LiveKit rooms; the API: Twilio media streams) and post-call analysis.
	vcfg := cfg.SafeHTTP
	vcfg.Timeout = 2 * time.Minute
	vguard, err := safehttp.New(vcfg)
	if err != nil {
		return nil, err
	}
	metrics, err := voice.NewMetrics(a.registry)
	if err != nil {
		return nil, err
	}
	engine := &calls.Engine{Agents: a.agents, Knowledge: a.know, Defaults: cfg.Voice.Providers,
		HTTPClient: vguard.HTTPClient(), Metrics: metrics, Logger: log}
	// Every process registers every job kind (River refuses to insert an unknown one),
	// and finishing a call enqueues its analysis.
	analyzer, err := calls.NewAnalyzer(a.calls, engine, calls.AnalysisConfig{Logger: log})
	if err != nil {
		return nil, err
	}
	analyzer.AddWorkers(workers)

	publicURL := cfg.HTTP.PublicURL
	{
		hc := cfg.HTTP
		hc.Defaults()
		publicURL = hc.PublicURL
	}
	recs, err := newRecordings(ctx, cfg.Recordings, a.calls, publicURL, log)
	if err != nil {
		return nil, err
	}
	bill, err := billing.New(a.pool, billing.Config{Enforce: cfg.BillingEnforce})
	if err != nil {
		return nil, err
	}
	voiceURL := ""
	if cfg.Phone.TwilioAccountSID != "" {
		voiceURL = publicURL + "/inbound_call"
	}
	carriers, err := carrier.New(carrier.Config{
		Telnyx: carrier.TelnyxConfig{APIKey: cfg.Phone.TelnyxAPIKey, ConnectionID: cfg.Phone.TelnyxConnectionID},
		Twilio: carrier.TwilioConfig{AccountSID: cfg.Phone.TwilioAccountSID, AuthToken: cfg.Phone.TwilioAuthToken, VoiceURL: voiceURL},
	})
	if err != nil {
		return nil, err
	}
	var sip *calls.SIP
	if cfg.LiveKit.URL != "" {
		if a.tel, err = telephony.New(a.pool, telephony.Config{
			LiveKitURL: cfg.LiveKit.URL, APIKey: cfg.LiveKit.APIKey, APISecret: cfg.LiveKit.APISecret,
			AgentName: cfg.Voice.AgentName, Carriers: carriers, AddressChecker: guard, Logger: log,
		}, box); err != nil {
			return nil, err
		}
		if a.twilio, err = newTwilio(cfg, a.calls, engine, a.tel, recs, publicURL, log); err != nil {
			return nil, err
		}
		var phone calls.PhoneDialer
		if a.twilio != nil {
			phone = a.twilio
		}
		if sip, err = calls.NewSIP(a.calls, calls.SIPConfig{
			LiveKit: calls.LiveKitConfig{URL: cfg.LiveKit.URL, APIKey: cfg.LiveKit.APIKey, APISecret: cfg.LiveKit.APISecret,
				AgentName: cfg.Voice.AgentName},
			RingingTimeout: cfg.Phone.RingingTimeout, Lines: a.tel, Phone: phone, Logger: log,
		}); err != nil {
			return nil, err
		}
		sip.AddWorkers(workers)
		a.calls.SetOutbound(calls.OutboundDeps{Lines: a.tel, Wallet: bill, Agents: a.agents})
	}
	if r.Workers && cfg.LiveKit.URL != "" {
		livekit.SetSDKLogger(slog.New(warnOnly{log.Handler()}).With("component", "livekit"))
		runner := &calls.Runner{Calls: a.calls, Engine: engine, Lines: a.tel, SIP: sip, Recordings: recs, Logger: log}
		a.voice, err = dispatch.New(dispatch.Config{
			URL: cfg.LiveKit.URL, APIKey: cfg.LiveKit.APIKey, APISecret: cfg.LiveKit.APISecret,
			AgentName: cfg.Voice.AgentName, Version: version,
			MaxJobs: cfg.Voice.MaxSessions, MaxLoad: cfg.Voice.MaxLoad, Logger: log,
		}, runner.HandleJob)
		if err != nil {
			return nil, err
		}
		w := a.voice
		a.registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_voice_worker_calls",
				Help: "Calls this worker is holding."}, func() float64 { return float64(w.Running()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_voice_worker_draining",
				Help: "1 while the worker drains (SIGTERM): it takes no new calls."}, func() float64 {
				if w.Draining() {
					return 1
				}
				return 0
			}),
		)
	}

	river.AddWorker(workers, &maintenanceWorker{accounts: a.accounts, calls: a.calls, recordings: recs, pool: a.pool, log: log})
	a.know.AddWorkers(workers)
	periodic := []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(10*time.Minute),
			func() (river.JobArgs, *river.InsertOpts) { return maintenanceArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true}),
	}
	jcfg := cfg.Jobs
	jcfg.Work = r.Workers
	if a.jobs, err = jobs.New(a.pool, jcfg, workers, periodic, log); err != nil {
		return nil, err
	}
	a.know.SetJobs(a.jobs.Client)
	a.calls.SetJobs(a.jobs.Client)

	if r.API {
		limiter, err := ratelimit.New(ratelimit.Config{}, store)
		if err != nil {
			return nil, err
		}
		ready := []httpapi.ReadyCheck{
			{Name: "database", Check: func(ctx context.Context) error { return a.pool.Ping(ctx) }},
			{Name: "job_queue", Check: func(ctx context.Context) error { return jobs.Ping(ctx, a.pool) }},
		}
		if cfg.LiveKit.URL != "" {
			httpURL := strings.Replace(strings.Replace(cfg.LiveKit.URL, "wss://", "https://", 1), "ws://", "http://", 1)
			ready = append(ready, httpapi.ReadyCheck{Name: "livekit", Check: func(ctx context.Context) error { return lkserver.Ping(ctx, httpURL) }})
		}
		if a.redis != nil {
			ready = append(ready, httpapi.ReadyCheck{Name: "redis", Check: func(ctx context.Context) error { return a.redis.Ping(ctx).Err() }})
		}
		a.api, err = httpapi.New(cfg.HTTP, httpapi.Deps{
			Logger: log, Registry: a.registry, Accounts: a.accounts, Agents: a.agents, Knowledge: a.know, Calls: a.calls,
			Telephony: a.tel, Twilio: a.twilio, Recordings: recs,
			Limiter: limiter, Ready: ready, Version: version,
		})
		if err != nil {
			return nil, err
		}
	}
	ok = true
	return a, nil
}

// Run starts the components and blocks until ctx is cancelled, then stops them all.
func (a *app) Run(ctx context.Context, onReady func(addr string)) error {
	defer a.Stop()
	if err := a.accounts.Start(ctx); err != nil {
		return err
	}
	if err := a.jobs.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	if a.tel != nil && a.api != nil {
		// LiveKit SIP keeps trunks and dispatch rules in Redis, which may have been
		// emptied (always, with `parley dev`'s managed Redis) or may hold leftovers of a
		// crash: bring it in line with the database.
		if err := a.tel.Reconcile(ctx); err != nil {
			a.log.Warn("telephony: could not reconcile LiveKit SIP trunks and rules", "err", err)
		}
	}
	// Knowledge bases built by an older local embedder are re-embedded in the background.
	if _, err := a.know.UpgradeLocalEmbedders(ctx); err != nil {
		a.log.Warn("knowledge: embedder upgrade", "err", err)
	}
	if a.voice != nil {
		// Start's ctx bounds only the first registration; the worker then lives until
		// drained or stopped, so SIGTERM (which cancels ctx) cannot cut live calls.
		if err := a.voice.Start(ctx); err != nil {
			return fmt.Errorf("voice worker: %w", err)
		}
		a.log.Info("voice worker registered with LiveKit", "worker_id", a.voice.ID(), "agent_name", a.cfg.Voice.AgentName)
	}
	var err error
	if a.api == nil {
		stopMetrics, merr := a.serveWorkerMetrics()
		if merr != nil {
			return merr
		}
		defer stopMetrics()
		if onReady != nil {
			onReady("")
		}
		<-ctx.Done()
	} else {
		err = a.api.ListenAndServe(ctx, onReady)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		if a.twilio != nil {
			// Media streams are hijacked websockets, which the HTTP server's shutdown
			// does not wait for: end them (api_ended) and finish their records.
			a.twilio.Stop()
		}
	}
	a.drain()
	return err
}

// serveWorkerMetrics serves /metrics and /healthz for a process without the API, so
// Prometheus can scrape a worker's voice and job figures. It returns a stop function.
func (a *app) serveWorkerMetrics() (func(), error) {
	if a.cfg.WorkerMetricsAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", a.cfg.WorkerMetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("PARLEY_WORKER_METRICS_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	a.log.Info("worker metrics listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// drain lets live calls end on their own: the worker takes no new ones (LiveKit
// dispatches new rooms to other workers) and waits up to the drain timeout, then cuts
// what is left.
func (a *app) drain() {
	if a.voice == nil {
		return
	}
	n := a.voice.Running()
	a.log.Info("voice worker draining", "live_calls", n, "timeout", a.cfg.Voice.DrainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Voice.DrainTimeout)
	defer cancel()
	if err := a.voice.Drain(ctx); err != nil {
		a.log.Warn("voice worker: drain timed out; ending the remaining calls", "live_calls", a.voice.Running())
	}
	a.voice.Stop()
	a.log.Info("voice worker drained")
}

// Stop releases everything in reverse order; safe to call twice.
func (a *app) Stop() {
	a.stopOnce.Do(func() {
		if a.voice != nil {
			a.voice.Stop()
		}
		if a.jobs != nil {
			a.jobs.Stop()
		}
		if a.accounts != nil {
			a.accounts.Stop()
		}
		if a.redis != nil {
			a.redis.Close()
		}
		if a.pool != nil {
			a.pool.Close()
		}
	})
}

// warnOnly passes on warnings and errors only: the LiveKit SDK and pion log every
// signalling step and ICE state change at info level.
type warnOnly struct{ slog.Handler }

func (h warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h warnOnly) WithAttrs(as []slog.Attr) slog.Handler { return warnOnly{h.Handler.WithAttrs(as)} }
func (h warnOnly) WithGroup(n string) slog.Handler       { return warnOnly{h.Handler.WithGroup(n)} }
