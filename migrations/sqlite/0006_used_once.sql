-- Values that may be used once across every replica (DESIGN: login state is
-- one-time; back-channel logout token ids): a login state's `state`, a
-- logout token's `jti`. Each is kept by the SHA-256 (base64url) of its
-- labelled value until expires_at (unix seconds; past the longest time it
-- could still be presented); the insert that finds a live row is the replay.
-- A purge removes the expired rows.

CREATE TABLE used_once (
    key_hash    TEXT    NOT NULL PRIMARY KEY,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX used_once_expires_idx ON used_once (expires_at);
