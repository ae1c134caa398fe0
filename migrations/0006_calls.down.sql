DROP INDEX IF EXISTS calls_tenant;
CREATE INDEX calls_tenant ON calls (tenant_id, created_at DESC);
DROP INDEX IF EXISTS calls_live;
ALTER TABLE calls
    DROP COLUMN IF EXISTS metadata,
    DROP COLUMN IF EXISTS room_name,
    DROP COLUMN IF EXISTS agent_name;
