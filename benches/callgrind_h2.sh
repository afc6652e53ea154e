#!/usr/bin/env bash
# Instructions per HTTP/2 request under valgrind --tool=callgrind: portcullis
# serving TLS with ALPN h2 (a self-signed P-256 certificate made here), its
# public path in front of an nginx upstream (not under valgrind), one
# connection, requests one after another (curl --http2 with every URL on
# one connection).
#
# Usage:
#   PORTCULLIS_BIN=target/release/portcullis benches/callgrind_h2.sh [REQUESTS]
#
# REQUESTS (default 2000) are measured: portcullis runs twice under
# callgrind, from start to exit, once with 200 requests and once with
# 200 + REQUESTS; reported is the difference of the two totals / REQUESTS
# (whole process: TLS, HTTP/2, the request path; start-up and shutdown
# cancel out, the longer run's idle timers do not, about ±600). Needs
# nginx, valgrind, curl built with HTTP/2, and openssl. KEEP_TMP=1 keeps
# the work dir (configs, logs, callgrind.out files).
set -euo pipefail

die() {
    echo "callgrind_h2: $*" >&2
    exit 1
}

REQUESTS="${1:-2000}"
[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || die "REQUESTS must be a positive integer, got '$REQUESTS'"
BIN="${PORTCULLIS_BIN:-}"
[[ -x "$BIN" ]] || die "set PORTCULLIS_BIN to a portcullis binary (got '$BIN')"
BIN="$(realpath "$BIN")"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || die "nginx not found (benches/callgrind.sh installs it)"
for tool in valgrind curl openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
curl -V 2>/dev/null | grep -w HTTP2 >/dev/null || die "this curl has no HTTP/2"

WORK="$(mktemp -d /tmp/portcullis-callgrind-h2.XXXXXX)"
NGINX_PID=""
# The portcullis under valgrind writes its pid here: a run that fails inside
# `$(...)` exits only its subshell, and cleanup must still stop it.
PC_PID_FILE="$WORK/portcullis.pid"
cleanup() {
    local status=$? pid
    if [[ -s "$PC_PID_FILE" ]]; then
        pid="$(cat "$PC_PID_FILE")"
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    fi
    if [[ -n "$NGINX_PID" ]]; then
        kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    fi
    if [[ "${KEEP_TMP:-0}" == 1 || $status -ne 0 ]]; then
        echo "callgrind_h2: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three free ports at once (sockets held together, so they differ).
read -r PORT_U PORT_T PORT_A < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost >/dev/null 2>&1 || die "openssl could not make a certificate"

mkdir -p "$WORK/upstream/logs"
cat >"$WORK/upstream/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:$PORT_U;
        location / { return 200 "ok"; }
    }
}
EOF
"$NGINX" -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" &
NGINX_PID=$!

cat >"$WORK/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT_T"
admin_listen = "127.0.0.1:$PORT_A"
public_url = "https://localhost:$PORT_T"
threads = 1
shutdown_timeout = "1s"
tls = { cert_file = "$WORK/cert.pem", key_file = "$WORK/key.pem" }

[session]
secrets = ["PlrNi1oVjxZhVIuH2sTf+A/1fIOgYlXsHQn2DNjy/jk="]

[store]
url = "sqlite://$WORK/store.db"

[[app]]
name = "bench"
upstream = "http://127.0.0.1:$PORT_U"
public_paths = ["/"]
EOF

# run COUNT OUT: total instructions of portcullis serving COUNT requests.
run() {
    local count="$1" out="$2" pid i
    rm -f "$WORK/store.db"
    (cd "$WORK" && exec env -u PORTCULLIS_CONFIG valgrind --tool=callgrind "--callgrind-out-file=$out" \
        "$BIN" serve --config "$WORK/portcullis.toml" --log-format json) >"$out.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PC_PID_FILE"
    for ((i = 0; i < 300; i++)); do
        curl -skf --http2 -o /dev/null "https://localhost:$PORT_T/" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || die "portcullis exited: $(tail -n 5 "$out.log")"
        sleep 0.2
    done
    ((i < 300)) || die "no 200 through portcullis within 60 s (see $out.log and $WORK/upstream/error.log)"
    for ((i = 0; i < count; i++)); do echo "url = \"https://localhost:$PORT_T/\""; done >"$WORK/urls.txt"
    curl -skf --http2 -K "$WORK/urls.txt" >/dev/null || die "a request failed"
    kill -TERM "$pid"
    wait "$pid" || true
    : >"$PC_PID_FILE"
    awk '$1 == "totals:" { print $2 }' "$out"
}

# The readiness probe is one more request in each run: they cancel out.
warm="$(run 200 "$WORK/callgrind.warm")"
measured="$(run $((200 + REQUESTS)) "$WORK/callgrind.run")"
[[ -n "$warm" && -n "$measured" ]] || die "no callgrind totals"
echo "HTTP/2 public path: $(((measured - warm) / REQUESTS)) instructions a request (whole process; $REQUESTS requests; $warm and $measured in all)"
