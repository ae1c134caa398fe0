// Package db owns Parley's connection pool and its schema migrations (Parley's own,
// embedded from migrations/, and River's).
package db

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxvec "github.com/pgvector/pgvector-go/pgx"
)

// Config configures the pool.
type Config struct {
	// URL is a PostgreSQL connection URL (PARLEY_DATABASE_URL or DATABASE_URL).
	URL string
	// MaxConns caps the pool (default 4 per CPU, at least 16: pgx pools are cheap, and the
	// API spends most of its time waiting on short queries).
	MaxConns int32
}

func (c Config) validate() error {
	if c.URL == "" {
		return errors.New("db: no database URL (set PARLEY_DATABASE_URL or DATABASE_URL, or use `parley dev`)")
	}
	if c.MaxConns < 0 {
		return errors.New("db: MaxConns must not be negative")
	}
	return nil
}

// Open connects a pool and checks the connection.
func Open(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("db: parse url: %w", err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	} else if pc.MaxConns < 16 {
		pc.MaxConns = 16
	}
	pc.MaxConnIdleTime = 5 * time.Minute
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "parley"
	// pgvector's types are extension types with per-database OIDs: register them on every
	// connection so vectors travel in binary (a 384-dim vector is 1.5 KiB, not ~4 KiB of
	// text). A database without the extension yet (before `migrate up`) is fine.
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if err := pgxvec.RegisterTypes(ctx, conn); err != nil && !strings.Contains(err.Error(), "vector type not found") {
			return fmt.Errorf("db: register pgvector types: %w", err)
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("db: connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("db: ping: %w", err)
	}
	return pool, nil
}
