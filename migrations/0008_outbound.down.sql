DROP TABLE IF EXISTS wallet_ledger;
DROP TABLE IF EXISTS wallets;
ALTER TABLE agents DROP COLUMN IF EXISTS temporary;
DROP TABLE IF EXISTS call_idempotency_keys;
