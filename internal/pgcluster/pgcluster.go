// Package pgcluster runs a private PostgreSQL cluster: initdb into a data directory, start
// it on a free loopback port, stop it. `parley dev` uses it for its managed database and the
// test harness for its throwaway cluster.
//
// PostgreSQL refuses to run as root, so when Parley runs as root the cluster runs as the
// `postgres` system user (created by Debian's postgresql package), and its data directory
// is owned by that user.
package pgcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Config describes a managed cluster.
type Config struct {
	DataDir string // where the cluster lives; created when missing
	BinDir  string // PostgreSQL binaries; found automatically when empty
	Port    int    // 0 picks a free port at every start
	// Settings are extra postgresql.conf settings passed with -c, e.g. fsync=off for tests.
	Settings map[string]string
	// User is the superuser role created by initdb (default "parley").
	User string
}

// Cluster is a running (or stopped) managed PostgreSQL.
type Cluster struct {
	cfg      Config
	password string
	port     int
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
	cred     *syscall.Credential
}

// FindBinDir returns the directory holding initdb and postgres: $PARLEY_PG_BINDIR, the
// newest /usr/lib/postgresql/*/bin, or the directory of initdb on PATH.
func FindBinDir() (string, error) {
	if d := os.Getenv("PARLEY_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
		return filepath.Dir(p), nil
	}
	return "", errors.New("pgcluster: PostgreSQL binaries not found (run scripts/setup, or set PARLEY_PG_BINDIR)")
}

// New prepares a cluster; call Start to run it.
func New(cfg Config) (*Cluster, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("pgcluster: DataDir is required")
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = abs
	if cfg.BinDir == "" {
		if cfg.BinDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	if cfg.User == "" {
		cfg.User = "parley"
	}
	c := &Cluster{cfg: cfg}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New("pgcluster: running as root and there is no 'postgres' user to run PostgreSQL as (install Debian's postgresql package)")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := checkTraversable(filepath.Dir(abs)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// checkTraversable makes sure the postgres user can reach dir: every ancestor must be
// world-executable, since that user is neither owner nor in root's group.
func checkTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("pgcluster: PostgreSQL runs as the 'postgres' user, which cannot enter %s (mode %v); choose a data directory outside it (--data-dir)", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// Port is the port the cluster listens on (valid after Start).
func (c *Cluster) Port() int { return c.port }

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.cfg.DataDir }

// URL returns a connection URL for database db.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.cfg.User, c.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

func (c *Cluster) pgdata() string  { return filepath.Join(c.cfg.DataDir, "pgdata") }
func (c *Cluster) pwfile() string  { return filepath.Join(c.cfg.DataDir, "pg-password") }
func (c *Cluster) logfile() string { return filepath.Join(c.cfg.DataDir, "postgres.log") }
func (c *Cluster) sockdir() string { return filepath.Join(c.cfg.DataDir, "run") }
func (c *Cluster) chown(p string) error {
	if c.cred == nil {
		return nil
	}
	return os.Lchown(p, int(c.cred.Uid), int(c.cred.Gid))
}

// Initialized reports whether the data directory already holds a cluster.
func (c *Cluster) Initialized() bool {
	_, err := os.Stat(filepath.Join(c.pgdata(), "PG_VERSION"))
	return err == nil
}

// Init runs initdb when the data directory holds no cluster yet. The superuser gets a
// random password (kept in DataDir/pg-password, mode 0600) and password auth is required
// even on loopback, so other local users cannot walk in.
func (c *Cluster) Init(ctx context.Context) error {
	if err := os.MkdirAll(c.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := c.chown(c.cfg.DataDir); err != nil {
		return fmt.Errorf("pgcluster: chown data dir: %w", err)
	}
	if c.Initialized() {
		pw, err := os.ReadFile(c.pwfile())
		if err != nil {
			return fmt.Errorf("pgcluster: read password: %w", err)
		}
		c.password = strings.TrimSpace(string(pw))
		return nil
	}
	var b [16]byte
	rand.Read(b[:])
	c.password = hex.EncodeToString(b[:])
	if err := os.WriteFile(c.pwfile(), []byte(c.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := c.chown(c.pwfile()); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.cfg.BinDir, "initdb"),
		"-D", c.pgdata(), "-U", c.cfg.User, "--pwfile", c.pwfile(),
		"--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(c.pgdata())
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, out)
	}
	return nil
}

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start runs postgres and waits until it accepts connections. The server runs in its
// own process group, so a Ctrl-C at the terminal reaches Parley only, and Parley stops the
// database after it has drained; if Parley dies, the kernel sends postgres SIGTERM.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.Init(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(c.sockdir(), 0o755); err != nil {
		return err
	}
	if err := c.chown(c.sockdir()); err != nil {
		return err
	}
	c.port = c.cfg.Port
	if c.port == 0 {
		p, err := FreePort()
		if err != nil {
			return fmt.Errorf("pgcluster: free port: %w", err)
		}
		c.port = p
	}
	args := []string{"-D", c.pgdata(), "-p", strconv.Itoa(c.port), "-k", c.sockdir(),
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"}
	keys := make([]string, 0, len(c.cfg.Settings))
	for k := range c.cfg.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+c.cfg.Settings[k])
	}
	logf, err := os.OpenFile(c.logfile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: log: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.cfg.BinDir, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(c.done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.done:
			tail, _ := os.ReadFile(c.logfile())
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			return fmt.Errorf("pgcluster: postgres exited during start-up:\n%s", tail)
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(pctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Stop()
			return fmt.Errorf("pgcluster: postgres did not accept connections: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop asks postgres for a fast shutdown (SIGINT: roll back open transactions, checkpoint,
// exit) and waits for it. It is safe to call twice.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.cmd == nil || c.cmd.Process == nil {
			return
		}
		c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// Done is closed when the postgres process exits.
func (c *Cluster) Done() <-chan struct{} { return c.done }
