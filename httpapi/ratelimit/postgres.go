package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore keeps the counters in the rate_limit_windows table (UNLOGGED: counters
// are worthless after a crash, and skipping the WAL makes each update cheap). It is the
// default store: every deployment has PostgreSQL.
type PostgresStore struct {
	pool *pgxpool.Pool
}

// NewPostgresStore returns a store on pool's rate_limit_windows table.
func NewPostgresStore(pool *pgxpool.Pool) *PostgresStore {
	return &PostgresStore{pool: pool}
}

// takeSQL grants min($3 want, $4 limit − count) tokens of window ($1, $2) in one
// statement, returning the count before and after.
//
// A plain INSERT … ON CONFLICT DO UPDATE … RETURNING count cannot do it on PostgreSQL 15:
// RETURNING sees only the new count (RETURNING old.* arrived in 18), and from the new
// count alone the grant is ambiguous once the window fills (count = limit after granting
// all, some or none of want). So the statement reads the count itself, under the row
// lock: `cur` locks the row with FOR UPDATE, which under READ COMMITTED waits for a
// concurrent Take and then sees its result; `upd` grants from that locked count. When
// the row does not exist yet, `ins` creates it with the first grant. If another session
// inserts it between our snapshot and our insert, ON CONFLICT DO NOTHING makes the
// statement return no row and Take runs it again (the row now exists, so that one
// updates). A window that is already full returns its count without writing a new row
// version.
const takeSQL = `
WITH cur AS (
    SELECT count FROM rate_limit_windows
    WHERE bucket = $1 AND window_start = $2
    FOR UPDATE
), upd AS (
    UPDATE rate_limit_windows AS w
    SET count = w.count + LEAST($3::integer, $4::integer - w.count)
    FROM cur
    WHERE w.bucket = $1 AND w.window_start = $2 AND w.count < $4::integer
    RETURNING cur.count AS before, w.count AS after
), ins AS (
    INSERT INTO rate_limit_windows (bucket, window_start, count)
    SELECT $1, $2, LEAST($3::integer, $4::integer)
    WHERE NOT EXISTS (SELECT FROM cur)
    ON CONFLICT (bucket, window_start) DO NOTHING
    RETURNING 0 AS before, count AS after
)
SELECT before, after FROM upd
UNION ALL SELECT before, after FROM ins
UNION ALL SELECT count, count FROM cur WHERE count >= $4::integer`

// Take implements Store. windowEnd is unused: rows outlive their window until Cleanup.
func (s *PostgresStore) Take(ctx context.Context, bucket string, windowStart, windowEnd time.Time, want, limit int) (granted, used int, err error) {
	if want < 1 || limit < 1 || want > math.MaxInt32 || limit > math.MaxInt32 {
		return 0, 0, fmt.Errorf("ratelimit: postgres take: want %d and limit %d must be in [1, 2^31)", want, limit)
	}
	// Three attempts are plenty: a retry happens only when another session created the
	// window's row concurrently, and after that the row exists.
	for range 3 {
		var before, after int
		err := s.pool.QueryRow(ctx, takeSQL, bucket, windowStart, want, limit).Scan(&before, &after)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("ratelimit: postgres take: %w", err)
		}
		return after - before, after, nil
	}
	return 0, 0, errors.New("ratelimit: postgres take: window row kept appearing concurrently")
}

// Cleanup deletes the counters of windows that started before before and returns how many
// it deleted. A periodic job calls it; pass a time at least one window (plus clock skew
// between processes) in the past, e.g. now − 2×Window, so no live window is deleted
// (deleting one would reset its count and let its bucket over-serve).
func (s *PostgresStore) Cleanup(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM rate_limit_windows WHERE window_start < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("ratelimit: postgres cleanup: %w", err)
	}
	return tag.RowsAffected(), nil
}
