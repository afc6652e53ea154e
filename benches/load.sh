#!/usr/bin/env bash
# Load benchmark: portcullis against nginx, Apache and bare engines, all as
# reverse proxies in front of the same nginx upstream, all on 127.0.0.1.
#
# Usage:
#   benches/load.sh [options]
#
# Options (each has an environment variable of the same meaning):
#   --proxy-cpus LIST   PROXY_CPUS=0     CPUs of every proxy and the upstream (taskset -c LIST)
#   --load-cpus LIST    LOAD_CPUS=1      CPUs of the load generator (taskset -c LIST)
#   --no-pin            PIN=0            no taskset at all (workers = all cores)
#   --threads N         THREADS=1        wrk threads
#   --connections N     CONNECTIONS=32   wrk connections
#   --duration D        DURATION=10s     one measured wrk run
#   --rounds N          ROUNDS=3         repetitions; each round runs every row once
#   --warmup D          WARMUP=2s        untimed wrk run per row before round 1 ("0": none)
#   --rows LIST         ROWS=...         comma-separated rows to run (default: all below)
#   --skip-portcullis   SKIP_PORTCULLIS=1  only the rows without portcullis
#   --skip-apache       SKIP_APACHE=1    no Apache rows (they need apache2 and its modules)
#   --skip-pingora      SKIP_PINGORA=1   no pingora-bare row (its build needs cmake)
# Environment only:
#   PORTCULLIS_BIN=PATH  use this binary instead of `cargo build --release --locked`
#                        (bare_hyper and mint_tokens are then taken from PATH's examples/ dir)
#   PINGORA_BIN=PATH     use this pingora floor instead of building benches/pingora-floor
#   CARGO_TARGET_DIR=DIR honoured when building
#   RSS_TOKENS=100000    distinct tokens cached before the RSS reading ("0" skips it)
#   KEEP_TMP=1           keep the temp dirs (configs, logs); always kept on failure
#
# Rows (median over ROUNDS of req/s, p50, p99 and the proxy's CPU time per request):
#   nginx          nginx as a plain reverse proxy (upstream keep-alive)
#   public         portcullis, a public path
#   session        portcullis --dev, a signed-in session cookie (session cache hit)
#   bearer-hit     portcullis, one RS256 token repeated (verdict cache hit)
#   bearer-miss    portcullis, 1000 distinct RS256 tokens, verdict cache off
#   apache-oidc    Apache + mod_auth_openidc (AuthType oauth20), the same 1000 tokens
#   apache-oauth2  Apache + mod_oauth2 (AuthType oauth2), one token repeated (its cache)
#   hyper-bare     examples/bare_hyper.rs: hyper with nothing in it (floor)
#   pingora-bare   benches/pingora-floor: pingora with nothing in it (floor)
#   upstream       the upstream itself, no proxy (only when named in ROWS)
# Rounds are interleaved: round 1 runs every row, then round 2 every row, and
# so on, so a slow phase of a shared machine hits every row alike. Besides
# the ratios of the medians (the targets), each row's req/s and p99 are
# divided by nginx's of the same round: the median of those ratios and
# their spread are printed too.
#
# CPU µs/request: utime+stime (+ reaped children) of the proxy's process tree
# from /proc, read before and after each run, divided by the requests wrk
# completed. For nginx and Apache that is the master plus its workers; the
# upstream is never counted. "up wake/r": the upstream nginx's voluntary
# context switches over the run per request; sharing the proxy's core, it
# costs the proxy's row each time it wakes. "up CPU/r": the upstream's own
# utime+stime per request. "idle %" and "steal %": how much of the proxies'
# CPUs' time over the run (/proc/stat) was idle (with iowait) or taken by
# the hypervisor (at 100 ticks a second, one tick of a 5 s run on one core
# is 0.2 %); on one busy core, 1 / req/s is about proxy CPU + upstream CPU
# a request, plus the idle and stolen share of 1 / req/s.
# Also reported: the bearer-hit instance's RSS
# before and after RSS_TOKENS distinct ES256 tokens were verified and cached.
#
# The script prints the ratios against nginx and Apache and whether they meet
# the targets, but exits 0 whenever the measurements ran: it is a benchmark,
# not a test. It exits non-zero only if something could not be installed,
# built or started. Every process binds 127.0.0.1 on a port chosen at run time
# and is stopped by the EXIT trap. Every wait is bounded.

set -euo pipefail

PROXY_CPUS="${PROXY_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
PIN="${PIN:-1}"
THREADS="${THREADS:-1}"
CONNECTIONS="${CONNECTIONS:-32}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2s}"
ALL_ROWS="nginx,public,session,bearer-hit,bearer-miss,apache-oidc,apache-oauth2,hyper-bare,pingora-bare"
ROWS="${ROWS:-$ALL_ROWS}"
SKIP_PORTCULLIS="${SKIP_PORTCULLIS:-0}"
SKIP_APACHE="${SKIP_APACHE:-0}"
SKIP_PINGORA="${SKIP_PINGORA:-0}"
KEEP_TMP="${KEEP_TMP:-0}"
RSS_TOKENS="${RSS_TOKENS:-100000}"
COMMAND_LINE="$0 $*"

READY_TIMEOUT_S=20 # how long a server may take to answer

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    printf '[load] error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

while (($# > 0)); do
    case "$1" in
    --proxy-cpus) PROXY_CPUS="${2:?--proxy-cpus needs a value}" && shift ;;
    --load-cpus) LOAD_CPUS="${2:?--load-cpus needs a value}" && shift ;;
    --no-pin) PIN=0 ;;
    --threads) THREADS="${2:?--threads needs a value}" && shift ;;
    --connections) CONNECTIONS="${2:?--connections needs a value}" && shift ;;
    --duration) DURATION="${2:?--duration needs a value}" && shift ;;
    --rounds) ROUNDS="${2:?--rounds needs a value}" && shift ;;
    --warmup) WARMUP="${2:?--warmup needs a value}" && shift ;;
    --rows) ROWS="${2:?--rows needs a value}" && shift ;;
    --skip-portcullis) SKIP_PORTCULLIS=1 ;;
    --skip-apache) SKIP_APACHE=1 ;;
    --skip-pingora) SKIP_PINGORA=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

is_posint() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_posint "$THREADS" || die "THREADS must be a positive integer, got '$THREADS'"
is_posint "$CONNECTIONS" || die "CONNECTIONS must be a positive integer, got '$CONNECTIONS'"
is_posint "$ROUNDS" || die "ROUNDS must be a positive integer, got '$ROUNDS'"
((ROUNDS <= 100)) || die "ROUNDS must be at most 100"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS ($CONNECTIONS) must be at least THREADS ($THREADS)"

# wrk duration ("10", "10s", "2m", "1h") -> whole seconds, for the timeout guard.
duration_s() {
    local d="$1"
    if [[ "$d" =~ ^([0-9]+)(s|m|h)?$ ]]; then
        case "${BASH_REMATCH[2]}" in
        m) echo $((BASH_REMATCH[1] * 60)) ;;
        h) echo $((BASH_REMATCH[1] * 3600)) ;;
        *) echo "${BASH_REMATCH[1]}" ;;
        esac
    else
        return 1
    fi
}
DURATION_S="$(duration_s "$DURATION")" || die "DURATION must look like 10s, 2m or 1h, got '$DURATION'"
((DURATION_S > 0)) || die "DURATION must be longer than 0"
if [[ "$WARMUP" != "0" ]]; then
    warmup_s="$(duration_s "$WARMUP")" || die "WARMUP must look like 2s or 0, got '$WARMUP'"
    ((warmup_s > 0)) || WARMUP=0
fi

# cpu_count LIST: how many CPUs a taskset list ("0", "0-3", "0,2-3") names.
cpu_count() {
    local n=0 part
    local -a parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[2] >= BASH_REMATCH[1])); then
            n=$((n + BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
        elif [[ "$part" =~ ^[0-9]+$ ]]; then
            n=$((n + 1))
        else
            return 1
        fi
    done
    ((n > 0)) && echo "$n"
}

NPROC="$(nproc)"
if [[ "$PIN" == "1" ]]; then
    command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed to pin; or --no-pin"
    WORKERS="$(cpu_count "$PROXY_CPUS")" || die "PROXY_CPUS must be a CPU list like 0 or 0-1, got '$PROXY_CPUS'"
    cpu_count "$LOAD_CPUS" >/dev/null || die "LOAD_CPUS must be a CPU list like 1 or 2-3, got '$LOAD_CPUS'"
    taskset -c "$PROXY_CPUS" true 2>/dev/null || die "cannot pin to PROXY_CPUS=$PROXY_CPUS on this machine ($NPROC cores)"
    taskset -c "$LOAD_CPUS" true 2>/dev/null || die "cannot pin to LOAD_CPUS=$LOAD_CPUS on this machine ($NPROC cores)"
    PROXY_PIN=(taskset -c "$PROXY_CPUS")
    LOAD_PIN=(taskset -c "$LOAD_CPUS")
else
    WORKERS="$NPROC"
    PROXY_PIN=()
    LOAD_PIN=()
fi
# taskset execs the command: the PID we keep is the server's own.
# Only ever started in the background (`on_proxy … &`, which runs the function
# in a subshell): exec, so the PID the cleanup stops is the proxy's own. Without
# it the subshell was stopped and nginx, Apache and the floor outlived the run.
on_proxy() { exec "${PROXY_PIN[@]}" "$@"; }
on_load() { "${LOAD_PIN[@]}" "$@"; }

# Which rows run: ROWS minus what the skip switches remove.
declare -A WANT=()
IFS=, read -ra requested <<<"$ROWS"
for row in "${requested[@]}"; do
    case "$row" in
    nginx | public | session | bearer-hit | bearer-miss | apache-oidc | apache-oauth2 | hyper-bare | pingora-bare | upstream) ;;
    *) die "unknown row '$row' (rows: $ALL_ROWS,upstream)" ;;
    esac
    WANT[$row]=1
done
if [[ "$SKIP_PORTCULLIS" == "1" ]]; then
    unset 'WANT[public]' 'WANT[session]' 'WANT[bearer-hit]' 'WANT[bearer-miss]'
fi
if [[ "$SKIP_APACHE" == "1" ]]; then
    unset 'WANT[apache-oidc]' 'WANT[apache-oauth2]'
fi
[[ "$SKIP_PINGORA" != "1" ]] || unset 'WANT[pingora-bare]'
want() { [[ -n "${WANT[$1]:-}" ]]; }
want_any() {
    local r
    for r in "$@"; do
        want "$r" && return 0
    done
    return 1
}
# Minted tokens serve the bearer rows, the Apache rows and the RSS reading.
NEED_TOKENS=0
want_any bearer-hit bearer-miss apache-oidc apache-oauth2 && NEED_TOKENS=1
NEED_PORTCULLIS=0
want_any public session bearer-hit bearer-miss hyper-bare && NEED_PORTCULLIS=1
((NEED_TOKENS == 0)) || NEED_PORTCULLIS=1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

# ---------------------------------------------------------------- tools

find_nginx() {
    command -v nginx 2>/dev/null && return 0
    [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx && return 0
    return 1
}

APACHE_MODULES=/usr/lib/apache2/modules
missing=()
find_nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if want_any apache-oidc apache-oauth2; then
    [[ -x /usr/sbin/apache2 ]] || missing+=(apache2)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
fi
want apache-oidc && { [[ -f "$APACHE_MODULES/mod_auth_openidc.so" ]] || missing+=(libapache2-mod-auth-openidc); }
want apache-oauth2 && { [[ -f "$APACHE_MODULES/mod_oauth2.so" ]] || missing+=(libapache2-mod-oauth2); }
if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and there is no apt-get to install them"
    ((EUID == 0)) || die "missing ${missing[*]}; run as root to let this script apt-get install them"
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
NGINX="$(find_nginx)" || die "nginx not found after install"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick free ports"
CLK_TCK="$(getconf CLK_TCK)" || die "getconf CLK_TCK failed"

# ---------------------------------------------------------------- binaries

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" = /* ]] || target_dir="$REPO_DIR/$target_dir"
if ((NEED_PORTCULLIS == 1)); then
    if [[ -n "${PORTCULLIS_BIN:-}" ]]; then
        BIN="$PORTCULLIS_BIN"
    else
        log "building portcullis (cargo build --release --locked)"
        (cd "$REPO_DIR" && cargo build --release --locked --bin portcullis --example bare_hyper --example mint_tokens) || die "cargo build failed"
        BIN="$target_dir/release/portcullis"
    fi
    [[ -x "$BIN" ]] || die "portcullis binary not found or not executable: $BIN (set PORTCULLIS_BIN)"
    # Servers run from their temp dirs: make the path absolute.
    BIN="$(realpath "$BIN")"
    HYPER_BIN="${HYPER_BIN:-$(dirname "$BIN")/examples/bare_hyper}"
    MINT_BIN="${MINT_BIN:-$(dirname "$BIN")/examples/mint_tokens}"
    [[ -x "$MINT_BIN" ]] || die "token minter not found: $MINT_BIN (cargo build --release --example mint_tokens)"
    if want hyper-bare && [[ ! -x "$HYPER_BIN" ]]; then
        log "notice: no hyper floor at $HYPER_BIN (cargo build --release --example bare_hyper); hyper-bare skipped"
        unset 'WANT[hyper-bare]'
    fi
fi

# The pingora floor lives in its own workspace (benches/pingora-floor) so the
# main build never needs cmake; it is built here, for this row only.
if want pingora-bare && [[ -z "${PINGORA_BIN:-}" ]]; then
    if ! command -v cmake >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && ((EUID == 0)); then
            log "installing cmake with apt-get (pingora's zlib-ng build needs it)"
            export DEBIAN_FRONTEND=noninteractive
            { apt-get update -qq && apt-get install -y -qq cmake >/dev/null; } || log "apt-get install cmake failed"
        fi
    fi
    if command -v cmake >/dev/null 2>&1; then
        log "building the pingora floor (benches/pingora-floor)"
        if (cd "$REPO_DIR" && cargo build --release --locked --manifest-path benches/pingora-floor/Cargo.toml); then
            floor_target="${CARGO_TARGET_DIR:-$REPO_DIR/benches/pingora-floor/target}"
            [[ "$floor_target" = /* ]] || floor_target="$REPO_DIR/$floor_target"
            PINGORA_BIN="$floor_target/release/pingora-floor"
        else
            log "notice: the pingora floor did not build; pingora-bare skipped"
        fi
    else
        log "notice: cmake is missing (pingora's zlib-ng needs it; apt-get install cmake); pingora-bare skipped"
    fi
fi
if want pingora-bare && [[ ! -x "${PINGORA_BIN:-}" ]]; then
    [[ -z "${PINGORA_BIN:-}" ]] || log "notice: no pingora floor at $PINGORA_BIN; pingora-bare skipped"
    unset 'WANT[pingora-bare]'
fi
((${#WANT[@]} > 0)) || die "no rows left to run (ROWS=$ROWS)"

# ---------------------------------------------------------------- cleanup

PIDS=()
TMPDIRS=()

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? pid i d
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Up to ~5 s for a graceful stop, then SIGKILL.
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    # Keep configs and logs when asked to, or when something failed.
    if [[ "$KEEP_TMP" == "1" || "$rc" != "0" ]]; then
        ((${#TMPDIRS[@]} == 0)) || log "kept temp dirs: ${TMPDIRS[*]}"
    else
        for d in "${TMPDIRS[@]}"; do
            rm -rf -- "$d"
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# new_tmpdir NAME: creates a temp dir, registers it for cleanup, sets NEW_DIR.
# (Not meant for $(...): the registration must happen in this shell.)
new_tmpdir() {
    NEW_DIR="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-load-$1.XXXXXX")" || die "mktemp failed"
    TMPDIRS+=("$NEW_DIR")
}

# ---------------------------------------------------------------- ports

# Binds N sockets to 127.0.0.1:0 at once (so the ports differ), prints the ports.
free_ports() {
    python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

read -r PORT_U PORT_N PORT_P PORT_A PORT_B PORT_S PORT_M PORT_MA PORT_X PORT_XA PORT_H PORT_J PORT_O PORT_Y <<<"$(free_ports 14)" || die "could not pick free ports"
[[ -n "${PORT_Y:-}" ]] || die "could not pick free ports"

# ---------------------------------------------------------------- servers

# Row -> what wrk aims at and whose CPU time is counted.
declare -A ROW_URL=() ROW_PID=() ROW_HDR=() ROW_LUA=()

# wait_ready NAME URL PID LOG: polls URL until it answers 200, for at most
# READY_TIMEOUT_S seconds; fails early if PID exits. Prints LOG's tail on failure.
wait_ready() {
    local name="$1" url="$2" pid="$3" logfile="$4"
    local code="000" deadline=$((SECONDS + READY_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before it answered; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 2>/dev/null || true
            die "$name could not be started"
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null)" || true
        [[ "$code" == "200" ]] && return 0
        sleep 0.2
    done
    log "$name did not answer 200 on $url within ${READY_TIMEOUT_S}s (last status: $code); last lines of $logfile:"
    tail -n 30 "$logfile" >&2 2>/dev/null || true
    die "$name could not be started"
}

# The `user` directive only applies (and is only quiet) when the master runs as
# root; then it keeps the workers running as the current user too.
nginx_user_line() {
    if ((EUID == 0)); then
        echo "user $(id -un) $(id -gn);"
    fi
}

# nginx_main_conf DIR: the part of nginx.conf common to both nginx instances.
nginx_main_conf() {
    local dir="$1"
    cat <<EOF
$(nginx_user_line)
worker_processes $WORKERS;
error_log $dir/error.log warn;
pid $dir/nginx.pid;

events {
    worker_connections 4096;
}
EOF
}

# nginx_http_common DIR: http-level settings common to both instances.
nginx_http_common() {
    local dir="$1"
    cat <<EOF
    access_log off;
    default_type text/plain;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # Keep client connections open for the whole run (default closes every 1000 requests).
    keepalive_requests 1000000;
    keepalive_timeout 65s;
EOF
}

# start_nginx NAME DIR: runs nginx in the foreground (daemon off) in the background, pinned.
start_nginx() {
    local name="$1" dir="$2"
    "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >>"$dir/stderr.log" 2>&1 || {
        cat "$dir/stderr.log" "$dir/error.log" >&2 2>/dev/null || true
        die "$name: nginx config test failed"
    }
    on_proxy "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' >>"$dir/stderr.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID="$!"
}

# a. upstream: a small fixed 200 body (and the minted JWKS over https).
new_tmpdir upstream
UP_DIR="$NEW_DIR"
ISSUER="https://machines.bench.example"
if ((NEED_TOKENS == 1)); then
    log "minting machine tokens (1000 RS256, $RSS_TOKENS ES256)"
    "$MINT_BIN" "$UP_DIR" 1000 "$RSS_TOKENS" "$ISSUER" bench >"$UP_DIR/mint.log" 2>&1 || {
        cat "$UP_DIR/mint.log" >&2
        die "mint_tokens failed"
    }
    ONE_TOKEN="$(head -n 1 "$UP_DIR/tokens-RS256.txt")"
    if want_any apache-oidc apache-oauth2; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
            -keyout "$UP_DIR/jwks.key" -out "$UP_DIR/jwks.crt" >/dev/null 2>&1 || die "openssl could not make a certificate"
    fi
fi
{
    nginx_main_conf "$UP_DIR"
    cat <<EOF

http {
$(nginx_http_common "$UP_DIR")

    server {
        listen 127.0.0.1:$PORT_U;
        location / {
            return 200 "ok\n";
        }
    }
$(if [[ -f "$UP_DIR/jwks.crt" ]]; then cat <<JWKS
    # The Apache rows' JWKS over https (both modules fetch only https).
    server {
        listen 127.0.0.1:$PORT_J ssl;
        ssl_certificate $UP_DIR/jwks.crt;
        ssl_certificate_key $UP_DIR/jwks.key;
        location = /jwks.json {
            default_type application/json;
            alias $UP_DIR/jwks.json;
        }
    }
JWKS
fi)
}
EOF
} >"$UP_DIR/nginx.conf"
start_nginx upstream "$UP_DIR"
UP_PID="$LAST_PID"
UP_URL="http://127.0.0.1:$PORT_U/"
wait_ready upstream "$UP_URL" "$UP_PID" "$UP_DIR/error.log"
log "upstream ready on $UP_URL"
ROW_URL[upstream]="$UP_URL" ROW_PID[upstream]="$UP_PID"

# b. nginx as a plain reverse proxy to the upstream.
if want nginx; then
    new_tmpdir nginx-proxy
    NX_DIR="$NEW_DIR"
    {
        nginx_main_conf "$NX_DIR"
        cat <<EOF

http {
$(nginx_http_common "$NX_DIR")

    upstream bench_upstream {
        server 127.0.0.1:$PORT_U;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$PORT_N;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
    } >"$NX_DIR/nginx.conf"
    start_nginx nginx-proxy "$NX_DIR"
    ROW_URL[nginx]="http://127.0.0.1:$PORT_N/" ROW_PID[nginx]="$LAST_PID"
    wait_ready nginx-proxy "${ROW_URL[nginx]}" "$LAST_PID" "$NX_DIR/error.log"
    log "nginx proxy ready on ${ROW_URL[nginx]}"
fi

# c. the floors: hyper and pingora with nothing in them, in front of the upstream.
if want_any hyper-bare pingora-bare; then
    new_tmpdir floors
    FL_DIR="$NEW_DIR"
    for row in hyper-bare pingora-bare; do
        want "$row" || continue
        if [[ "$row" == hyper-bare ]]; then floor_bin="$HYPER_BIN" port="$PORT_B"; else floor_bin="$PINGORA_BIN" port="$PORT_Y"; fi
        on_proxy "$floor_bin" "127.0.0.1:$port" "127.0.0.1:$PORT_U" "$WORKERS" >"$FL_DIR/$row.log" 2>&1 &
        PIDS+=("$!")
        ROW_URL[$row]="http://127.0.0.1:$port/" ROW_PID[$row]="$!"
        wait_ready "$row" "${ROW_URL[$row]}" "$!" "$FL_DIR/$row.log"
        log "$row ready on ${ROW_URL[$row]}"
    done
fi

# d. portcullis instances, all in front of the same upstream.
if want_any public session bearer-hit bearer-miss; then
    new_tmpdir portcullis
    PC_DIR="$NEW_DIR"
    secret="$("$BIN" keygen 2>"$PC_DIR/keygen.err" | awk 'NF { last = $0 } END { print last }')" || true
    secret="${secret//[[:space:]]/}"
    if [[ -z "$secret" ]]; then
        cat "$PC_DIR/keygen.err" >&2 2>/dev/null || true
        die "portcullis keygen printed no secret"
    fi
    [[ "$secret" != *[\"\\]* ]] || die "portcullis keygen printed a secret that needs TOML escaping"
    # PORTCULLIS_<SECTION>__<KEY> variables would override the generated config; drop them.
    unset_args=()
    while IFS= read -r v; do
        unset_args+=(-u "$v")
    done < <(compgen -e | grep '^PORTCULLIS_' || true)
fi

# start_portcullis NAME LOG ARGS...: runs `portcullis ARGS` pinned, from PC_DIR; sets LAST_PID.
start_portcullis() {
    local name="$1" logfile="$2"
    shift 2
    (cd "$PC_DIR" && exec env "${unset_args[@]}" "${PROXY_PIN[@]}" "$BIN" "$@") >"$logfile" 2>&1 &
    PIDS+=("$!")
    LAST_PID="$!"
}

# d1. the whole path space public.
if want public; then
    cat >"$PC_DIR/public.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT_P"
admin_listen = "127.0.0.1:$PORT_A"
public_url = "http://127.0.0.1:$PORT_P"
threads = $WORKERS

[session]
secrets = ["$secret"]

[store]
url = "sqlite://$PC_DIR/public.db"

[[app]]
name = "bench"
upstream = "http://127.0.0.1:$PORT_U"
public_paths = ["/"]
EOF
    start_portcullis public "$PC_DIR/public.log" serve --config "$PC_DIR/public.toml" --log-format json
    ROW_URL[public]="http://127.0.0.1:$PORT_P/" ROW_PID[public]="$LAST_PID"
    wait_ready portcullis-public "${ROW_URL[public]}" "$LAST_PID" "$PC_DIR/public.log"
    log "portcullis (public path) ready on ${ROW_URL[public]}"
fi

# d2. portcullis in demo mode, every path protected: a signed-in session
#     (cookie, session cache hit) is measured. Its worker count follows the
#     pinning (it sizes itself by the CPUs it may run on).
if want session; then
    SESS_LOG="$PC_DIR/session.log"
    start_portcullis session "$SESS_LOG" serve --dev --port "$PORT_S" --upstream "http://127.0.0.1:$PORT_U"
    SESS_PID="$LAST_PID"
    SESS_URL="http://127.0.0.1:$PORT_S/"
    deadline=$((SECONDS + READY_TIMEOUT_S))
    until curl -s -o /dev/null --max-time 1 "${SESS_URL}_auth/sign_in"; do
        kill -0 "$SESS_PID" 2>/dev/null || { tail -n 20 "$SESS_LOG" >&2; die "portcullis --dev exited"; }
        ((SECONDS < deadline)) || die "portcullis --dev did not answer within ${READY_TIMEOUT_S}s"
        sleep 0.2
    done
    # Sign in as alice through the demo provider's form, as a browser would.
    SESSION_COOKIE="$(python3 - "$SESS_URL" <<'PY'
import html.parser, sys, urllib.parse, urllib.request
base = sys.argv[1].rstrip("/")
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None
opener = urllib.request.build_opener(NoRedirect)
def call(url, data=None, cookie=""):
    req = urllib.request.Request(url, data=data, headers={"Cookie": cookie} if cookie else {})
    try:
        r = opener.open(req, timeout=10)
    except urllib.error.HTTPError as e:
        r = e
    return r.status, r.headers, r.read().decode("utf-8", "replace")
def cookies(headers):
    return "; ".join(v.split(";")[0] for v in headers.get_all("Set-Cookie") or [])
_, h, _ = call(base + "/_auth/login/demo?rd=/")
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
print(next(c for c in cookies(h).split("; ") if c.startswith("portcullis=")))
PY
)" || die "could not sign in to portcullis --dev (log: $SESS_LOG)"
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $SESSION_COOKIE" "$SESS_URL")"
    [[ "$code" == 200 ]] || die "session: the signed-in cookie was answered $code (log: $SESS_LOG)"
    ROW_URL[session]="$SESS_URL" ROW_PID[session]="$SESS_PID" ROW_HDR[session]="Cookie: $SESSION_COOKIE"
    log "signed in to portcullis --dev on $SESS_URL; session cookie obtained"
fi

# wrk script: each thread walks its share of a token file; ONCE=1 stops at
# the last token (each token sent once), otherwise it cycles.
# lua_for FILE ONCE OUT: writes a wrk script reading FILE.
lua_for() {
    local file="$1" once="$2" out="$3"
    [[ "$file" != *[\"\\]* ]] || die "token file path needs escaping: $file"
    cat >"$out" <<LUA
local thread_no = 0
function setup(thread)
    thread:set("offset", thread_no)
    thread_no = thread_no + 1
end
function init(args)
    tokens = {}
    for line in io.lines("$file") do
        tokens[#tokens + 1] = line
    end
    stride = $THREADS
    once = $once
    i = offset + 1
end
function request()
    local t
    if i > #tokens then
        if once then
            t = tokens[#tokens]
        else
            i = ((i - 1) % #tokens) + 1
            t = tokens[i]
        end
    else
        t = tokens[i]
    end
    i = i + stride
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. t })
end
LUA
}
if ((NEED_TOKENS == 1)); then
    lua_for "$UP_DIR/tokens-RS256.txt" false "$UP_DIR/rs256-cycle.lua"
    lua_for "$UP_DIR/tokens-ES256.txt" true "$UP_DIR/es256-once.lua"
fi

# d3. portcullis for machine tokens: the same app behind bearer JWTs, keys
#     inline (no fetch on the path). One instance with the verdict cache (hit
#     row, RSS reading), one with it off (miss row: a signature per request).
for variant in hit miss; do
    want "bearer-$variant" || continue
    jwks_inline="$(tr -d '\n' <"$UP_DIR/jwks.json")"
    [[ "$jwks_inline" != *"'"* ]] || die "the minted JWKS contains a quote; it cannot be inlined"
    if [[ "$variant" == hit ]]; then
        port=$PORT_M admin=$PORT_MA entries=100000
    else
        port=$PORT_X admin=$PORT_XA entries=0
    fi
    conf="$PC_DIR/bearer-$variant.toml"
    cat >"$conf" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
public_url = "http://127.0.0.1:$port"
bearer_cache_entries = $entries
threads = $WORKERS

[session]
secrets = ["$secret"]

[store]
url = "sqlite://$PC_DIR/bearer-$variant.db"

[[source]]
slug = "machines"
type = "openidconnect"
issuer = "$ISSUER"
oidc_jwks = '$jwks_inline'

[[app]]
name = "bench"
upstream = "http://127.0.0.1:$PORT_U"
jwt_sources = ["machines"]
jwt_audiences = ["bench"]
[[app.policy]]
on = ["access"]
effect = "allow"
EOF
    start_portcullis "bearer-$variant" "$PC_DIR/bearer-$variant.log" serve --config "$conf" --log-format json
    wait_ready "bearer-$variant" "http://127.0.0.1:$admin/healthz" "$LAST_PID" "$PC_DIR/bearer-$variant.log"
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ONE_TOKEN" "http://127.0.0.1:$port/")"
    [[ "$code" == 200 ]] || die "bearer-$variant: a minted token was answered $code (log: $PC_DIR/bearer-$variant.log)"
    ROW_URL[bearer-$variant]="http://127.0.0.1:$port/" ROW_PID[bearer-$variant]="$LAST_PID"
    if [[ "$variant" == hit ]]; then
        ROW_HDR[bearer-hit]="Authorization: Bearer $ONE_TOKEN"
        BEARER_HIT_ADMIN="$admin"
    else
        ROW_LUA[bearer-miss]="$UP_DIR/rs256-cycle.lua"
    fi
    log "portcullis bearer-$variant ready on ${ROW_URL[bearer-$variant]}"
done

# e. Apache httpd validating the same tokens in front of the same upstream:
#    mod_auth_openidc (OAuth 2.0 resource server mode, JWKS over https) and
#    mod_oauth2 (liboauth2; caches each token's verdict, so one token repeated
#    is its cache-hit path).
# start_apache ROW PORT MODULE_LINE AUTH_LINES: one Apache instance for ROW.
start_apache() {
    local row="$1" port="$2" module="$3" auth="$4"
    local dir ap_user="" url deadline code
    new_tmpdir "$row"
    dir="$NEW_DIR"
    if ((EUID == 0)); then
        # Apache refuses to serve as root: its workers run as www-data (or nobody).
        local ap_as=www-data
        id -u "$ap_as" >/dev/null 2>&1 || ap_as=nobody
        ap_user="User $ap_as
Group $(id -gn "$ap_as")"
        chmod 755 "$dir"
    fi
    cat >"$dir/httpd.conf" <<EOF
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$dir/httpd.pid"
ErrorLog "$dir/error.log"
LogLevel warn
DefaultRuntimeDir "$dir"
Mutex file:$dir default
LoadModule mpm_event_module $APACHE_MODULES/mod_mpm_event.so
LoadModule authn_core_module $APACHE_MODULES/mod_authn_core.so
LoadModule authz_core_module $APACHE_MODULES/mod_authz_core.so
LoadModule authz_user_module $APACHE_MODULES/mod_authz_user.so
LoadModule proxy_module $APACHE_MODULES/mod_proxy.so
LoadModule proxy_http_module $APACHE_MODULES/mod_proxy_http.so
$module
$ap_user
StartServers $WORKERS
ServerLimit $WORKERS
ThreadsPerChild 64
MaxRequestWorkers $((WORKERS * 64))
KeepAlive On
MaxKeepAliveRequests 0
$auth
ProxyPass / http://127.0.0.1:$PORT_U/ keepalive=On
EOF
    /usr/sbin/apache2 -t -f "$dir/httpd.conf" >"$dir/stderr.log" 2>&1 || {
        cat "$dir/stderr.log" >&2
        die "$row: apache config test failed"
    }
    on_proxy /usr/sbin/apache2 -f "$dir/httpd.conf" -DFOREGROUND >>"$dir/stderr.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID="$!"
    url="http://127.0.0.1:$port/"
    deadline=$((SECONDS + READY_TIMEOUT_S))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Authorization: Bearer $ONE_TOKEN" "$url")" == 200 ]]; do
        kill -0 "$LAST_PID" 2>/dev/null || {
            cat "$dir/stderr.log" "$dir/error.log" >&2
            die "$row: apache exited"
        }
        ((SECONDS < deadline)) || {
            tail -n 30 "$dir/error.log" >&2
            die "$row: apache did not accept a minted token within ${READY_TIMEOUT_S}s"
        }
        sleep 0.3
    done
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer x.y.z" "$url")"
    [[ "$code" == 401 ]] || die "$row: apache accepted a bad token (answered $code): its config does not verify"
    ROW_URL[$row]="$url" ROW_PID[$row]="$LAST_PID"
    log "$row ready on $url"
}
if want apache-oidc; then
    start_apache apache-oidc "$PORT_H" "LoadModule auth_openidc_module $APACHE_MODULES/mod_auth_openidc.so" "$(
        cat <<EOF
OIDCCryptoPassphrase bench-only-passphrase
OIDCCacheType shm
OIDCOAuthVerifyJwksUri https://127.0.0.1:$PORT_J/jwks.json
# The bench's own self-signed certificate.
OIDCSSLValidateServer Off
OIDCOAuthSSLValidateServer Off
OIDCOAuthRemoteUserClaim sub
OIDCOAuthAcceptTokenAs header
<Location />
    AuthType oauth20
    Require valid-user
</Location>
EOF
    )"
    ROW_LUA[apache-oidc]="$UP_DIR/rs256-cycle.lua"
fi
if want apache-oauth2; then
    start_apache apache-oauth2 "$PORT_O" "LoadModule oauth2_module $APACHE_MODULES/mod_oauth2.so" "$(
        cat <<EOF
<Location />
    AuthType oauth2
    # The bench's own self-signed certificate; verdicts cached (the default cache).
    OAuth2TokenVerify jwks_uri https://127.0.0.1:$PORT_J/jwks.json jwks_uri.ssl_verify=false
    Require valid-user
</Location>
EOF
    )"
    ROW_HDR[apache-oauth2]="Authorization: Bearer $ONE_TOKEN"
fi

# ---------------------------------------------------------------- measuring

# The rows that run, in this order.
ORDER=()
for row in nginx public session bearer-hit bearer-miss apache-oidc apache-oauth2 hyper-bare pingora-bare upstream; do
    want "$row" && [[ -n "${ROW_URL[$row]:-}" ]] && ORDER+=("$row")
done

declare -A S_RPS=() S_P50=() S_P99=() S_CPU=() S_WAKE=() S_UPCPU=() S_IDLE=() S_STEAL=() NON2XX=() SOCKERR=()
# Each round's req/s and p99 by "row/round", for the ratios within a round.
declare -A R_RPS=() R_P99=()

# wrk latency ("310.00us", "1.20ms", "2.00s", "1.00m") -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (match(v, /^[0-9.]+/) == 0) { exit 1 }
        n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1)
        if (u == "us") f = 0.001
        else if (u == "ms") f = 1
        else if (u == "s") f = 1000
        else if (u == "m") f = 60000
        else if (u == "h") f = 3600000
        else exit 1
        printf "%.4f\n", n * f
    }'
}

# median of the arguments (mean of the two middle values for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk 'NF { v[++n] = $1 } END {
        if (n == 0) exit 1
        if (n % 2) printf "%.4f\n", v[(n + 1) / 2]
        else printf "%.4f\n", (v[n / 2] + v[n / 2 + 1]) / 2
    }'
}

# tree_pids PID: PID and every live descendant.
tree_pids() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2; all[NR] = $1 }
        END {
            print root
            for (i = 1; i <= NR; i++) {
                p = all[i]; q = parent[p]; n = 0
                while (q != "" && q != 0 && q != root && n < 64) { q = parent[q]; n++ }
                if (q == root && p != root) print p
            }
        }'
}

# tree_ticks PID: CPU clock ticks (user + system) of PID and every live
# descendant, including what their reaped children used (cutime, cstime).
tree_ticks() {
    local p
    for p in $(tree_pids "$1"); do
        # comm may hold spaces and parentheses: cut at the last ") ".
        [[ -r "/proc/$p/stat" ]] && sed 's/.*) //' "/proc/$p/stat" 2>/dev/null
    done | awk '{ t += $12 + $13 + $14 + $15 } END { printf "%d\n", t }'
}

# cpu_list LIST: the CPUs a taskset list ("0", "0-3", "0,2-3") names, one a line.
cpu_list() {
    local part i
    local -a parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
            for ((i = BASH_REMATCH[1]; i <= BASH_REMATCH[2]; i++)); do echo "$i"; done
        else
            echo "$part"
        fi
    done
}

# core_ticks: "idle steal total" clock ticks of the proxies' CPUs
# (PROXY_CPUS; every CPU when not pinned) from /proc/stat. Idle counts
# iowait; total is user through steal (guest time is already in user).
core_ticks() {
    local want
    if [[ "$PIN" == "1" ]]; then want="$(cpu_list "$PROXY_CPUS" | tr '\n' ' ')"; else want="all"; fi
    awk -v want=" $want " '
        $1 ~ /^cpu[0-9]+$/ {
            n = substr($1, 4)
            if (want != " all " && index(want, " " n " ") == 0) next
            idle += $5 + $6; steal += $9
            for (i = 2; i <= 9; i++) total += $i
        }
        END { printf "%d %d %d\n", idle, steal, total }' /proc/stat
}

# tree_wakeups PID: voluntary context switches of every thread of PID and
# its live descendants: for the upstream, how often it went to sleep and
# was woken again.
tree_wakeups() {
    local p
    for p in $(tree_pids "$1"); do
        # A process gone meanwhile counts nothing (and stops nothing).
        cat "/proc/$p"/task/*/status 2>/dev/null || true
    done | awk '$1 == "voluntary_ctxt_switches:" { t += $2 } END { printf "%d\n", t }'
}

# run_wrk DURATION URL [extra wrk args...]: prints wrk's output; pinned and bounded.
run_wrk() {
    local dur="$1" url="$2"
    shift 2
    local limit=$(($(duration_s "$dur") + 30))
    timeout --kill-after=5 "$limit" \
        "${LOAD_PIN[@]}" wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d "$dur" "$@" "$url"
}

# row_args ROW: sets WRK_ARGS to the row's extra wrk arguments.
row_args() {
    WRK_ARGS=()
    [[ -z "${ROW_HDR[$1]:-}" ]] || WRK_ARGS+=(-H "${ROW_HDR[$1]}")
    [[ -z "${ROW_LUA[$1]:-}" ]] || WRK_ARGS+=(-s "${ROW_LUA[$1]}")
}

# measure_once ROW ROUND: one wrk run; appends req/s, p50, p99 and CPU µs/request.
measure_once() {
    local row="$1" r="$2" out rps p50 p99 reqs non2xx sockerr before after cpu woke wakes
    local up_before up_after core_before core_after ib sb tb ia sa ta
    row_args "$row"
    before="$(tree_ticks "${ROW_PID[$row]}")"
    woke="$(tree_wakeups "$UP_PID")"
    up_before="$(tree_ticks "$UP_PID")"
    core_before="$(core_ticks)"
    if ! out="$(run_wrk "$DURATION" "${ROW_URL[$row]}" "${WRK_ARGS[@]}" 2>&1)"; then
        log "$row: wrk failed in round $r:"
        printf '%s\n' "$out" >&2
        return 0
    fi
    after="$(tree_ticks "${ROW_PID[$row]}")"
    core_after="$(core_ticks)"
    up_after="$(tree_ticks "$UP_PID")"
    wakes="$(($(tree_wakeups "$UP_PID") - woke))"
    rps="$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$out")"
    p50="$(awk '$1 == "50%" { print $2 }' <<<"$out")"
    p99="$(awk '$1 == "99%" { print $2 }' <<<"$out")"
    reqs="$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")"
    if [[ -z "$rps" || -z "$p50" || -z "$p99" || -z "$reqs" ]] || ! p50="$(to_ms "$p50")" || ! p99="$(to_ms "$p99")"; then
        log "$row: could not parse wrk output in round $r:"
        printf '%s\n' "$out" >&2
        return 0
    fi
    non2xx="$(awk '/^ *Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")"
    sockerr="$(awk '/^ *Socket errors:/ {
        s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s }' <<<"$out")"
    NON2XX[$row]=$((${NON2XX[$row]:-0} + ${non2xx:-0}))
    SOCKERR[$row]=$((${SOCKERR[$row]:-0} + ${sockerr:-0}))
    cpu="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n }')"
    S_RPS[$row]+=" $rps" S_P50[$row]+=" $p50" S_P99[$row]+=" $p99"
    R_RPS[$row/$r]="$rps" R_P99[$row/$r]="$p99"
    [[ -z "$cpu" ]] || S_CPU[$row]+=" $cpu"
    [[ "$row" == upstream ]] || S_WAKE[$row]+=" $(awk -v w="$wakes" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.3f", w / n }')"
    [[ "$row" == upstream ]] || S_UPCPU[$row]+=" $(awk -v d="$((up_after - up_before))" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n }')"
    # The proxies' cores, idle and stolen by the hypervisor, as a share of
    # their time over the run: a row that leaves its core idle is held up
    # by waiting, not by the CPU it spends.
    read -r ib sb tb <<<"$core_before"
    read -r ia sa ta <<<"$core_after"
    S_IDLE[$row]+=" $(awk -v i="$((ia - ib))" -v t="$((ta - tb))" 'BEGIN { if (t > 0) printf "%.1f", 100 * i / t }')"
    S_STEAL[$row]+=" $(awk -v s="$((sa - sb))" -v t="$((ta - tb))" 'BEGIN { if (t > 0) printf "%.1f", 100 * s / t }')"
    log "$row: round $r: $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU ${cpu:-?} µs/request"
}

log "pinning: $(if [[ "$PIN" == 1 ]]; then echo "proxies and upstream on CPUs $PROXY_CPUS ($WORKERS workers), wrk on CPUs $LOAD_CPUS"; else echo "none ($WORKERS workers)"; fi)"
log "rows: ${ORDER[*]}"
if [[ "$WARMUP" != "0" ]]; then
    for row in "${ORDER[@]}"; do
        log "$row: warm-up $WARMUP"
        row_args "$row"
        run_wrk "$WARMUP" "${ROW_URL[$row]}" "${WRK_ARGS[@]}" >/dev/null 2>&1 || true
    done
fi
# Interleaved: each round runs every row once; the starting row rotates so
# no row always runs first (or right after the same neighbour).
n_rows=${#ORDER[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < n_rows; k++)); do
        row="${ORDER[$(((k + r - 1) % n_rows))]}"
        log "round $r/$ROUNDS: $row ($DURATION, wrk -t$THREADS -c$CONNECTIONS) -> ${ROW_URL[$row]}"
        measure_once "$row" "$r"
    done
done

declare -A RPS=() P50=() P99=() CPU=() WAKE=() UPCPU=() IDLE=() STEAL=()
for row in "${ORDER[@]}"; do
    # shellcheck disable=SC2086 # the sample lists are space-separated numbers
    {
        RPS[$row]="$(median ${S_RPS[$row]:-})" || RPS[$row]=""
        P50[$row]="$(median ${S_P50[$row]:-})" || P50[$row]=""
        P99[$row]="$(median ${S_P99[$row]:-})" || P99[$row]=""
        CPU[$row]="$(median ${S_CPU[$row]:-})" || CPU[$row]=""
        WAKE[$row]="$(median ${S_WAKE[$row]:-})" || WAKE[$row]=""
        UPCPU[$row]="$(median ${S_UPCPU[$row]:-})" || UPCPU[$row]=""
        IDLE[$row]="$(median ${S_IDLE[$row]:-})" || IDLE[$row]=""
        STEAL[$row]="$(median ${S_STEAL[$row]:-})" || STEAL[$row]=""
    }
done

# RSS of the bearer-hit instance before and after RSS_TOKENS distinct tokens were verified and cached.
if ((RSS_TOKENS > 0)) && [[ -n "${ROW_PID[bearer-hit]:-}" ]]; then
    rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
    RSS_BEFORE="$(rss_kib "${ROW_PID[bearer-hit]}")"
    log "sending $RSS_TOKENS distinct ES256 tokens once each to bearer-hit"
    run_wrk 40s "${ROW_URL[bearer-hit]}" -s "$UP_DIR/es256-once.lua" >"$PC_DIR/rss-wrk.log" 2>&1 || true
    RSS_AFTER="$(rss_kib "${ROW_PID[bearer-hit]}")"
    RSS_CACHED="$(curl -s "http://127.0.0.1:$BEARER_HIT_ADMIN/metrics" | awk '$1 == "portcullis_bearer_cache_entries" { print $2 }')"
fi

# ---------------------------------------------------------------- report

fmt() { # fmt VALUE DECIMALS -> number or n/a
    if [[ -n "$1" ]]; then
        awk -v v="$1" -v d="$2" 'BEGIN { printf("%." d "f", v) }'
    else
        printf 'n/a'
    fi
}
# ratio A B -> A/B with 2 decimals, or empty if either is missing or B is 0.
ratio() {
    [[ -n "$1" && -n "$2" ]] || return 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b }'
}
# xfmt RATIO -> "0.93x" or "-"
xfmt() { if [[ -n "$1" ]]; then printf '%sx' "$1"; else printf -- '-'; fi; }

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
echo
echo "portcullis load benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: ${cpu_model:-unknown CPU}, $NPROC cores, $(uname -sr)"
echo "command: $COMMAND_LINE"
if [[ "$PIN" == 1 ]]; then
    echo "pinning: proxy and upstream on CPUs $PROXY_CPUS ($WORKERS workers each), wrk on CPUs $LOAD_CPUS"
else
    echo "pinning: none ($WORKERS workers each)"
fi
echo "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved round(s)"
echo "CPU: the proxy process tree's utime+stime over each run / requests (upstream not counted)"
echo "up wake/r: the upstream's voluntary context switches over each run / requests (how often it slept and was woken)"
echo "up CPU/r: the upstream's utime+stime / requests; idle %, steal %: the proxies' CPUs ($(if [[ "$PIN" == 1 ]]; then echo "$PROXY_CPUS"; else echo all; fi)) idle and stolen over each run, from /proc/stat"
echo
NX_RPS="${RPS[nginx]:-}" NX_P99="${P99[nginx]:-}" NX_CPU="${CPU[nginx]:-}"
printf '%-14s %10s %8s %9s %9s %8s %9s %8s %9s %8s %6s %7s\n' "row" "req/s" "vs nginx" "p50(ms)" "p99(ms)" "p99 vs" "CPU us/r" "CPU vs" "up wake/r" "up CPU/r" "idle %" "steal %"
for row in "${ORDER[@]}"; do
    printf '%-14s %10s %8s %9s %9s %8s %9s %8s %9s %8s %6s %7s\n' "$row" \
        "$(fmt "${RPS[$row]}" 0)" "$(xfmt "$(ratio "${RPS[$row]}" "$NX_RPS")")" \
        "$(fmt "${P50[$row]}" 3)" "$(fmt "${P99[$row]}" 3)" "$(xfmt "$(ratio "${P99[$row]}" "$NX_P99")")" \
        "$(fmt "${CPU[$row]}" 1)" "$(xfmt "$(ratio "${CPU[$row]}" "$NX_CPU")")" "$(fmt "${WAKE[$row]}" 2)" \
        "$(fmt "${UPCPU[$row]}" 1)" "$(fmt "${IDLE[$row]}" 1)" "$(fmt "${STEAL[$row]}" 1)"
done
for row in "${ORDER[@]}"; do
    if ((${NON2XX[$row]:-0} > 0 || ${SOCKERR[$row]:-0} > 0)); then
        echo "warning: $row: ${NON2XX[$row]:-0} non-2xx/3xx responses, ${SOCKERR[$row]:-0} socket errors (all rounds)"
    fi
done

# check LABEL OP VALUE TARGET: one target line; PASS/MISS on the printed ratio.
check() {
    local label="$1" op="$2" value="$3" target="$4" verdict="n/a"
    if [[ -n "$value" ]]; then
        verdict="$(awk -v op="$op" -v v="$value" -v t="$target" 'BEGIN {
            ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0)
            print (ok ? "PASS" : "MISS") }')"
    fi
    printf '  %-44s %8s   target %s %-5s %s\n' "$label" "$(xfmt "$value")" "$op" "$target" "$verdict"
}
echo
echo "targets (ratios of req/s unless said; issue 11):"
check "public / nginx" ">=" "$(ratio "${RPS[public]:-}" "$NX_RPS")" 0.90
check "session / nginx" ">=" "$(ratio "${RPS[session]:-}" "$NX_RPS")" 0.85
check "bearer-hit / nginx" ">=" "$(ratio "${RPS[bearer-hit]:-}" "$NX_RPS")" 0.85
check "bearer-hit / apache-oidc" ">=" "$(ratio "${RPS[bearer-hit]:-}" "${RPS[apache-oidc]:-}")" 6
check "bearer-hit / apache-oauth2" ">=" "$(ratio "${RPS[bearer-hit]:-}" "${RPS[apache-oauth2]:-}")" 4
check "bearer-miss / apache-oidc" ">=" "$(ratio "${RPS[bearer-miss]:-}" "${RPS[apache-oidc]:-}")" 4
check "p99 public / nginx (c$CONNECTIONS)" "<=" "$(ratio "${P99[public]:-}" "$NX_P99")" 1.20
check "p99 session / nginx (c$CONNECTIONS)" "<=" "$(ratio "${P99[session]:-}" "$NX_P99")" 1.20
check "p99 bearer-hit / nginx (c$CONNECTIONS)" "<=" "$(ratio "${P99[bearer-hit]:-}" "$NX_P99")" 1.20
if [[ -n "${RSS_AFTER:-}" ]]; then
    rss_mib="$(awk -v k="$RSS_AFTER" 'BEGIN { printf "%.1f", k / 1024 }')"
    rss_ok="$(awk -v m="$rss_mib" 'BEGIN { print (m + 0 < 64 ? "PASS" : "MISS") }')"
    printf '  %-44s %8s   target <  64 MiB %s\n' "bearer-hit RSS after $RSS_TOKENS tokens" "$rss_mib MiB" "$rss_ok"
    printf '  (before: %s MiB; %s verdicts cached)\n' "$(awk -v k="$RSS_BEFORE" 'BEGIN { printf "%.1f", k / 1024 }')" "${RSS_CACHED:-?}"
else
    printf '  %-44s %8s\n' "bearer-hit RSS after RSS_TOKENS tokens" "n/a"
fi
echo
echo "against the floors (what portcullis adds over its engine):"
for floor in hyper-bare pingora-bare; do
    [[ -n "${RPS[$floor]:-}" ]] || continue
    if [[ -n "${RPS[public]:-}" ]]; then
        printf '  public / %-13s req/s %6s   CPU µs/request %6s\n' "$floor" \
            "$(xfmt "$(ratio "${RPS[public]}" "${RPS[$floor]}")")" "$(xfmt "$(ratio "${CPU[public]:-}" "${CPU[$floor]}")")"
    fi
    printf '  %-22s req/s %6s   CPU µs/request %6s\n' "$floor / nginx" \
        "$(xfmt "$(ratio "${RPS[$floor]}" "$NX_RPS")")" "$(xfmt "$(ratio "${CPU[$floor]}" "$NX_CPU")")"
done
# Each row against nginx in the same round: on a shared machine whose speed
# drifts from round to round (seen here: nginx 71-85k req/s over five
# rounds of one run), a round that is slow for nginx is slow for the row
# beside it too; the spread shows how far one round can be trusted.
if [[ -n "$NX_RPS" ]]; then
    echo
    echo "each round against that round's nginx (median of the rounds' ratios, min-max):"
    for row in "${ORDER[@]}"; do
        [[ "$row" != nginx ]] || continue
        for metric in req/s p99; do
            list=""
            for ((r = 1; r <= ROUNDS; r++)); do
                if [[ "$metric" == req/s ]]; then
                    a="${R_RPS[$row/$r]:-}" b="${R_RPS[nginx/$r]:-}"
                else
                    a="${R_P99[$row/$r]:-}" b="${R_P99[nginx/$r]:-}"
                fi
                q="$(ratio "$a" "$b")"
                [[ -z "$q" ]] || list+=" $q"
            done
            [[ -n "$list" ]] || continue
            # shellcheck disable=SC2086 # a space-separated list of ratios
            printf '  %-14s %-6s %6s  (%s-%s over %d rounds)\n' "$row" "$metric" \
                "$(xfmt "$(fmt "$(median $list)" 2)")" \
                "$(printf '%s\n' $list | sort -g | head -1)" "$(printf '%s\n' $list | sort -g | tail -1)" \
                "$(wc -w <<<"$list")"
        done
    done
fi
# What a proxy as fast as nginx, with no authentication, would score against
# the Apache rows: the upstream shares the proxy's core, so no row goes far
# past nginx's req/s, and a bearer-hit / Apache target above these ratios
# asks for a proxy faster than nginx itself.
if [[ -n "$NX_RPS" && -n "${RPS[apache-oidc]:-}${RPS[apache-oauth2]:-}" ]]; then
    echo
    echo "the Apache rows against nginx (what a proxy as fast as nginx would score):"
    for ap in apache-oidc apache-oauth2; do
        [[ -n "${RPS[$ap]:-}" ]] || continue
        printf '  %-22s req/s %6s\n' "nginx / $ap" "$(xfmt "$(ratio "$NX_RPS" "${RPS[$ap]}")")"
    done
    # The same comparison by each proxy's own CPU per request, which the
    # shared upstream does not cap: how much cheaper a verdict is here.
    echo "the bearer rows against Apache by CPU per request (Apache's µs / ours):"
    for pair in bearer-hit:apache-oidc bearer-hit:apache-oauth2 bearer-miss:apache-oidc; do
        ours="${pair%%:*}" ap="${pair#*:}"
        [[ -n "${CPU[$ours]:-}" && -n "${CPU[$ap]:-}" ]] || continue
        printf '  %-27s CPU %6s\n' "$ours / $ap" "$(xfmt "$(ratio "${CPU[$ap]}" "${CPU[$ours]}")")"
    done
fi
exit 0
