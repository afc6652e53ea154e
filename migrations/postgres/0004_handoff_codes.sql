-- One-time codes that hand a session from the sign-in host to an app host
-- (DESIGN "URLs", several hosts). A code is stored by its SHA-256 (base64url),
-- is bound to the host and to the browser that asked (binding: SHA-256 of a
-- nonce cookie on that host), is deleted when traded (DELETE ... RETURNING: the row lock makes it
-- single-use across replicas) and is refused at or after expires_at (unix
-- seconds; 60 s after issue). Rows never traded stay until a purge removes
-- the expired ones.

CREATE TABLE handoff_codes (
    code_hash   TEXT   NOT NULL PRIMARY KEY,
    session_id  TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    host        TEXT   NOT NULL,
    rd          TEXT   NOT NULL,
    binding     TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX handoff_codes_expires_idx ON handoff_codes (expires_at);
