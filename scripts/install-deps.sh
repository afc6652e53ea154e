#!/usr/bin/env bash
# Installs the system packages the build and the tests need (Debian), only
# those missing. C crates (ring, aws-lc-sys) need a compiler; no cmake.
# The e2e tier (tests/e2e) needs nginx, Chromium, Caddy where Debian has it,
# and its npm packages (installed from tests/e2e/package-lock.json).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# nginx lives in /usr/sbin, which a non-root PATH may lack.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -x /usr/bin/chromium ] || need+=(chromium)
# Optional: installed when the package lists have it; the e2e test skips Caddy otherwise.
optional=()
command -v caddy >/dev/null 2>&1 || optional+=(caddy)
has_candidate() {
    local c
    c="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
    [ -n "$c" ] && [ "$c" != "(none)" ]
}
want_optional=0
for p in ${optional[@]+"${optional[@]}"}; do
    has_candidate "$p" && want_optional=1
done
if [ ${#need[@]} -gt 0 ] || [ "$want_optional" -eq 1 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    for p in ${optional[@]+"${optional[@]}"}; do
        if has_candidate "$p"; then
            need+=("$p")
        else
            echo "[deps] $p is not in Debian's package lists: not installed" >&2
        fi
    done
    echo "[deps] installing: ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The e2e tier's npm packages, from the lock file, when missing or older than it.
e2e="$root/tests/e2e"
if [ -f "$e2e/package-lock.json" ] && { [ ! -d "$e2e/node_modules" ] || [ "$e2e/package-lock.json" -nt "$e2e/node_modules" ]; }; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "[deps] npm is missing: the e2e tier needs Node.js >= 20 with npm" >&2
        exit 1
    fi
    echo "[deps] npm ci --prefix tests/e2e" >&2
    npm ci --prefix "$e2e" --no-audit --no-fund --loglevel=error >&2
    # npm ci may leave the folder's own time older than the lock file.
    touch "$e2e/node_modules"
fi
