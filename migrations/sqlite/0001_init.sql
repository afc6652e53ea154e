-- portcullis user store, SQLite dialect.
--
-- SQLite quirks, kept here rather than in the code:
-- * STRICT tables, so a wrong type is an error instead of a silent affinity cast;
--   booleans are INTEGER 0/1 (STRICT has no BOOLEAN), times are unix seconds.
-- * lower() folds ASCII only (no ICU), so case-insensitive uniqueness of
--   usernames and email lookups fold ASCII letters only; PostgreSQL folds more.
-- * Foreign keys are enforced because the connection turns them on
--   (PRAGMA foreign_keys = ON, set by the store at open).

CREATE TABLE users (
    id          TEXT    NOT NULL PRIMARY KEY,
    username    TEXT    NOT NULL,
    email       TEXT,
    name        TEXT,
    disabled    INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

-- Usernames are unique regardless of case: "Admin" must not shadow "admin" upstream.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE INDEX users_email_idx ON users (lower(email));

-- One user per source identity, and at most one identity per source per user.
CREATE TABLE connections (
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT    NOT NULL,
    identifier  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (source, identifier)
) STRICT;

CREATE UNIQUE INDEX connections_user_source_key ON connections (user_id, source);

-- Groups are tagged with the source that reported them, so a sign-in through
-- one source replaces only that source's groups.
CREATE TABLE user_groups (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    PRIMARY KEY (user_id, source, group_name)
) STRICT;

CREATE TABLE sessions (
    id          TEXT    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    oidc_sid    TEXT,
    id_token    TEXT
) STRICT;

CREATE INDEX sessions_user_idx ON sessions (user_id);
-- Back-channel logout finds sessions by the provider's sid.
CREATE INDEX sessions_oidc_sid_idx ON sessions (source, oidc_sid);
