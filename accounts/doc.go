// Package accounts owns who may do what in Parley: tenants, users and their memberships
// (roles owner, admin and member), passwords (argon2id), login sessions (short-lived HS256
// JWT access tokens and rotating refresh tokens with reuse detection), API keys with
// scopes and their usage accounting, per-tenant white-label branding, and the bootstrap
// administrator of a fresh installation.
//
// The HTTP layer turns a bearer token into a [Principal] with [Service.Authenticate] and
// asks [Principal.Can] before acting. Authentication by API key is the hot path of the
// whole API, so key lookups (and the session check behind every JWT) are served from an
// in-memory cache that stays correct across processes through PostgreSQL LISTEN/NOTIFY;
// see cache.go for the scheme. Usage counters are kept in memory and written in batches.
//
// Every query on tenant data filters by tenant_id. The only lookups that do not are the
// ones where the tenant is not yet known because the credential itself is the key
// (an API key or refresh token hash, an email at login, a session id from a verified
// JWT), the public branding lookup by domain, and maintenance (PurgeExpired, bootstrap).
package accounts
