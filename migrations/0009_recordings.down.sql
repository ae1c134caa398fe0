-- Drops the recording keys; the stored files themselves are left in the store.
ALTER TABLE calls DROP COLUMN recording_key;
