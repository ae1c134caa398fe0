-- Call recordings (package calls): where a call's mixed audio is stored. recording_url
-- (0003) is what the API shows, Parley's own GET /v1/calls/{id}/recording; the key
-- says where the bytes are in the configured store (a path under the recordings
-- directory, or an S3 object key), and is never shown: clients fetch through Parley,
-- which checks the tenant, rather than from the store. Empty: no recording (recording
-- off for the agent, the call still live, or nothing recorded).
ALTER TABLE calls ADD COLUMN recording_key text NOT NULL DEFAULT '';
