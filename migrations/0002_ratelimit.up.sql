-- Fixed-window request counters shared by every `parley serve` process. UNLOGGED: the
-- counters are worth nothing after a crash, and skipping the WAL makes each increment cheap.
CREATE UNLOGGED TABLE rate_limit_windows (
    bucket        text NOT NULL,         -- e.g. "user:usr_…" or "ip:203.0.113.9"
    window_start  timestamptz NOT NULL,
    count         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, window_start)
);
-- Cleanup deletes by age; without this it would scan the table.
CREATE INDEX rate_limit_windows_start ON rate_limit_windows (window_start);
