-- The source's tokens of a session whose app passes them upstream
-- (`pass_access_token`): access token, refresh token and expiry, sealed
-- (AES-256-GCM, keys derived from the session secrets, bound to the session
-- id), never stored in clear. `refreshing_until` is the refresh lease: one
-- replica claims it with a conditional UPDATE (unix seconds; 0 = free), so a
-- session's token is refreshed once at a time across all replicas.

ALTER TABLE sessions ADD COLUMN tokens TEXT;
ALTER TABLE sessions ADD COLUMN refreshing_until BIGINT NOT NULL DEFAULT 0;
