#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test
# (unit, integration, doc). This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if [ -z "${PORTCULLIS_TEST_POSTGRES_URL:-}" ]; then
    echo "[test] PORTCULLIS_TEST_POSTGRES_URL is not set: PostgreSQL tests will be skipped" >&2
fi
cargo test --locked "$@"
