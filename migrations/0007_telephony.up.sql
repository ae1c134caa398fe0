-- Telephony (package telephony): SIP trunks and phone numbers, each tied to the LiveKit
-- SIP objects that mirror it. The lk_* columns hold LiveKit's IDs so that an update or
-- delete changes exactly the objects this row created; telephony.Service.Reconcile
-- recreates missing ones and removes ones no row refers to.

CREATE TABLE sip_trunks (
    id                 text PRIMARY KEY,
    tenant_id          text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name               text NOT NULL,
    -- where outbound INVITEs go (host or host:port) and how; '' means inbound only
    outbound_address   text NOT NULL DEFAULT '',
    outbound_transport text NOT NULL DEFAULT 'udp' CHECK (outbound_transport IN ('udp', 'tcp', 'tls')),
    outbound_username  text NOT NULL DEFAULT '',
    -- passwords are AES-GCM sealed by internal/crypt ("v1:…"); '' means none
    outbound_password  text NOT NULL DEFAULT '',
    -- IPs and CIDRs inbound calls may come from; empty means any source
    inbound_addresses  text[] NOT NULL DEFAULT '{}',
    inbound_username   text NOT NULL DEFAULT '',
    inbound_password   text NOT NULL DEFAULT '',
    lk_inbound_id      text NOT NULL DEFAULT '',
    lk_outbound_id     text NOT NULL DEFAULT '',
    -- the trunk-level LiveKit dispatch rule (no numbers listed) that takes calls to the
    -- trunk's unbound numbers, so that they are refused (486) rather than left ringing
    lk_rule_id         text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- the target of phone_numbers' (tenant_id, trunk_id) key: a number can only use a
    -- trunk of its own tenant, whatever the code above it does
    UNIQUE (tenant_id, id)
);
CREATE INDEX sip_trunks_tenant ON sip_trunks (tenant_id, created_at DESC, id);

CREATE TABLE phone_numbers (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- E.164; unique across tenants: a number rings in one place only, and inbound calls
    -- are routed by number before any tenant is known (telephony.Service.InboundRoute)
    number       text NOT NULL UNIQUE CHECK (number ~ '^\+[1-9][0-9]{1,14}$'),
    -- how calls leave: 'sip' through the trunk's LiveKit outbound trunk, 'twilio' through
    -- Twilio's REST API
    provider     text NOT NULL DEFAULT 'sip' CHECK (provider IN ('sip', 'twilio')),
    trunk_id     text,
    agent_id     text REFERENCES agents(id) ON DELETE SET NULL,
    nickname     text NOT NULL DEFAULT '',
    -- the carrier it was bought from through POST /v1/phone-numbers/buy, and the
    -- carrier's own ID of it, needed to release it; '' for numbers brought by the user
    carrier      text NOT NULL DEFAULT '',
    carrier_id   text NOT NULL DEFAULT '',
    -- the LiveKit dispatch rule of a bound SIP number; '' when it has none
    lk_rule_id   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, trunk_id) REFERENCES sip_trunks (tenant_id, id)
);
CREATE INDEX phone_numbers_tenant ON phone_numbers (tenant_id, created_at DESC, id);
CREATE INDEX phone_numbers_trunk ON phone_numbers (trunk_id) WHERE trunk_id IS NOT NULL;
CREATE INDEX phone_numbers_agent ON phone_numbers (tenant_id, agent_id) WHERE agent_id IS NOT NULL;
