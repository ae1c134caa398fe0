package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/sipbridge"
)

// devSecrets are generated on first start and kept in the data directory, so that
// sessions and encrypted keys survive restarts of the sandbox.
type devSecrets struct {
	JWTSecret string `json:"jwt_secret"`
	SecretKey string `json:"secret_key"`
}

// runDev runs the local sandbox: a managed PostgreSQL (with pgvector) and, when setup
// has installed it, a managed livekit-server --dev, then the API and the workers in one
// process. Ctrl-C stops the API (draining requests), the workers (finishing jobs), then
// LiveKit and PostgreSQL (a clean checkpoint), in that order.
func runDev(ctx context.Context, args []string) error {
	start := time.Now()
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address (default $PARLEY_ADDR or 127.0.0.1:8080)")
	dataDir := fs.String("data-dir", "", "where the sandbox keeps its database and secrets (default $PARLEY_DATA_DIR or ./.parley)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	env := config.FromOS()
	dir := *dataDir
	if dir == "" {
		dir = runDevVars(env)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	secrets, err := loadDevSecrets(filepath.Join(dir, "secrets.json"))
	if err != nil {
		return err
	}
	// Defaults for the sandbox; explicit environment variables still win.
	setDefault("PARLEY_JWT_SECRET", secrets.JWTSecret)
	setDefault("PARLEY_SECRET_KEY", secrets.SecretKey)
	setDefault("PARLEY_ADDR", "127.0.0.1:8080")
	setDefault("PARLEY_RECORDINGS_DIR", filepath.Join(dir, "recordings"))
	if *addr != "" {
		os.Setenv("PARLEY_ADDR", *addr)
	}
	cfg, err := loadConfig(env, true)
	if err != nil {
		return err
	}
	log := newLogger(cfg)

	var cluster *pgcluster.Cluster
	if cfg.DB.URL == "" {
		cluster, err = startDevPostgres(ctx, dir)
		if err != nil {
			return err
		}
		defer cluster.Stop()
		cfg.DB.URL = cluster.URL("parley")
	}
	if err := prepareDatabase(ctx, cfg.DB); err != nil {
		return err
	}

	sipAddr := ""
	if cfg.LiveKit.URL == "" {
		if bin, err := lkserver.FindBinary(); err == nil {
			// With Redis and livekit-sip installed, the sandbox takes phone calls too: the
			// bridge and the server meet in a managed Redis.
			var redisAddr string
			sipBin, sipErr := sipbridge.FindBinary()
			if _, err := sipbridge.FindRedis(); err != nil {
				sipErr = err
			}
			if sipErr == nil {
				rd, err := sipbridge.StartRedis(ctx, filepath.Join(dir, "redis"))
				if err != nil {
					return fmt.Errorf("managed redis: %w", err)
				}
				defer rd.Stop()
				redisAddr = rd.Addr()
			} else {
				log.Warn("LiveKit SIP bridge or Redis not installed; phone calls are unavailable (run scripts/setup)", "err", sipErr)
			}
			lk, err := lkserver.Start(ctx, lkserver.Config{Binary: bin, WorkDir: filepath.Join(dir, "livekit"), RedisAddr: redisAddr})
			if err != nil {
				return fmt.Errorf("managed livekit-server: %w", err)
			}
			defer lk.Stop()
			cfg.LiveKit = liveKitConfig{URL: lk.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret}
			if redisAddr != "" {
				br, err := sipbridge.Start(ctx, sipbridge.Config{Binary: sipBin, WorkDir: filepath.Join(dir, "sip"),
					RedisAddr: redisAddr, LiveKitURL: lk.URL(), SIPPort: devSIPPort(env)})
				if err != nil {
					return fmt.Errorf("managed LiveKit SIP bridge: %w", err)
				}
				defer br.Stop()
				sipAddr = br.SIPAddr()
			}
		} else {
			log.Warn("livekit-server not installed; voice calls are unavailable (run scripts/setup)")
		}
	}

	a, err := newApp(ctx, cfg, role{API: true, Workers: true}, log)
	if err != nil {
		return err
	}
	email, password, created, err := a.accounts.EnsureBootstrapAdmin(ctx)
	if err != nil {
		a.Stop()
		return err
	}
	return a.Run(ctx, func(listen string) {
		url := cfg.HTTP.PublicURL
		if url == "" {
			url = "http://" + browsable(listen)
		}
		fmt.Printf("\n  Parley %s is ready in %.1fs\n\n", version, time.Since(start).Seconds())
		fmt.Printf("  API        %s/v1/ping\n", url)
		fmt.Printf("  Docs       %s/docs\n", url)
		if cfg.LiveKit.URL != "" {
			fmt.Printf("  LiveKit    %s (key %s)\n", cfg.LiveKit.URL, cfg.LiveKit.APIKey)
			fmt.Printf("  Test call  %s/call (talk to an agent in the browser)\n", url)
		}
		if sipAddr != "" {
			fmt.Printf("  SIP        sip:<number>@%s (UDP and TCP; bind a number to an agent, then call it: README \"Phone calls\")\n", sipAddr)
		}
		fmt.Printf("  Data       %s\n", dir)
		if created {
			fmt.Printf("\n  First start: an admin account was created.\n    email     %s\n    password  %s\n", email, password)
			fmt.Printf("  Log in:  curl -s %s/v1/auth/login -H 'Content-Type: application/json' -d '{\"email\":\"%s\",\"password\":\"%s\"}'\n", url, email, password)
			os.WriteFile(filepath.Join(dir, "admin-credentials.txt"), []byte("email: "+email+"\npassword: "+password+"\n"), 0o600)
		}
		fmt.Printf("\n  Ctrl-C stops everything.\n\n")
	})
}

// runDevVars reads the variables only `parley dev` uses and returns the data directory.
func runDevVars(env *config.Env) string {
	return env.String("PARLEY_DATA_DIR", ".parley", "`parley dev` data directory (database, secrets, logs)")
}

// devSIPPort is the managed SIP bridge's port: PARLEY_DEV_SIP_PORT when set, else 5060
// (SIP's own, what softphones assume) when it is free on loopback for UDP and TCP, else
// 0 (a free port, printed in the banner): a second sandbox, or a PBX on the same machine,
// must not stop `parley dev` from starting.
func devSIPPort(env *config.Env) int {
	port := env.Int("PARLEY_DEV_SIP_PORT", 5060, "`parley dev` SIP bridge port on 127.0.0.1 (UDP and TCP; default 5060, or a free one when 5060 is taken)")
	if os.Getenv("PARLEY_DEV_SIP_PORT") != "" {
		return port
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return 0
	}
	u.Close()
	t, err := net.Listen("tcp", addr)
	if err != nil {
		return 0
	}
	t.Close()
	return port
}

func setDefault(name, value string) {
	if os.Getenv(name) == "" {
		os.Setenv(name, value)
	}
}

// browsable turns a listen address into one a browser can open (0.0.0.0 → localhost).
func browsable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func loadDevSecrets(path string) (devSecrets, error) {
	var s devSecrets
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &s); err != nil {
			return s, fmt.Errorf("%s: %w", path, err)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	jwt := make([]byte, 48)
	key := make([]byte, 32)
	rand.Read(jwt)
	rand.Read(key)
	s = devSecrets{JWTSecret: base64.RawURLEncoding.EncodeToString(jwt), SecretKey: hex.EncodeToString(key)}
	b, _ := json.MarshalIndent(s, "", "  ")
	return s, os.WriteFile(path, b, 0o600)
}

// startDevPostgres runs the sandbox's cluster in DIR/postgres. PostgreSQL refuses to run
// as root, so as root it runs as the postgres user; when that user cannot reach DIR (a
// checkout under /root, say) the cluster lives in /var/lib/parley instead, keyed by DIR.
func startDevPostgres(ctx context.Context, dir string) (*pgcluster.Cluster, error) {
	pgDir := filepath.Join(dir, "postgres")
	c, err := pgcluster.New(pgcluster.Config{DataDir: pgDir})
	if err != nil && os.Geteuid() == 0 && strings.Contains(err.Error(), "cannot enter") {
		sum := sha256.Sum256([]byte(dir))
		pgDir = filepath.Join("/var/lib/parley", "pg-"+hex.EncodeToString(sum[:6]))
		if err := os.MkdirAll(filepath.Dir(pgDir), 0o755); err != nil {
			return nil, err
		}
		c, err = pgcluster.New(pgcluster.Config{DataDir: pgDir})
	}
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// prepareDatabase creates the database and pgvector when missing, then migrates.
func prepareDatabase(ctx context.Context, cfg db.Config) error {
	conn, err := pgx.Connect(ctx, strings.Replace(cfg.URL, "/parley?", "/postgres?", 1))
	if err == nil {
		var exists bool
		conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'parley')`).Scan(&exists)
		if !exists {
			if _, err := conn.Exec(ctx, `CREATE DATABASE parley`); err != nil {
				conn.Close(ctx)
				return fmt.Errorf("create database: %w", err)
			}
		}
		conn.Close(ctx)
	}
	pool, err := db.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS vector`); err != nil {
		return fmt.Errorf("pgvector: %w (run scripts/setup)", err)
	}
	_, err = db.MigrateUp(ctx, pool)
	return err
}
