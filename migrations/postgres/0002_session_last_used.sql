-- Idle expiry (session.idle_timeout): when a session was last used, unix seconds.
-- Written in the background, at most once per min(idle_timeout/10, 60 s), so it
-- may lag the true last use by that much. Existing rows count as last used
-- when they were created.

ALTER TABLE sessions ADD COLUMN last_used_at BIGINT;
UPDATE sessions SET last_used_at = created_at;
ALTER TABLE sessions ALTER COLUMN last_used_at SET NOT NULL;
