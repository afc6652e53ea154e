#!/usr/bin/env bash
# Soak: the release gateway under mixed traffic at a bounded rate for a long
# time (default 10 minutes), all on 127.0.0.1, watching for leaks.
#
# Usage:
#   benches/soak.sh [options]
#
# Options (each has an environment variable of the same meaning):
#   --duration D        DURATION=10m     traffic time (600, 600s, 10m, 1h)
#   --warmup D          WARMUP=auto      samples before this are not judged (auto: a fifth of DURATION)
#   --sample D          SAMPLE=10s       time between two samples
#   --rate-scale X      RATE_SCALE=1     multiplies every class's rate (1: about 150 requests/s)
#   --token-ttl D       TOKEN_TTL=60s    lifetime of the fresh bearer tokens
#   --gateway-cpus LIST GATEWAY_CPUS=0   CPUs of the gateway (taskset -c LIST)
#   --driver-cpus LIST  DRIVER_CPUS=1    CPUs of the load driver, provider and upstreams
#   --no-pin            PIN=0            no taskset
#   --quiesce D         QUIESCE=130s     idle time after the traffic before the last fd/RSS reading
#   --only LIST         ONLY=            only these traffic classes (comma-separated, e.g. sign_in,websocket;
#                                        names as in soak-report.txt): to find what makes a figure move
#                                        (past the gateway's 60 s client and upstream-pool idle timeouts)
#   --rss-tolerance P   RSS_TOLERANCE=10 after warm-up, the highest RSS sample may be at most P% above the lowest
#   --fd-slack N        FD_SLACK=16      after warm-up, the median fd count of the last third of the
#                                        samples may be at most N above that of the first third; after
#                                        the run the count must be back within N of the one before
#   --results DIR       RESULTS=benches/results   where soak.csv, soak.png, soak-summary.txt, soak-report.txt go
# Environment only:
#   PORTCULLIS_BIN=PATH  use this gateway binary instead of `cargo build --release --locked`
#                        (the driver is then PATH's examples/soak unless SOAK_DRIVER is set)
#   SOAK_DRIVER=PATH     use this driver binary (examples/soak.rs)
#   CARGO_TARGET_DIR=DIR honoured when building
#   KEEP_TMP=1           keep the work dir (config, store, gateway log); always kept on failure
#
# The driver (examples/soak.rs) starts the demo OpenID provider, the echo app
# and a WebSocket echo in its own process, runs the gateway in front of them
# and sends, per second at scale 1: 60 signed-in session requests, 30 with a
# repeated bearer token (verdict cache hit), 10 with a freshly minted token
# (signature verified), 20 to a public path, 1 full sign-in (login start, the
# provider's page and form, callback, the app, the callback replayed -> 400,
# every second one signs out -> the old cookie 401), 1 WebSocket (101, five
# echoes, close) and refusals on purpose: 6 bad tokens (bit-flipped, expired,
# foreign audience -> 401 invalid_token), 4 forbidden (/admin without the
# group -> 403), 3 anonymous browsers (-> 302 sign-in), 3 anonymous API
# calls (-> 401), 2 bad paths (%5C, %00 -> 400), 0.5 anonymous WebSocket
# upgrades (-> 401). Every SAMPLE it writes the gateway's RSS and open fds
# (/proc) and the p50/p99 latency of that window's gateway requests to a CSV.
#
# Pass (exit 0) only if: every operation got its intended answer (counted per
# class); the RSS after warm-up stays within RSS_TOLERANCE; the fds after
# warm-up do not trend up (they move with the connections in flight and
# pooled, so a trend, not a band, is judged) and return to the count before the traffic
# (within FD_SLACK) once the clients are gone and QUIESCE has passed; the gateway never exited and
# logged no panic. Latency is reported, not judged (a shared machine is noisy).
# Exit 1 on a miss, 2 when something could not be built or started.

set -euo pipefail

DURATION="${DURATION:-10m}"
WARMUP="${WARMUP:-auto}"
SAMPLE="${SAMPLE:-10s}"
RATE_SCALE="${RATE_SCALE:-1}"
TOKEN_TTL="${TOKEN_TTL:-60s}"
GATEWAY_CPUS="${GATEWAY_CPUS:-0}"
DRIVER_CPUS="${DRIVER_CPUS:-1}"
PIN="${PIN:-1}"
RSS_TOLERANCE="${RSS_TOLERANCE:-10}"
FD_SLACK="${FD_SLACK:-16}"
KEEP_TMP="${KEEP_TMP:-0}"
QUIESCE="${QUIESCE:-130s}"
ONLY="${ONLY:-}"
COMMAND_LINE="$0 $*"

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${RESULTS:-$REPO_DIR/benches/results}"

log() { printf '[soak] %s\n' "$*" >&2; }
die() {
    printf '[soak] error: %s\n' "$*" >&2
    exit 2
}
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

while (($# > 0)); do
    case "$1" in
    --duration) DURATION="${2:?--duration needs a value}" && shift ;;
    --warmup) WARMUP="${2:?--warmup needs a value}" && shift ;;
    --sample) SAMPLE="${2:?--sample needs a value}" && shift ;;
    --rate-scale) RATE_SCALE="${2:?--rate-scale needs a value}" && shift ;;
    --token-ttl) TOKEN_TTL="${2:?--token-ttl needs a value}" && shift ;;
    --gateway-cpus) GATEWAY_CPUS="${2:?--gateway-cpus needs a value}" && shift ;;
    --driver-cpus) DRIVER_CPUS="${2:?--driver-cpus needs a value}" && shift ;;
    --no-pin) PIN=0 ;;
    --quiesce) QUIESCE="${2:?--quiesce needs a value}" && shift ;;
    --only) ONLY="${2:?--only needs a value}" && shift ;;
    --rss-tolerance) RSS_TOLERANCE="${2:?--rss-tolerance needs a value}" && shift ;;
    --fd-slack) FD_SLACK="${2:?--fd-slack needs a value}" && shift ;;
    --results) RESULTS="${2:?--results needs a value}" && shift ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

# seconds D: "600", "600s", "10m", "1h" -> whole seconds.
seconds() {
    if [[ "$1" =~ ^([0-9]+)(s|m|h)?$ ]]; then
        case "${BASH_REMATCH[2]}" in
        m) echo $((BASH_REMATCH[1] * 60)) ;;
        h) echo $((BASH_REMATCH[1] * 3600)) ;;
        *) echo "${BASH_REMATCH[1]}" ;;
        esac
    else
        return 1
    fi
}
DURATION_S="$(seconds "$DURATION")" || die "DURATION must look like 600, 600s, 10m or 1h, got '$DURATION'"
SAMPLE_S="$(seconds "$SAMPLE")" || die "SAMPLE must look like 10s, got '$SAMPLE'"
TOKEN_TTL_S="$(seconds "$TOKEN_TTL")" || die "TOKEN_TTL must look like 60s, got '$TOKEN_TTL'"
QUIESCE_S="$(seconds "$QUIESCE")" || die "QUIESCE must look like 130s, got '$QUIESCE'"
((SAMPLE_S > 0)) || die "SAMPLE must be at least 1s"
((DURATION_S >= 4 * SAMPLE_S)) || die "DURATION ($DURATION_S s) must hold at least four samples of $SAMPLE_S s"
((TOKEN_TTL_S > 0)) || die "TOKEN_TTL must be at least 1s"
if [[ "$WARMUP" == auto ]]; then
    WARMUP_S=$((DURATION_S / 5))
else
    WARMUP_S="$(seconds "$WARMUP")" || die "WARMUP must look like 120s, 2m or auto, got '$WARMUP'"
fi
((WARMUP_S + 3 * SAMPLE_S <= DURATION_S)) || die "WARMUP ($WARMUP_S s) leaves fewer than three samples to judge"
[[ "$RATE_SCALE" =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v r="$RATE_SCALE" 'BEGIN { exit !(r > 0) }' ||
    die "RATE_SCALE must be a positive number, got '$RATE_SCALE'"
[[ "$RSS_TOLERANCE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RSS_TOLERANCE must be a number of percent, got '$RSS_TOLERANCE'"
[[ "$FD_SLACK" =~ ^[0-9]+$ ]] || die "FD_SLACK must be a whole number, got '$FD_SLACK'"

if [[ "$PIN" == 1 ]]; then
    command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed to pin; or --no-pin"
    taskset -c "$GATEWAY_CPUS" true 2>/dev/null || die "cannot pin to GATEWAY_CPUS=$GATEWAY_CPUS on this machine ($(nproc) cores)"
    taskset -c "$DRIVER_CPUS" true 2>/dev/null || die "cannot pin to DRIVER_CPUS=$DRIVER_CPUS on this machine ($(nproc) cores)"
    DRIVER_PIN=(taskset -c "$DRIVER_CPUS")
    GATEWAY_PIN_ARGS=(--gateway-cpus "$GATEWAY_CPUS")
else
    DRIVER_PIN=()
    GATEWAY_PIN_ARGS=()
fi

# ---------------------------------------------------------------- tools

# gnuplot draws the PNG; installed from Debian when missing (the run is still
# judged without it).
if ! command -v gnuplot >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && ((EUID == 0)); then
        log "installing gnuplot-nox (for the plot)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null; } || log "apt-get install gnuplot-nox failed"
    fi
    command -v gnuplot >/dev/null 2>&1 || log "notice: no gnuplot; the run is judged but no PNG is drawn"
fi

# ---------------------------------------------------------------- binaries

if [[ -z "${PORTCULLIS_BIN:-}" ]]; then
    log "building the release gateway and the driver (cargo build --release --locked)"
    (cd "$REPO_DIR" && cargo build --release --locked --bin portcullis --example soak) ||
        die "cargo build failed"
    target="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
    [[ "$target" = /* ]] || target="$REPO_DIR/$target"
    PORTCULLIS_BIN="$target/release/portcullis"
fi
SOAK_DRIVER="${SOAK_DRIVER:-$(dirname "$PORTCULLIS_BIN")/examples/soak}"
[[ -x "$PORTCULLIS_BIN" ]] || die "no gateway binary at $PORTCULLIS_BIN"
[[ -x "$SOAK_DRIVER" ]] || die "no driver at $SOAK_DRIVER (cargo build --release --example soak, or set SOAK_DRIVER)"

# ---------------------------------------------------------------- cleanup

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-soak.XXXXXX")" || die "mktemp failed"
DRIVER_PID=""
RC_FILE="$WORK/.rc"

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null || true
        wait "$DRIVER_PID" 2>/dev/null || true
    fi
    # The driver stops the gateway itself; if the driver was killed first, its gateway is ours to stop.
    if [[ -f "$WORK/gateway.pid" ]]; then
        pid="$(cat "$WORK/gateway.pid")"
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
            [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"$WORK/portcullis.toml"* ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 1
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ "$KEEP_TMP" == 1 || "$rc" != 0 ]]; then
        log "kept the work dir (config, store, gateway log): $WORK"
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- the run

mkdir -p "$RESULTS"
STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"
log "soak: $DURATION_S s of traffic (warm-up $WARMUP_S s, a sample every $SAMPLE_S s, rate scale $RATE_SCALE)"
log "pinning: $(if [[ "$PIN" == 1 ]]; then echo "gateway on CPUs $GATEWAY_CPUS, driver on CPUs $DRIVER_CPUS"; else echo none; fi)"
log "work dir: $WORK"
# Bounded: the traffic, the setup and the drain, with room to spare.
timeout --kill-after=10 $((DURATION_S + QUIESCE_S + 180)) "${DRIVER_PIN[@]}" "$SOAK_DRIVER" \
    --bin "$PORTCULLIS_BIN" --dir "$WORK" --duration "$DURATION_S" --sample "$SAMPLE_S" \
    --rate-scale "$RATE_SCALE" --token-ttl "$TOKEN_TTL_S" --quiesce "$QUIESCE_S" "${GATEWAY_PIN_ARGS[@]}" ${ONLY:+--only "$ONLY"} &
DRIVER_PID=$!
driver_rc=0
wait "$DRIVER_PID" || driver_rc=$?
DRIVER_PID=""
ENDED="$(date -u '+%H:%M UTC')"
[[ -s "$WORK/samples.csv" ]] || {
    tail -n 30 "$WORK/gateway.log" >&2 2>/dev/null || true
    die "the driver wrote no samples (exit $driver_rc)"
}
cp "$WORK/samples.csv" "$RESULTS/soak.csv"
[[ ! -f "$WORK/summary.txt" ]] || cp "$WORK/summary.txt" "$RESULTS/soak-summary.txt"

# ---------------------------------------------------------------- judging

SUMMARY="$WORK/summary.txt"
kv() { # kv KEY: the value of KEY=… in the summary's lines
    awk -v k="$1" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit } }' "$SUMMARY" 2>/dev/null
}

# Steady-state figures from the CSV: rows of the load phase at or after the
# warm-up. FD_T1/FD_T3: medians of the first and the last third of them.
read -r N_STEADY RSS_MIN RSS_MAX RSS_FIRST RSS_LAST FD_MIN FD_MAX FD_FIRST FD_LAST FD_T1 FD_T3 P99_MED P99_MAX REQS <<<"$(
    awk -F, -v w="$WARMUP_S" '
        function median(a, lo, hi,    m, i, j, t, b) {
            m = 0
            for (i = lo; i <= hi; i++) b[++m] = a[i]
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
            if (m == 0) return 0
            return (m % 2) ? b[(m + 1) / 2] : (b[m / 2] + b[m / 2 + 1]) / 2
        }
        NR > 1 && $2 == "load" && $1 >= w {
            n++
            if (n == 1 || $3 < rmin) rmin = $3
            if (n == 1 || $3 > rmax) rmax = $3
            if (n == 1 || $4 < fmin) fmin = $4
            if (n == 1 || $4 > fmax) fmax = $4
            if (n == 1) { rfirst = $3; ffirst = $4 }
            rlast = $3; flast = $4; fd[n] = $4
            if ($8 != "") { p[++np] = $8; if ($8 + 0 > pmax) pmax = $8 + 0 }
        }
        NR > 1 && $2 == "load" { reqs += $6 }
        END {
            k = int(n / 3); if (k < 1) k = 1
            printf "%d %d %d %d %d %d %d %d %d %.1f %.1f %.3f %.3f %d\n", n, rmin, rmax, rfirst, rlast, fmin, fmax, ffirst, flast,
                median(fd, 1, k), median(fd, n - k + 1, n), median(p, 1, np), pmax, reqs
        }' "$WORK/samples.csv"
)"
FDS_BEFORE="$(kv fds_before)"
FDS_AFTER="$(kv fds_after)"
RSS_BEFORE="$(kv rss_before_kib)"
RSS_AFTER="$(kv rss_after_kib)"
GATEWAY_EXIT="$(kv gateway_exit)"

FAIL=0
verdict() { # verdict OK LABEL DETAIL
    if [[ "$1" == 1 ]]; then
        printf '  PASS  %-34s %s\n' "$2" "$3"
    else
        printf '  FAIL  %-34s %s\n' "$2" "$3"
        FAIL=1
    fi
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

{
    cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
    echo "portcullis soak, $STARTED to $ENDED"
    echo "machine: ${cpu_model:-unknown CPU}, $(nproc) cores, $(uname -sr), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "command: $COMMAND_LINE"
    echo "gateway: $PORTCULLIS_BIN ($(if [[ "$PIN" == 1 ]]; then echo "CPUs $GATEWAY_CPUS; driver, provider and upstreams on CPUs $DRIVER_CPUS"; else echo "not pinned"; fi))"
    echo "traffic: $DURATION_S s at rate scale $RATE_SCALE, $REQS gateway requests ($(awk -v r="$REQS" -v d="$DURATION_S" 'BEGIN { printf "%.0f", r / d }')/s); warm-up $WARMUP_S s; a sample every $SAMPLE_S s; fresh tokens live $TOKEN_TTL_S s"
    echo
    echo "per class (operations done of planned; answers as intended / not; gateway responses by status, 0 = none):"
    if [[ -f "$SUMMARY" ]]; then
        awk '/^class=/ {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
            printf "  %-24s %7d of %7d ops  %7d intended  %5d not  %5d skipped   %s\n", v["class"], v["ops"], v["planned"], v["intended"], v["unintended"], v["skipped"], v["responses"]
        }' "$SUMMARY"
    fi
    echo
    echo "gateway after warm-up ($N_STEADY samples):"
    echo "  RSS  first $(mib "$RSS_FIRST"), last $(mib "$RSS_LAST"), min $(mib "$RSS_MIN"), max $(mib "$RSS_MAX"); before the traffic $(mib "${RSS_BEFORE:-0}"), after $(mib "${RSS_AFTER:-0}")"
    echo "  fds  first $FD_FIRST, last $FD_LAST, min $FD_MIN, max $FD_MAX, median of the first third $FD_T1, of the last third $FD_T3; before the traffic ${FDS_BEFORE:-?}, after ${FDS_AFTER:-?}"
    echo "  p99  median of the windows $P99_MED ms, worst window $P99_MAX ms (reported, not judged)"
    echo
    echo "criteria:"
    unintended="$(awk '/^class=/ { for (i = 1; i <= NF; i++) if ($i ~ /^unintended=/) s += substr($i, 12) } END { print s + 0 }' "$SUMMARY" 2>/dev/null || echo "")"
    ops="$(awk '/^class=/ { for (i = 1; i <= NF; i++) if ($i ~ /^ops=/) s += substr($i, 5) } END { print s + 0 }' "$SUMMARY" 2>/dev/null || echo 0)"
    skipped="$(awk '/^class=/ { for (i = 1; i <= NF; i++) if ($i ~ /^skipped=/) s += substr($i, 9) } END { print s + 0 }' "$SUMMARY" 2>/dev/null || echo 0)"
    verdict "$([[ "$driver_rc" == 0 && -n "$unintended" && "$unintended" == 0 && "$ops" -gt 0 ]] && echo 1 || echo 0)" \
        "only intended answers" "$ops operations, ${unintended:-?} not as intended (driver exit $driver_rc)"
    ok_rss="$(awk -v lo="$RSS_MIN" -v hi="$RSS_MAX" -v t="$RSS_TOLERANCE" -v n="$N_STEADY" 'BEGIN { print (n >= 2 && lo > 0 && hi <= lo * (1 + t / 100)) ? 1 : 0 }')"
    verdict "$ok_rss" "RSS flat after warm-up (<= $RSS_TOLERANCE%)" \
        "max/min $(awk -v lo="$RSS_MIN" -v hi="$RSS_MAX" 'BEGIN { if (lo > 0) printf "%+.1f%%", (hi / lo - 1) * 100; else printf "n/a" }')"
    ok_fd="$(awk -v a="$FD_T1" -v b="$FD_T3" -v s="$FD_SLACK" -v n="$N_STEADY" 'BEGIN { print (n >= 3 && b - a <= s) ? 1 : 0 }')"
    verdict "$ok_fd" "fds flat after warm-up (<= +$FD_SLACK)" "median of the last third - of the first third = $(awk -v a="$FD_T1" -v b="$FD_T3" 'BEGIN { printf "%+.1f", b - a }')"
    ok_back="$([[ "$FDS_BEFORE" =~ ^[0-9]+$ && "$FDS_AFTER" =~ ^[0-9]+$ ]] && ((FDS_AFTER <= FDS_BEFORE + FD_SLACK)) && echo 1 || echo 0)"
    verdict "$ok_back" "fds back after the run (<= +$FD_SLACK)" "${FDS_BEFORE:-?} before the traffic, ${FDS_AFTER:-?} after"
    panics="$(grep -c 'panicked' "$WORK/gateway.log" 2>/dev/null || true)"
    verdict "$([[ "${panics:-0}" == 0 && "$GATEWAY_EXIT" != killed && -n "$GATEWAY_EXIT" ]] && echo 1 || echo 0)" \
        "gateway up, no panic" "exit on SIGTERM after the run: ${GATEWAY_EXIT:-none (died?)}; ${panics:-0} panic lines in its log"
    if ((${skipped:-0} > 0)); then
        echo "  note: $skipped ticks skipped (all of the driver's operations in flight were busy): the rate was not fully delivered"
    fi
    if [[ -s "$WORK/errors.txt" ]] && [[ "$(tr -d '\n' <"$WORK/errors.txt")" != "" ]]; then
        echo
        echo "first unintended answers (errors.txt):"
        head -n 10 "$WORK/errors.txt" | cut -c 1-160 | sed 's/^/  /'
    fi
    # The verdict travels out of this group through a file (the group is piped to tee).
    echo "$FAIL" >"$RC_FILE"
} | tee "$RESULTS/soak-report.txt"
FAIL="$(cat "$RC_FILE" 2>/dev/null || echo 1)"

# ---------------------------------------------------------------- plot

if command -v gnuplot >/dev/null 2>&1; then
    gnuplot <<EOF || log "gnuplot failed; no PNG"
set terminal pngcairo size 1000,900 font "sans,10"
set output "$RESULTS/soak.png"
set datafile separator ","
set key off
set grid
set multiplot layout 3,1 title "portcullis soak, $STARTED: $DURATION_S s, about $(awk -v r="$REQS" -v d="$DURATION_S" 'BEGIN { printf "%.0f", r / d }') requests/s (warm-up shaded)"
set xrange [0:$DURATION_S]
set object 1 rect from 0, graph 0 to $WARMUP_S, graph 1 fc rgb "#eeeeee" fs solid noborder behind
set ylabel "RSS (MiB)"
set yrange [0:*]
plot "$RESULTS/soak.csv" using (strcol(2) eq "load" || strcol(2) eq "before" ? \$1 : 1/0):(\$3 / 1024) with linespoints lw 2 pt 7 ps 0.5 lc rgb "#1f77b4"
set ylabel "open fds"
plot "$RESULTS/soak.csv" using (strcol(2) eq "load" || strcol(2) eq "before" ? \$1 : 1/0):4 with linespoints lw 2 pt 7 ps 0.5 lc rgb "#2ca02c"
set ylabel "p99 of the window (ms)"
set xlabel "seconds since the traffic started"
plot "$RESULTS/soak.csv" using (strcol(2) eq "load" ? \$1 : 1/0):8 with linespoints lw 2 pt 7 ps 0.5 lc rgb "#d62728"
unset multiplot
EOF
    [[ ! -s "$RESULTS/soak.png" ]] || log "plot: $RESULTS/soak.png"
fi

log "results: $RESULTS/soak.csv, soak-summary.txt, soak-report.txt$([[ -s "$RESULTS/soak.png" ]] && echo ", soak.png")"
if [[ "$FAIL" != 0 ]]; then
    log "FAIL (see above); the work dir is kept"
    exit 1
fi
log "PASS"
exit 0
