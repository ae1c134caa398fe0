-- Tenants, users, memberships, login sessions with rotating refresh tokens, API keys and
-- their usage. Every row of tenant data carries tenant_id; every query filters by it.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    -- white-label settings: app_name, primary_color, logo_url, domain
    branding    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A custom domain resolves to exactly one tenant's branding (public lookup).
CREATE UNIQUE INDEX tenants_branding_domain ON tenants (lower(branding->>'domain'))
    WHERE coalesce(branding->>'domain', '') <> '';

CREATE TABLE users (
    id             text PRIMARY KEY,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    full_name      text NOT NULL DEFAULT '',
    company_name   text NOT NULL DEFAULT '',
    -- the tenant a login lands in; a user may belong to several through members
    tenant_id      text NOT NULL REFERENCES tenants(id),
    is_superadmin  boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE members (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

-- A login session. Its refresh tokens rotate; presenting one that was already used
-- revokes the whole session (token theft detection, as in RFC 6819 §5.2.2.3).
CREATE TABLE auth_sessions (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id        text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoke_reason  text
);
CREATE INDEX auth_sessions_user ON auth_sessions (tenant_id, user_id);

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,          -- SHA-256 of the token
    session_id  text NOT NULL REFERENCES auth_sessions(id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz                 -- set when rotated; reuse after that is theft
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id       text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          text NOT NULL,
    -- the first characters of the key, shown in lists so users can tell keys apart
    key_prefix    text NOT NULL,
    -- SHA-256 of the whole key. Keys carry 160+ random bits, so a fast hash is safe and
    -- authentication needs no slow password hash per request.
    key_hash      bytea NOT NULL UNIQUE,
    scopes        text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    expires_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at DESC);

CREATE TABLE api_key_usage (
    tenant_id   text NOT NULL,
    api_key_id  text NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    day         date NOT NULL,
    requests    bigint NOT NULL DEFAULT 0,
    errors      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, day)
);
