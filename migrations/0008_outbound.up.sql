-- Outbound calls (package calls) and the minimal wallet their balance check reads
-- (package billing).

-- Idempotency-Key of POST /v1/calls/outbound and POST/GET /outbound_call. A retry with
-- the same key (per tenant) gets the first request's call instead of a second one. The
-- row is written in the transaction that creates the call and its dial job, and it is
-- the first thing that transaction writes: a concurrent duplicate's INSERT waits on the
-- primary key until the first commits (then reads its answer) or rolls back (then
-- goes ahead). request_hash is a SHA-256 of the normalised request, so the same key
-- with a different body is refused instead of silently answered with another call;
-- response is the call as first returned, so a replay answers exactly as the original.
-- Keys live 24 hours (calls.Service.DeleteExpiredIdempotencyKeys drops them; an
-- expired key that has not been dropped yet is reused as if new).
CREATE TABLE call_idempotency_keys (
    tenant_id    text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    -- deferred: the key is claimed before the call row exists, in the same transaction
    call_id      text NOT NULL REFERENCES calls(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
-- For the expiry sweep, which deletes by age across tenants.
CREATE INDEX call_idempotency_keys_created ON call_idempotency_keys (created_at);

-- Temporary agents: Call24x7's POST /outbound_call with an instruction and no agent_id
-- makes an agent for that one call (system prompt = the instruction). They are real
-- agents (the worker loads them like any other), marked so that agent lists can leave
-- them out and a later clean-up can find them.
ALTER TABLE agents ADD COLUMN temporary boolean NOT NULL DEFAULT false;

-- The wallet: one balance per tenant and the ledger that explains it. A tenant with no
-- row has a balance of 0. Amounts are USD with micro-dollar precision, enough for
-- per-second call pricing ($0.15 a minute is $0.0025 a second).
CREATE TABLE wallets (
    tenant_id   text PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    balance_usd numeric(14, 6) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallet_ledger (
    id                text PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- positive: credit (top-up, grant); negative: debit (usage, adjustment)
    amount_usd        numeric(14, 6) NOT NULL,
    balance_after_usd numeric(14, 6) NOT NULL,
    reason            text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_ledger_tenant ON wallet_ledger (tenant_id, created_at DESC, id DESC);
