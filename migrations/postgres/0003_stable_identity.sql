-- Stable identity (issue 12): each user has a home source, the one they
-- enrolled through, whose sign-ins alone refresh email and name; whether the
-- stored email is one a source vouches for (email_verified or trust_email),
-- which email_domains and email entries of `users` require at access time;
-- and the claims of the sign-in on the session record (JSON text, at most 16 KiB).
--
-- Existing users: the home source is the source of their oldest connection.
-- Nobody recorded whether their email was vouched for, so it counts as not
-- vouched until their next sign-in through the home source says otherwise.
-- Existing sessions have no claims (policies see `{}`).
--
-- Numbered 0004: 0003 is left to the handoff table of the several-hosts work.

ALTER TABLE users ADD COLUMN home_source TEXT;
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET home_source = (
    SELECT c.source FROM connections c WHERE c.user_id = users.id
    ORDER BY c.created_at, c.source LIMIT 1
);
ALTER TABLE sessions ADD COLUMN claims TEXT;
