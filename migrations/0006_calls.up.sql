-- Call records (package calls): the LiveKit room a call runs in, what its creator
-- attached to it, and the agent's name as it was when the call was made (agent_id is
-- set to NULL when the agent is deleted; the history should still say who answered).

ALTER TABLE calls
    ADD COLUMN agent_name text NOT NULL DEFAULT '',
    ADD COLUMN room_name  text NOT NULL DEFAULT '',
    ADD COLUMN metadata   jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Live calls (not yet ended) are a handful next to the finished ones. This partial
-- index stays that small, so finding stale registered calls (calls.FailStale) or
-- counting a tenant's concurrent calls never scans the history.
CREATE INDEX calls_live ON calls (tenant_id, created_at)
    WHERE call_status IN ('registered', 'ringing', 'in_progress');

-- List pages are ordered by (created_at DESC, id DESC); with the id in the index the
-- order is stable when two calls share a timestamp and needs no sort step.
DROP INDEX calls_tenant;
CREATE INDEX calls_tenant ON calls (tenant_id, created_at DESC, id DESC);
