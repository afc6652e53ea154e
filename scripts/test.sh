#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test
# (unit, integration, doc), then the e2e tier (tests/e2e: the debug binary
# with real parts: an outside OpenID provider, nginx, Caddy, Chromium).
# This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if [ -z "${PORTCULLIS_TEST_POSTGRES_URL:-}" ]; then
    echo "[test] PORTCULLIS_TEST_POSTGRES_URL is not set: PostgreSQL tests will be skipped" >&2
fi
cargo test --locked --workspace "$@"
# The binary the e2e tier runs: ${CARGO_TARGET_DIR:-target}/debug/portcullis.
cargo build --locked
echo "[test] e2e tier: node --test tests/e2e/*.test.mjs" >&2
node --test tests/e2e/*.test.mjs
