-- Idle expiry (session.idle_timeout): when a session was last used, unix seconds.
-- Written in the background, at most once per min(idle_timeout/10, 60 s), so it
-- may lag the true last use by that much.
--
-- SQLite quirk: ADD COLUMN ... NOT NULL needs a constant default, so existing
-- rows get 0 first and their creation time right after.

ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_used_at = created_at;
