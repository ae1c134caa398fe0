-- Agents, and the first columns of the tables agents refer to (knowledge bases, calls),
-- which later migrations extend.

CREATE TABLE knowledge_bases (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX knowledge_bases_tenant ON knowledge_bases (tenant_id, created_at DESC);

CREATE TABLE agents (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         text NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    -- the rest of the definition (prompt, providers, functions, …) as validated JSON;
    -- provider api keys inside it are AES-GCM encrypted
    spec         jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- the agent's public JSON (keys shown as "********"), rendered at every write so
    -- that reads serve it without decoding; view_version says which release's format
    -- it is in, and older ones are re-rendered from spec when read
    view         text NOT NULL DEFAULT '',
    view_version integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_tenant ON agents (tenant_id, created_at DESC, id);

CREATE TABLE calls (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id             text REFERENCES agents(id) ON DELETE SET NULL,
    direction            text NOT NULL DEFAULT 'web' CHECK (direction IN ('inbound', 'outbound', 'web')),
    call_status          text NOT NULL DEFAULT 'registered' CHECK (call_status IN
                           ('registered', 'ringing', 'in_progress', 'completed', 'failed', 'no_answer', 'busy', 'voicemail')),
    from_number          text NOT NULL DEFAULT '',
    to_number            text NOT NULL DEFAULT '',
    start_timestamp      timestamptz,
    end_timestamp        timestamptz,
    duration_ms          bigint NOT NULL DEFAULT 0,
    disconnection_reason text NOT NULL DEFAULT '',
    transcript           text NOT NULL DEFAULT '',
    transcript_object    jsonb NOT NULL DEFAULT '[]'::jsonb,
    latency              jsonb NOT NULL DEFAULT '{}'::jsonb,
    extracted            jsonb NOT NULL DEFAULT '{}'::jsonb,
    cost_usd             numeric(12, 6) NOT NULL DEFAULT 0,
    recording_url        text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_tenant ON calls (tenant_id, created_at DESC);
CREATE INDEX calls_agent ON calls (tenant_id, agent_id, created_at DESC);
