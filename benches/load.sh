#!/usr/bin/env bash
# Load benchmark: portcullis against nginx, both as reverse proxies in front of
# the same nginx upstream, all on 127.0.0.1.
#
# Usage:
#   benches/load.sh [--skip-portcullis]
#
# Environment (all optional):
#   THREADS=2 CONNECTIONS=64 DURATION=10s ROUNDS=3   wrk settings, same for every row
#   WARMUP=2s              untimed wrk run before each row ("0" turns it off)
#   PORTCULLIS_BIN=PATH    use this binary instead of `cargo build --release --locked`
#   CARGO_TARGET_DIR=DIR   honoured when building (binary: DIR/release/portcullis)
#   SKIP_PORTCULLIS=1      same as --skip-portcullis: only the nginx rows
#   KEEP_TMP=1             keep the temp dirs (configs, logs); they are always kept on failure
#   SKIP_APACHE=1          no apache-oidc row (it needs apache2 and libapache2-mod-auth-openidc)
#   RSS_TOKENS=100000      distinct tokens cached before the RSS reading ("0" skips it)
#
# Rows: upstream-direct, nginx-proxy, pingora-bare, portcullis-public,
# portcullis-session, and the machine-token rows: bearer-hit (one RS256 token
# repeated: verdict cache hit), bearer-miss (1000 distinct RS256 tokens with
# the verdict cache off: every request verifies a signature) and apache-oidc
# (Apache httpd + mod_auth_openidc, `AuthType oauth20` with
# OIDCOAuthVerifyJwksUri, verifying the same 1000 tokens). Also reported: the
# bearer-hit gateway's RSS before and after RSS_TOKENS distinct ES256 tokens
# were verified and cached. Each value is the median over ROUNDS runs. The script prints the portcullis/nginx ratios and
# whether they meet the targets, but exits 0 whenever the measurements ran:
# it is a benchmark, not a test. It exits non-zero only if something could not
# be installed, built or started.
#
# Every process binds 127.0.0.1 on a port chosen at run time and is stopped by
# the EXIT trap. Every wait is bounded.

set -euo pipefail

THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2s}"
SKIP_PORTCULLIS="${SKIP_PORTCULLIS:-0}"
KEEP_TMP="${KEEP_TMP:-0}"
SKIP_APACHE="${SKIP_APACHE:-0}"
RSS_TOKENS="${RSS_TOKENS:-100000}"

# Targets for portcullis-public relative to nginx-proxy.
TARGET_RPS_RATIO="0.90" # throughput at least this fraction of nginx's
TARGET_P99_RATIO="1.20" # p99 latency at most this multiple of nginx's

READY_TIMEOUT_S=20 # how long a server may take to answer

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    printf '[load] error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

for arg in "$@"; do
    case "$arg" in
    --skip-portcullis) SKIP_PORTCULLIS=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

is_posint() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_posint "$THREADS" || die "THREADS must be a positive integer, got '$THREADS'"
is_posint "$CONNECTIONS" || die "CONNECTIONS must be a positive integer, got '$CONNECTIONS'"
is_posint "$ROUNDS" || die "ROUNDS must be a positive integer, got '$ROUNDS'"
((ROUNDS <= 100)) || die "ROUNDS must be at most 100"

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
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
APACHE_MODULES=/usr/lib/apache2/modules
if [[ "$SKIP_APACHE" != "1" && "$SKIP_PORTCULLIS" != "1" ]]; then
    [[ -x /usr/sbin/apache2 ]] || missing+=(apache2)
    [[ -f "$APACHE_MODULES/mod_auth_openidc.so" ]] || missing+=(libapache2-mod-auth-openidc)
fi
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

# ---------------------------------------------------------------- portcullis binary

if [[ "$SKIP_PORTCULLIS" != "1" ]]; then
    if [[ -n "${PORTCULLIS_BIN:-}" ]]; then
        BIN="$PORTCULLIS_BIN"
    else
        log "building portcullis (cargo build --release --locked)"
        (cd "$REPO_DIR" && cargo build --release --locked --bin portcullis --example bare_proxy --example mint_tokens) || die "cargo build failed"
        target_dir="${CARGO_TARGET_DIR:-target}"
        [[ "$target_dir" = /* ]] || target_dir="$REPO_DIR/$target_dir"
        BIN="$target_dir/release/portcullis"
    fi
    [[ -x "$BIN" ]] || die "portcullis binary not found or not executable: $BIN (set PORTCULLIS_BIN, or SKIP_PORTCULLIS=1)"
    # Servers run from their temp dirs: make the path absolute.
    BIN="$(realpath "$BIN")"
    # The pingora baseline sits next to the binary (examples/bare_proxy.rs); optional.
    BARE_BIN="${BARE_BIN:-$(dirname "$BIN")/examples/bare_proxy}"
    MINT_BIN="${MINT_BIN:-$(dirname "$BIN")/examples/mint_tokens}"
    [[ -x "$MINT_BIN" ]] || die "token minter not found: $MINT_BIN (cargo build --release --example mint_tokens)"
fi

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

read -r PORT_U PORT_N PORT_P PORT_A PORT_B PORT_S PORT_M PORT_MA PORT_X PORT_XA PORT_H PORT_J <<<"$(free_ports 12)" || die "could not pick free ports"
[[ -n "${PORT_H:-}" ]] || die "could not pick free ports"

# ---------------------------------------------------------------- servers

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

NPROC="$(nproc)"

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
worker_processes $NPROC;
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

# start_nginx NAME DIR: runs nginx in the foreground (daemon off) in the background.
start_nginx() {
    local name="$1" dir="$2"
    "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >>"$dir/stderr.log" 2>&1 || {
        cat "$dir/stderr.log" "$dir/error.log" >&2 2>/dev/null || true
        die "$name: nginx config test failed"
    }
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' >>"$dir/stderr.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID="$!"
}

# a. upstream: a small fixed 200 body (and the minted JWKS).
new_tmpdir upstream
UP_DIR="$NEW_DIR"
ISSUER="https://machines.bench.example"
if [[ "$SKIP_PORTCULLIS" != "1" ]]; then
    log "minting machine tokens (1000 RS256, $RSS_TOKENS ES256)"
    "$MINT_BIN" "$UP_DIR" 1000 "$RSS_TOKENS" "$ISSUER" bench >"$UP_DIR/mint.log" 2>&1 || {
        cat "$UP_DIR/mint.log" >&2
        die "mint_tokens failed"
    }
    ONE_TOKEN="$(head -n 1 "$UP_DIR/tokens-RS256.txt")"
    if [[ "$SKIP_APACHE" != "1" ]]; then
        command -v openssl >/dev/null 2>&1 || die "openssl is needed for the apache-oidc row's https JWKS (or SKIP_APACHE=1)"
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
    # The machine-token rows' JWKS over https (mod_auth_openidc fetches only https).
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

# b. nginx as a plain reverse proxy to the upstream.
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
NX_PID="$LAST_PID"
NX_URL="http://127.0.0.1:$PORT_N/"
wait_ready nginx-proxy "$NX_URL" "$NX_PID" "$NX_DIR/error.log"
log "nginx proxy ready on $NX_URL"

# c. portcullis in front of the upstream; the whole path space is public.
if [[ "$SKIP_PORTCULLIS" != "1" ]]; then
    new_tmpdir portcullis
    PC_DIR="$NEW_DIR"
    secret="$("$BIN" keygen 2>"$PC_DIR/keygen.err" | awk 'NF { last = $0 } END { print last }')" || true
    secret="${secret//[[:space:]]/}"
    if [[ -z "$secret" ]]; then
        cat "$PC_DIR/keygen.err" >&2 2>/dev/null || true
        die "portcullis keygen printed no secret"
    fi
    [[ "$secret" != *[\"\\]* ]] || die "portcullis keygen printed a secret that needs TOML escaping"
    PC_CONF="$PC_DIR/portcullis.toml"
    cat >"$PC_CONF" <<EOF
[server]
listen = "127.0.0.1:$PORT_P"
admin_listen = "127.0.0.1:$PORT_A"
public_url = "http://127.0.0.1:$PORT_P"

[session]
secrets = ["$secret"]

[store]
url = "sqlite://$PC_DIR/portcullis.db"

[[app]]
name = "bench"
upstream = "http://127.0.0.1:$PORT_U"
public_paths = ["/"]
EOF
    # PORTCULLIS_<SECTION>__<KEY> variables would override the generated config; drop them.
    unset_args=()
    while IFS= read -r v; do
        unset_args+=(-u "$v")
    done < <(compgen -e | grep '^PORTCULLIS_' || true)
    PC_LOG="$PC_DIR/portcullis.log"
    (cd "$PC_DIR" && exec env "${unset_args[@]}" "$BIN" serve --config "$PC_CONF" --log-format json) >"$PC_LOG" 2>&1 &
    PIDS+=("$!")
    PC_PID="$!"
    PC_URL="http://127.0.0.1:$PORT_P/"
    wait_ready portcullis "$PC_URL" "$PC_PID" "$PC_LOG"
    log "portcullis ready on $PC_URL"

    # d. pingora with nothing but a fixed peer: the framework's own ceiling.
    if [[ -x "$BARE_BIN" ]]; then
        BARE_LOG="$PC_DIR/bare.log"
        "$BARE_BIN" "127.0.0.1:$PORT_B" "127.0.0.1:$PORT_U" "$NPROC" >"$BARE_LOG" 2>&1 &
        PIDS+=("$!")
        BARE_URL="http://127.0.0.1:$PORT_B/"
        wait_ready pingora-bare "$BARE_URL" "$!" "$BARE_LOG"
        log "pingora baseline ready on $BARE_URL"
    else
        log "no pingora baseline at $BARE_BIN (cargo build --release --example bare_proxy); row skipped"
    fi

    # e. portcullis in demo mode in front of the same upstream, every path
    #    protected: a signed-in session (cookie, cache hit) is measured.
    SESS_LOG="$PC_DIR/session.log"
    (cd "$PC_DIR" && exec env "${unset_args[@]}" "$BIN" serve --dev --port "$PORT_S" --upstream "http://127.0.0.1:$PORT_U") >"$SESS_LOG" 2>&1 &
    PIDS+=("$!")
    SESS_PID="$!"
    SESS_URL="http://127.0.0.1:$PORT_S/"
    deadline=$((SECONDS + READY_TIMEOUT_S))
    until curl -s -o /dev/null "${SESS_URL}_auth/sign_in"; do
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
    log "signed in to portcullis --dev; session cookie obtained"
fi

# f. portcullis for machine tokens: the same app behind bearer JWTs, keys
#    inline (no fetch on the path). One instance with the verdict cache (hit
#    row, RSS reading), one with it off (miss row: a signature per request).
if [[ "$SKIP_PORTCULLIS" != "1" ]]; then
    jwks_inline="$(tr -d '\n' <"$UP_DIR/jwks.json")"
    [[ "$jwks_inline" != *"'"* ]] || die "the minted JWKS contains a quote; it cannot be inlined"
    for variant in hit miss; do
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
EOF
        (cd "$PC_DIR" && exec env "${unset_args[@]}" "$BIN" serve --config "$conf" --log-format json) >"$PC_DIR/bearer-$variant.log" 2>&1 &
        PIDS+=("$!")
        [[ "$variant" != hit ]] || BEARER_HIT_PID="$!"
        wait_ready "bearer-$variant" "http://127.0.0.1:$admin/healthz" "$!" "$PC_DIR/bearer-$variant.log"
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ONE_TOKEN" "http://127.0.0.1:$port/")"
        [[ "$code" == 200 ]] || die "bearer-$variant: a minted token was answered $code (log: $PC_DIR/bearer-$variant.log)"
    done
    BEARER_HIT_URL="http://127.0.0.1:$PORT_M/"
    BEARER_MISS_URL="http://127.0.0.1:$PORT_X/"
    log "portcullis bearer instances ready (hit on $PORT_M, miss on $PORT_X)"

    # g. Apache httpd + mod_auth_openidc validating the same tokens (OAuth 2.0
    #    resource server mode) in front of the same upstream.
    if [[ "$SKIP_APACHE" != "1" ]]; then
        new_tmpdir apache
        AP_DIR="$NEW_DIR"
        ap_user=""
        if ((EUID == 0)); then
            # Apache refuses to serve as root: its workers run as www-data (or nobody).
            ap_as=www-data
            id -u "$ap_as" >/dev/null 2>&1 || ap_as=nobody
            ap_user="User $ap_as
Group $(id -gn "$ap_as")"
            chmod 755 "$AP_DIR"
        fi
        cat >"$AP_DIR/httpd.conf" <<EOF
ServerRoot "$AP_DIR"
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT_H
PidFile "$AP_DIR/httpd.pid"
ErrorLog "$AP_DIR/error.log"
LogLevel warn
DefaultRuntimeDir "$AP_DIR"
Mutex file:$AP_DIR default
LoadModule mpm_event_module $APACHE_MODULES/mod_mpm_event.so
LoadModule authn_core_module $APACHE_MODULES/mod_authn_core.so
LoadModule authz_core_module $APACHE_MODULES/mod_authz_core.so
LoadModule authz_user_module $APACHE_MODULES/mod_authz_user.so
LoadModule proxy_module $APACHE_MODULES/mod_proxy.so
LoadModule proxy_http_module $APACHE_MODULES/mod_proxy_http.so
LoadModule auth_openidc_module $APACHE_MODULES/mod_auth_openidc.so
$ap_user
StartServers $NPROC
ServerLimit $NPROC
ThreadsPerChild 64
MaxRequestWorkers $((NPROC * 64))
KeepAlive On
MaxKeepAliveRequests 0
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
ProxyPass / http://127.0.0.1:$PORT_U/ keepalive=On
EOF
        /usr/sbin/apache2 -t -f "$AP_DIR/httpd.conf" >"$AP_DIR/stderr.log" 2>&1 || {
            cat "$AP_DIR/stderr.log" >&2
            die "apache config test failed"
        }
        /usr/sbin/apache2 -f "$AP_DIR/httpd.conf" -DFOREGROUND >>"$AP_DIR/stderr.log" 2>&1 &
        PIDS+=("$!")
        AP_PID="$!"
        APACHE_URL="http://127.0.0.1:$PORT_H/"
        deadline=$((SECONDS + READY_TIMEOUT_S))
        until [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ONE_TOKEN" "$APACHE_URL")" == 200 ]]; do
            kill -0 "$AP_PID" 2>/dev/null || {
                cat "$AP_DIR/stderr.log" "$AP_DIR/error.log" >&2
                die "apache exited"
            }
            ((SECONDS < deadline)) || {
                tail -n 30 "$AP_DIR/error.log" >&2
                die "apache did not accept a minted token within ${READY_TIMEOUT_S}s"
            }
            sleep 0.3
        done
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer x.y.z" "$APACHE_URL")"
        [[ "$code" == 401 ]] || die "apache accepted a bad token (answered $code): its config does not verify"
        log "apache + mod_auth_openidc ready on $APACHE_URL"
    fi

    # wrk script: each thread walks its share of a token file; ONCE=1 stops at
    # the last token (each token sent once), otherwise it cycles.
    cat >"$PC_DIR/tokens.lua" <<'LUA'
local thread_no = 0
function setup(thread)
    thread:set("offset", thread_no)
    thread_no = thread_no + 1
end
function init(args)
    tokens = {}
    for line in io.lines(os.getenv("TOKENS_FILE")) do
        tokens[#tokens + 1] = line
    end
    stride = tonumber(os.getenv("WRK_THREADS"))
    once = os.getenv("ONCE") == "1"
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
fi

# ---------------------------------------------------------------- measuring

ROWS=()
declare -A RPS=() P50=() P99=() NON2XX=() SOCKERR=()

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
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) printf "%.4f\n", v[(NR + 1) / 2]
        else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

# run_wrk DURATION URL [extra wrk args...]: prints wrk's output; bounded by timeout.
run_wrk() {
    local dur="$1" url="$2"
    shift 2
    local limit=$(($(duration_s "$dur") + 30))
    timeout --kill-after=5 "$limit" \
        wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d "$dur" "$@" "$url"
}

# measure NAME URL [extra wrk args...]: ROUNDS wrk runs against URL with the
# common settings; stores the medians of req/s, p50 and p99 under NAME.
# Extra args go to wrk, e.g. -H "Cookie: s=..." or -H "Authorization: Bearer ...".
measure() {
    local name="$1" url="$2"
    shift 2
    local r out rps p50 p99 non2xx sockerr
    local -a rps_all=() p50_all=() p99_all=()
    local non2xx_total=0 sockerr_total=0

    ROWS+=("$name")
    if [[ "$WARMUP" != "0" ]]; then
        log "$name: warm-up $WARMUP"
        run_wrk "$WARMUP" "$url" "$@" >/dev/null 2>&1 || true
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        log "$name: round $r/$ROUNDS ($DURATION, $THREADS threads, $CONNECTIONS connections) -> $url"
        if ! out="$(run_wrk "$DURATION" "$url" "$@" 2>&1)"; then
            log "$name: wrk failed in round $r:"
            printf '%s\n' "$out" >&2
            continue
        fi
        rps="$(awk '$1 == "Requests/sec:" { print $2 }' <<<"$out")"
        p50="$(awk '$1 == "50%" { print $2 }' <<<"$out")"
        p99="$(awk '$1 == "99%" { print $2 }' <<<"$out")"
        if [[ -z "$rps" || -z "$p50" || -z "$p99" ]] || ! p50="$(to_ms "$p50")" || ! p99="$(to_ms "$p99")"; then
            log "$name: could not parse wrk output in round $r:"
            printf '%s\n' "$out" >&2
            continue
        fi
        non2xx="$(awk '/^ *Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")"
        sockerr="$(awk '/^ *Socket errors:/ {
            s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s }' <<<"$out")"
        non2xx_total=$((non2xx_total + ${non2xx:-0}))
        sockerr_total=$((sockerr_total + ${sockerr:-0}))
        rps_all+=("$rps")
        p50_all+=("$p50")
        p99_all+=("$p99")
        log "$name: round $r: $rps req/s, p50 ${p50} ms, p99 ${p99} ms"
    done

    NON2XX[$name]="$non2xx_total"
    SOCKERR[$name]="$sockerr_total"
    if ((${#rps_all[@]} == 0)); then
        RPS[$name]="" P50[$name]="" P99[$name]=""
        return 0
    fi
    RPS[$name]="$(median "${rps_all[@]}")"
    P50[$name]="$(median "${p50_all[@]}")"
    P99[$name]="$(median "${p99_all[@]}")"
}

measure upstream-direct "$UP_URL"
measure nginx-proxy "$NX_URL"
if [[ "$SKIP_PORTCULLIS" != "1" ]]; then
    [[ -z "${BARE_URL:-}" ]] || measure pingora-bare "$BARE_URL"
    measure portcullis-public "$PC_URL"
    measure portcullis-session "$SESS_URL" -H "Cookie: $SESSION_COOKIE"
    measure bearer-hit "$BEARER_HIT_URL" -H "Authorization: Bearer $ONE_TOKEN"
    export TOKENS_FILE="$UP_DIR/tokens-RS256.txt" WRK_THREADS="$THREADS" ONCE=0
    measure bearer-miss "$BEARER_MISS_URL" -s "$PC_DIR/tokens.lua"
    [[ -z "${APACHE_URL:-}" ]] || measure apache-oidc "$APACHE_URL" -s "$PC_DIR/tokens.lua"

    # RSS of the hit instance before and after RSS_TOKENS distinct tokens were verified and cached.
    if ((RSS_TOKENS > 0)); then
        rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
        RSS_BEFORE="$(rss_kib "$BEARER_HIT_PID")"
        export TOKENS_FILE="$UP_DIR/tokens-ES256.txt" ONCE=1
        log "sending $RSS_TOKENS distinct ES256 tokens once each to bearer-hit"
        run_wrk 40s "$BEARER_HIT_URL" -s "$PC_DIR/tokens.lua" >"$PC_DIR/rss-wrk.log" 2>&1 || true
        RSS_AFTER="$(rss_kib "$BEARER_HIT_PID")"
        RSS_CACHED="$(curl -s "http://127.0.0.1:$PORT_MA/metrics" | awk '$1 == "portcullis_bearer_cache_entries" { print $2 }')"
    fi
fi

# ---------------------------------------------------------------- report

fmt() { # fmt VALUE DECIMALS -> number or n/a
    if [[ -n "$1" ]]; then
        awk -v v="$1" -v d="$2" 'BEGIN { printf("%." d "f", v) }'
    else
        printf 'n/a'
    fi
}

echo
echo "portcullis load benchmark: $NPROC cores, nginx worker_processes $NPROC, wrk -t $THREADS -c $CONNECTIONS -d $DURATION, median of $ROUNDS round(s)"
echo
printf '%-20s %12s %10s %10s\n' "row" "req/s" "p50(ms)" "p99(ms)"
for name in "${ROWS[@]}"; do
    printf '%-20s %12s %10s %10s\n' "$name" "$(fmt "${RPS[$name]}" 0)" "$(fmt "${P50[$name]}" 3)" "$(fmt "${P99[$name]}" 3)"
done
for name in "${ROWS[@]}"; do
    if ((${NON2XX[$name]:-0} > 0 || ${SOCKERR[$name]:-0} > 0)); then
        echo "warning: $name: ${NON2XX[$name]} non-2xx/3xx responses, ${SOCKERR[$name]} socket errors (all rounds)"
    fi
done

echo
if [[ "$SKIP_PORTCULLIS" == "1" ]]; then
    echo "portcullis-public / nginx-proxy: skipped (--skip-portcullis)"
    exit 0
fi

pc_rps="${RPS[portcullis-public]:-}" pc_p99="${P99[portcullis-public]:-}"
nx_rps="${RPS[nginx-proxy]:-}" nx_p99="${P99[nginx-proxy]:-}"

# ratio A B -> A/B with 2 decimals, or empty if either is missing or B is 0.
ratio() {
    [[ -n "$1" && -n "$2" ]] || return 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b }'
}
# verdict OP RATIO TARGET: PASS/MISS comparing the printed (2-decimal) ratio.
verdict() {
    local op="$1" value="$2" target="$3"
    if [[ -z "$value" ]]; then
        echo "n/a"
        return 0
    fi
    awk -v op="$op" -v v="$value" -v t="$target" 'BEGIN {
        ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0)
        print (ok ? "PASS" : "MISS")
    }'
}

rps_ratio="$(ratio "$pc_rps" "$nx_rps")"
p99_ratio="$(ratio "$pc_p99" "$nx_p99")"
echo "portcullis-public / nginx-proxy:"
printf '  throughput ratio %6s   (target >= %s)  %s\n' "${rps_ratio:-n/a}" "$TARGET_RPS_RATIO" "$(verdict '>=' "$rps_ratio" "$TARGET_RPS_RATIO")"
printf '  p99 ratio        %6s   (target <= %s)  %s\n' "${p99_ratio:-n/a}" "$TARGET_P99_RATIO" "$(verdict '<=' "$p99_ratio" "$TARGET_P99_RATIO")"
ss_rps="${RPS[portcullis-session]:-}"
ss_ratio="$(ratio "$ss_rps" "$nx_rps")"
echo "portcullis-session (signed-in, cache hit) / nginx-proxy:"
printf '  throughput ratio %6s   (target >= 0.85)  %s\n' "${ss_ratio:-n/a}" "$(verdict '>=' "$ss_ratio" "0.85")"
hit_rps="${RPS[bearer-hit]:-}" miss_rps="${RPS[bearer-miss]:-}" ap_rps="${RPS[apache-oidc]:-}"
echo "bearer-hit (RS256, verdict cache hit) / nginx-proxy:"
r="$(ratio "$hit_rps" "$nx_rps")"
printf '  throughput ratio %6s   (target >= 0.85)  %s\n' "${r:-n/a}" "$(verdict '>=' "$r" "0.85")"
if [[ -n "$ap_rps" ]]; then
    echo "bearer / apache-oidc (mod_auth_openidc, same tokens):"
    r="$(ratio "$hit_rps" "$ap_rps")"
    printf '  hit  throughput ratio %6s   (target >= 3)  %s\n' "${r:-n/a}" "$(verdict '>=' "$r" "3")"
    r="$(ratio "$miss_rps" "$ap_rps")"
    printf '  miss throughput ratio %6s   (target >= 3)  %s\n' "${r:-n/a}" "$(verdict '>=' "$r" "3")"
fi
if [[ -n "${RSS_AFTER:-}" ]]; then
    printf 'bearer-hit RSS: %s MiB before, %s MiB after %s distinct tokens (%s cached; target < 64 MiB)\n' \
        "$(awk -v k="$RSS_BEFORE" 'BEGIN { printf "%.1f", k / 1024 }')" \
        "$(awk -v k="$RSS_AFTER" 'BEGIN { printf "%.1f", k / 1024 }')" "$RSS_TOKENS" "${RSS_CACHED:-?}"
fi
if [[ -n "${RPS[pingora-bare]:-}" ]]; then
    echo "portcullis-public / pingora-bare (the framework's own ceiling):"
    printf '  throughput ratio %6s\n' "$(ratio "$pc_rps" "${RPS[pingora-bare]}")"
    printf '  p99 ratio        %6s\n' "$(ratio "$pc_p99" "${P99[pingora-bare]}")"
fi
exit 0
