-- portcullis user store, PostgreSQL dialect.
--
-- PostgreSQL quirks, kept here rather than in the code:
-- * lower() folds case by the database's locale, so case-insensitive
--   uniqueness covers non-ASCII letters too (SQLite folds ASCII only).
-- * The tables go to the first schema of search_path, so several stores (or
--   test runs) can share one database in separate schemas.

CREATE TABLE users (
    id          TEXT    NOT NULL PRIMARY KEY,
    username    TEXT    NOT NULL,
    email       TEXT,
    name        TEXT,
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL
);

-- Usernames are unique regardless of case: "Admin" must not shadow "admin" upstream.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE INDEX users_email_idx ON users (lower(email));

-- One user per source identity, and at most one identity per source per user.
CREATE TABLE connections (
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT    NOT NULL,
    identifier  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (source, identifier)
);

CREATE UNIQUE INDEX connections_user_source_key ON connections (user_id, source);

-- Groups are tagged with the source that reported them, so a sign-in through
-- one source replaces only that source's groups.
CREATE TABLE user_groups (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    PRIMARY KEY (user_id, source, group_name)
);

CREATE TABLE sessions (
    id          TEXT    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    oidc_sid    TEXT,
    id_token    TEXT
);

CREATE INDEX sessions_user_idx ON sessions (user_id);
-- Back-channel logout finds sessions by the provider's sid.
CREATE INDEX sessions_oidc_sid_idx ON sessions (source, oidc_sid);
