package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/httpapi/ratelimit"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/knowledge"
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

	workers := river.NewWorkers()
	river.AddWorker(workers, &maintenanceWorker{accounts: a.accounts, pool: a.pool, log: log})
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
			Logger: log, Registry: a.registry, Accounts: a.accounts, Agents: a.agents, Knowledge: a.know,
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
	// Knowledge bases built by an older local embedder are re-embedded in the background.
	if _, err := a.know.UpgradeLocalEmbedders(ctx); err != nil {
		a.log.Warn("knowledge: embedder upgrade", "err", err)
	}
	if a.api == nil {
		if onReady != nil {
			onReady("")
		}
		<-ctx.Done()
		return nil
	}
	err := a.api.ListenAndServe(ctx, onReady)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Stop releases everything in reverse order; safe to call twice.
func (a *app) Stop() {
	a.stopOnce.Do(func() {
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
