#!/usr/bin/env bash
# Instructions per request under valgrind --tool=callgrind: nginx as a plain
# reverse proxy against portcullis (public path, signed-in session, bearer
# hit, bearer miss) and the hyper floor, each in front of the same nginx
# upstream (not under valgrind).
# Instruction counts hardly move with machine load, unlike req/s.
#
# Usage:
#   benches/callgrind.sh [--requests N] [--warm N] [--targets LIST]
#
# Options (each has an environment variable of the same meaning):
#   --requests N     REQUESTS=2000   measured requests, one keep-alive connection, one at a time
#   --warm N         WARM=200        requests sent first, in both runs (connection, caches, pools)
#   --targets LIST   TARGETS=nginx,public,session,bearer-hit,hyper-bare
#                    (bearer-miss on request: 1000 distinct RS256 tokens in
#                    turn, verdict cache off, so each request checks a
#                    signature; valgrind's CPU has no MULX/ADX, so aws-lc takes
#                    its slower RSA code and the signature's share is larger
#                    than on the real CPU)
# Environment only:
#   PORTCULLIS_BIN=PATH  use this binary instead of `cargo build --release --locked`
#                        (bare_hyper and mint_tokens are then taken from PATH's examples/ dir)
#   CARGO_TARGET_DIR=DIR honoured when building
#   KEEP_TMP=1           keep the temp dir (configs, logs, callgrind.out files)
#
# Each target runs twice under callgrind, from start to exit: once with
# WARM + REQUESTS requests, once (the idle baseline) with WARM requests and
# then as long idle as the first run took for its REQUESTS. Reported:
# (Ir of the first run - Ir of the baseline) / REQUESTS, so start-up,
# warm-up, idle timers and shutdown cancel out. nginx runs with
# `master_process off; daemon off;` so one process does all its work;
# portcullis and the floor run one worker thread. `session` is `serve --dev`
# (its demo provider and echo app in the same process, idle while measured)
# pinned to one CPU so it sizes itself to one worker; the client signs in
# through the demo provider's form first (in both runs, so it cancels out)
# and sends the session cookie: a session cache hit. The demo provider
# generates an RSA key at start, whose instruction count varies between the
# two runs by more than all the measured requests cost (2026-12-02: -80 509
# and -327 426 "per request"), so the instructions inside that key
# generation (`demo::provider::RsaKey::generate`, inclusive) are taken out of
# both runs of `session`. Exits 0 when the
# measurements ran; non-zero only if something could not be installed,
# built or started.

set -euo pipefail

REQUESTS="${REQUESTS:-2000}"
WARM="${WARM:-200}"
TARGETS="${TARGETS:-nginx,public,session,bearer-hit,hyper-bare}"
KEEP_TMP="${KEEP_TMP:-0}"
READY_TIMEOUT_S=120 # valgrind starts programs slowly
STOP_TIMEOUT_S=60   # and writes its output at exit

log() { printf '[callgrind] %s\n' "$*" >&2; }
die() {
    printf '[callgrind] error: %s\n' "$*" >&2
    exit 1
}

while (($# > 0)); do
    case "$1" in
    --requests) REQUESTS="${2:?--requests needs a value}" && shift ;;
    --warm) WARM="${2:?--warm needs a value}" && shift ;;
    --targets) TARGETS="${2:?--targets needs a value}" && shift ;;
    -h | --help)
        sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || die "REQUESTS must be a positive integer, got '$REQUESTS'"
[[ "$WARM" =~ ^[0-9]+$ ]] || die "WARM must be a whole number, got '$WARM'"
IFS=, read -ra TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    case "$t" in
    nginx | public | session | bearer-hit | bearer-miss | hyper-bare) ;;
    *) die "unknown target '$t' (targets: nginx,public,session,bearer-hit,bearer-miss,hyper-bare)" ;;
    esac
done

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

# ---------------------------------------------------------------- tools

find_nginx() {
    command -v nginx 2>/dev/null && return 0
    [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx && return 0
    return 1
}
missing=()
find_nginx >/dev/null || missing+=(nginx)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and there is no apt-get to install them"
    ((EUID == 0)) || die "missing ${missing[*]}; run as root to let this script apt-get install them"
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
NGINX="$(find_nginx)" || die "nginx not found after install"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (ports, the client)"

if [[ -n "${PORTCULLIS_BIN:-}" ]]; then
    BIN="$PORTCULLIS_BIN"
else
    log "building portcullis (cargo build --release --locked)"
    (cd "$REPO_DIR" && cargo build --release --locked --bin portcullis --example bare_hyper --example mint_tokens) || die "cargo build failed"
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" = /* ]] || target_dir="$REPO_DIR/$target_dir"
    BIN="$target_dir/release/portcullis"
fi
[[ -x "$BIN" ]] || die "portcullis binary not found or not executable: $BIN (set PORTCULLIS_BIN)"
BIN="$(realpath "$BIN")"
HYPER_BIN="$(dirname "$BIN")/examples/bare_hyper"
MINT_BIN="$(dirname "$BIN")/examples/mint_tokens"

# ---------------------------------------------------------------- cleanup

PIDS=()   # long-lived: the upstream
CUR_PID="" # the target under callgrind, while it runs
WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-callgrind.XXXXXX")" || die "mktemp failed"

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    [[ -z "$CUR_PID" ]] || PIDS+=("$CUR_PID")
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$KEEP_TMP" == "1" || "$rc" != "0" ]]; then
        log "kept $WORK"
    else
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- upstream

read -r PORT_U PORT_T PORT_TA <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')" || die "could not pick free ports"
[[ -n "${PORT_TA:-}" ]] || die "could not pick free ports"

nginx_user_line() {
    if ((EUID == 0)); then
        echo "user $(id -un) $(id -gn);"
    fi
}
# nginx_conf DIR EXTRA_MAIN SERVER_BLOCK: a minimal nginx.conf.
nginx_conf() {
    cat <<EOF
$(nginx_user_line)
$2
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
$3
}
EOF
}

mkdir -p "$WORK/upstream"
nginx_conf "$WORK/upstream" "worker_processes 1;" "
    server {
        listen 127.0.0.1:$PORT_U;
        location / { return 200 \"ok\\n\"; }
    }" >"$WORK/upstream/nginx.conf"
"$NGINX" -p "$WORK/upstream" -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" -g 'daemon off;' \
    >"$WORK/upstream/stderr.log" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 50; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_U/")" == 200 ]] && break
    sleep 0.2
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_U/")" == 200 ]] || die "the upstream did not start"

# ---------------------------------------------------------------- targets

need_pc=0
for t in "${TARGET_LIST[@]}"; do
    [[ "$t" == public || "$t" == session || "$t" == bearer-* ]] && need_pc=1
done
ONE_TOKEN=""
if ((need_pc == 1)); then
    secret="$("$BIN" keygen 2>/dev/null | awk 'NF { last = $0 } END { print last }')" || true
    secret="${secret//[[:space:]]/}"
    [[ -n "$secret" && "$secret" != *[\"\\]* ]] || die "portcullis keygen printed no usable secret"
    tokens=1
    for t in "${TARGET_LIST[@]}"; do
        [[ "$t" != bearer-miss ]] || tokens=1000
    done
    for t in "${TARGET_LIST[@]}"; do
        [[ "$t" == bearer-* && -z "$ONE_TOKEN" ]] || continue
        [[ -x "$MINT_BIN" ]] || die "token minter not found: $MINT_BIN"
        "$MINT_BIN" "$WORK" "$tokens" 0 https://machines.bench.example bench >"$WORK/mint.log" 2>&1 || {
            cat "$WORK/mint.log" >&2
            die "mint_tokens failed"
        }
        ONE_TOKEN="$(head -n 1 "$WORK/tokens-RS256.txt")"
    done
fi

# PORTCULLIS_<SECTION>__<KEY> variables would override the generated config; drop them.
unset_args=()
while IFS= read -r v; do
    unset_args+=(-u "$v")
done < <(compgen -e | grep '^PORTCULLIS_' || true)

# pc_conf TARGET DB: a portcullis config on PORT_T, one worker, a short drain,
# its store in DB. Each run gets a fresh DB: with one DB per target, the
# first run applied the schema migrations and the baseline did not, which
# added about 3 000 instructions to every "request" (2026-12-03).
pc_conf() {
    cat <<EOF
[server]
listen = "127.0.0.1:$PORT_T"
admin_listen = "127.0.0.1:$PORT_TA"
public_url = "http://127.0.0.1:$PORT_T"
threads = 1
shutdown_timeout = "1s"
$([[ "$1" != bearer-miss ]] || echo "bearer_cache_entries = 0")

[session]
secrets = ["$secret"]

[store]
url = "sqlite://$2"
EOF
    if [[ "$1" == public ]]; then
        cat <<EOF

[[app]]
name = "bench"
upstream = "http://127.0.0.1:$PORT_U"
public_paths = ["/"]
EOF
    else
        cat <<EOF

[[source]]
slug = "machines"
type = "openidconnect"
issuer = "https://machines.bench.example"
oidc_jwks = '$(tr -d '\n' <"$WORK/jwks.json")'

[[app]]
name = "bench"
upstream = "http://127.0.0.1:$PORT_U"
jwt_sources = ["machines"]
jwt_audiences = ["bench"]
[[app.policy]]
on = ["access"]
effect = "allow"
EOF
    fi
}

# The client: one keep-alive connection, requests one after the other; waits
# for the listener, sends WARM requests, then either REQUESTS requests or
# stays idle for IDLE seconds. Prints the seconds the second phase took.
# HEADER `SIGN-IN` signs in through portcullis --dev's demo provider first
# (as a browser would, on connections of its own) and sends the session cookie;
# `TOKENS FILE` sends the file's tokens as bearer tokens, one a request, in turn.
cat >"$WORK/client.py" <<'PY'
import html.parser, http.client, socket, sys, time, urllib.error, urllib.parse, urllib.request
port, warm, count, idle, header = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
deadline = time.monotonic() + float(sys.argv[6])
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the server did not listen in time")
        time.sleep(0.2)

def sign_in(base):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    def call(url, data=None, cookie=""):
        req = urllib.request.Request(url, data=data, headers={"Cookie": cookie} if cookie else {})
        try:
            r = opener.open(req, timeout=60)
        except urllib.error.HTTPError as e:
            r = e
        return r.status, r.headers, r.read().decode("utf-8", "replace")
    def cookies(h):
        return "; ".join(v.split(";")[0] for v in h.get_all("Set-Cookie") or [])
    while True:
        try:
            status, h, _ = call(base + "/_auth/login/demo?rd=/")
            if status in (302, 303):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("the demo sign-in did not start in time")
        time.sleep(0.5)
    login_cookie, authorize = cookies(h), h["Location"]
    _, _, page = call(authorize)
    class Form(html.parser.HTMLParser):
        def __init__(self):
            super().__init__(); self.fields = {}
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "input" and a.get("type") == "hidden":
                self.fields[a["name"]] = a.get("value", "")
    f = Form(); f.feed(page); f.fields["user"] = "alice"
    p = urllib.parse.urlsplit(authorize)
    _, h, _ = call(f"{p.scheme}://{p.netloc}/authorize", urllib.parse.urlencode(f.fields).encode())
    _, h, _ = call(h["Location"], cookie=login_cookie)
    return next(c for c in cookies(h).split("; ") if c.startswith("portcullis="))

headers, tokens = {}, []
if header == "SIGN-IN":
    headers["Cookie"] = sign_in(f"http://127.0.0.1:{port}")
elif header.startswith("TOKENS "):
    tokens = [t.strip() for t in open(header[len("TOKENS "):]) if t.strip()]
elif header:
    name, value = header.split(": ", 1)
    headers[name] = value
sent = 0
def get():
    global sent
    if tokens:
        headers["Authorization"] = "Bearer " + tokens[sent % len(tokens)]
    sent += 1
    conn.request("GET", "/", headers=headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"answered {r.status}")
for _ in range(warm):
    get()
start = time.monotonic()
if count:
    for _ in range(count):
        get()
else:
    time.sleep(idle)
print(f"{time.monotonic() - start:.3f}")
conn.close()
PY

# total_ir PREFIX: the summed instruction count of PREFIX.* callgrind files.
total_ir() {
    cat "$1".* 2>/dev/null | awk '$1 == "totals:" { t += $2; seen = 1 } $1 == "summary:" { s += $2 }
        END { if (seen) printf "%d\n", t; else if (s) printf "%d\n", s; else exit 1 }'
}

# run_target TARGET KIND COUNT IDLE: one callgrind run; sets RUN_IR and RUN_SECS.
run_target() {
    local t="$1" kind="$2" count="$3" idle="$4" dir="$WORK/$1-$2" pid header="" i
    mkdir -p "$dir"
    local -a vg=(valgrind --tool=callgrind "--callgrind-out-file=$dir/callgrind.out.%p")
    case "$t" in
    nginx)
        nginx_conf "$dir" "daemon off; master_process off;" "
    upstream bench_upstream {
        server 127.0.0.1:$PORT_U;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT_T;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }" >"$dir/nginx.conf"
        "${vg[@]}" "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stderr.log" 2>&1 &
        ;;
    public | bearer-hit | bearer-miss)
        pc_conf "$t" "$dir/store.db" >"$dir/portcullis.toml"
        case "$t" in
        bearer-hit) header="Authorization: Bearer $ONE_TOKEN" ;;
        bearer-miss) header="TOKENS $WORK/tokens-RS256.txt" ;;
        esac
        (cd "$dir" && exec env "${unset_args[@]}" "${vg[@]}" "$BIN" serve --config "$dir/portcullis.toml" --log-format json) \
            >"$dir/stderr.log" 2>&1 &
        ;;
    session)
        header="SIGN-IN"
        (cd "$dir" && exec env "${unset_args[@]}" taskset -c 0 "${vg[@]}" "$BIN" serve --dev --port "$PORT_T" \
            --upstream "http://127.0.0.1:$PORT_U") >"$dir/stderr.log" 2>&1 &
        ;;
    hyper-bare)
        [[ -x "$HYPER_BIN" ]] || die "no hyper floor at $HYPER_BIN (cargo build --release --example bare_hyper)"
        "${vg[@]}" "$HYPER_BIN" "127.0.0.1:$PORT_T" "127.0.0.1:$PORT_U" 1 >"$dir/stderr.log" 2>&1 &
        ;;
    esac
    pid="$!"
    CUR_PID="$pid"
    if ! RUN_SECS="$(python3 "$WORK/client.py" "$PORT_T" "$WARM" "$count" "$idle" "$header" "$READY_TIMEOUT_S" 2>"$dir/client.err")"; then
        cat "$dir/client.err" >&2
        tail -n 20 "$dir/stderr.log" >&2
        die "$t ($kind): the client failed"
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "$t ($kind) did not exit within ${STOP_TIMEOUT_S}s of SIGTERM (log: $dir/stderr.log)"
    wait "$pid" 2>/dev/null || true
    CUR_PID=""
    RUN_IR="$(total_ir "$dir/callgrind.out")" || die "$t ($kind): no callgrind totals in $dir (log: $dir/stderr.log)"
    if [[ "$t" == session ]]; then
        # The demo provider's RSA key generation (a prime search: its cost
        # differs from run to run by more than all the measured requests)
        # is taken out of both runs.
        local keygen
        keygen="$(keygen_ir "$dir/callgrind.out")" || die "$t ($kind): no RSA key generation found in $dir"
        RUN_IR=$((RUN_IR - keygen))
    fi
}

# keygen_ir PREFIX: instructions spent in the demo provider's RSA key
# generation (inclusive), summed over PREFIX.* callgrind files.
keygen_ir() {
    local f sum=0 n
    for f in "$1".*; do
        n="$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
            awk '/demo::provider::RsaKey::generate / { gsub(",", "", $1); print $1; exit }')"
        sum=$((sum + ${n:-0}))
    done
    ((sum > 0)) || return 1
    echo "$sum"
}

declare -A IR_REQ=() IR_RUN=() IR_IDLE=()
for t in "${TARGET_LIST[@]}"; do
    log "$t: $WARM + $REQUESTS requests under callgrind"
    run_target "$t" requests "$REQUESTS" 0
    IR_RUN[$t]="$RUN_IR"
    secs="$RUN_SECS"
    log "$t: $RUN_IR Ir ($REQUESTS requests took ${secs}s); idle baseline: $WARM requests, then ${secs}s idle"
    run_target "$t" idle 0 "$secs"
    IR_IDLE[$t]="$RUN_IR"
    IR_REQ[$t]="$(awk -v a="${IR_RUN[$t]}" -v b="$RUN_IR" -v n="$REQUESTS" 'BEGIN { printf "%.0f", (a - b) / n }')"
    log "$t: ${IR_REQ[$t]} instructions per request"
done

echo
echo "instructions per request under callgrind, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr)"
echo "GET / through each proxy to an nginx upstream, one keep-alive connection, $WARM warm-up + $REQUESTS measured requests, minus an idle baseline run"
echo
printf '%-12s %16s %16s %12s %9s\n' target "Ir (run)" "Ir (baseline)" "Ir/request" "vs nginx"
for t in "${TARGET_LIST[@]}"; do
    vs="-"
    if [[ -n "${IR_REQ[nginx]:-}" ]]; then
        vs="$(awk -v a="${IR_REQ[$t]}" -v b="${IR_REQ[nginx]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
    fi
    printf '%-12s %16s %16s %12s %9s\n' "$t" "${IR_RUN[$t]}" "${IR_IDLE[$t]}" "${IR_REQ[$t]}" "$vs"
done
exit 0
