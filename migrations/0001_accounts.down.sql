DROP TABLE IF EXISTS api_key_usage, api_keys, refresh_tokens, auth_sessions, members, users, tenants;
