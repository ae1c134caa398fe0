// Command parley is Parley's single binary: the API server, the background and voice
// workers, a self-contained dev sandbox, and schema migrations.
//
//	parley serve              API server (production: needs PARLEY_DATABASE_URL)
//	parley worker             background jobs
//	parley dev                managed PostgreSQL + LiveKit, API and workers in one process
//	parley migrate up|down|status
//	parley env                every environment variable with its default
//	parley version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/db"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `Parley: a self-hostable AI voice-agent platform.

Usage:
  parley serve                   run the API server (PARLEY_DATABASE_URL required)
  parley worker                  run background job workers
  parley dev [--addr HOST:PORT] [--data-dir DIR]
                                 run everything locally with a managed PostgreSQL
                                 and LiveKit; no accounts or keys needed
  parley migrate up|down|status  manage the database schema
                                 (down reverts one migration; --steps N, --all)
  parley env                     list every environment variable and its default
  parley version                 print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(ctx, role{API: true})
	case "worker":
		err = runServe(ctx, role{Workers: true})
	case "dev":
		err = runDev(ctx, args)
	case "migrate":
		err = runMigrate(ctx, args)
	case "env":
		err = runEnv()
	case "version", "--version", "-v":
		fmt.Println("parley", version)
	case "help", "--help", "-h":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "parley: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}

// runServe runs the production path: an external database, settings from the environment.
func runServe(ctx context.Context, r role) error {
	cfg, err := loadConfig(config.FromOS(), false)
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	a, err := newApp(ctx, cfg, r, log)
	if err != nil {
		return err
	}
	return a.Run(ctx, func(addr string) {
		if addr != "" {
			log.Info("parley API listening", "addr", addr, "version", version)
		} else {
			log.Info("parley worker running", "version", version)
		}
	})
}

func runMigrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	steps := fs.Int("steps", 1, "migrations to revert (down)")
	all := fs.Bool("all", false, "revert every migration, River's too (down)")
	if len(args) == 0 {
		return errors.New("migrate: want up, down or status")
	}
	sub := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(config.FromOS(), false)
	if err != nil {
		return err
	}
	pool, err := db.Open(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	switch sub {
	case "up":
		if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS vector`); err != nil {
			return fmt.Errorf("pgvector: %w (install pgvector on the server, or use the pgvector/pgvector image)", err)
		}
		applied, err := db.MigrateUp(ctx, pool)
		if err != nil {
			return err
		}
		fmt.Printf("applied %d migrations %v\n", len(applied), applied)
	case "down":
		n := *steps
		if *all {
			n = 0
		}
		reverted, err := db.MigrateDown(ctx, pool, n)
		if err != nil {
			return err
		}
		fmt.Printf("reverted %d migrations %v\n", len(reverted), reverted)
	case "status":
		st, err := db.Status(ctx, pool)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
		for _, s := range st {
			at := "pending"
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
			}
			fmt.Fprintf(tw, "%04d\t%s\t%s\n", s.Version, s.Name, at)
		}
		tw.Flush()
	default:
		return fmt.Errorf("migrate: unknown subcommand %q (want up, down or status)", sub)
	}
	return nil
}

// runEnv prints every environment variable Parley reads, with its default.
func runEnv() error {
	env := config.New(func(string) (string, bool) { return "", false })
	loadConfig(env, false)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	for _, v := range env.Vars() {
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, def, v.Help)
	}
	return tw.Flush()
}
