#!/usr/bin/env bash
# Tollgate soak run: builds in release, preloads each backend, starts the
# real `tollgate serve`, and holds a steady mixed load on it for SOAK_SECS:
# HasAccess through grpc-load (90% hot / 10% cold, paced) and signed webhooks
# through webhook-load (distinct events plus some redeliveries, paced), at
# the same time. The load runs as back-to-back slices of SOAK_SLICE_SECS, so
# each slice reports its own latency; halfway through each slice the
# server's RSS, open file descriptors, threads and CPU time are sampled. It
# writes the "Soak" section of bench/results.md (the rest of the file stays
# as it is) and every sample to bench/soak.raw (JSON lines), prints a
# one-line verdict, and exits non-zero on errors (non-OK gRPC answers,
# non-200 or failed webhook sends, a load generator or the server dying,
# events table rows != first deliveries acknowledged) or when open fds grew
# by more than SOAK_FD_GROWTH_PCT from the first slice to the last.
#
#   bench/soak.sh                                  # defaults: SQLite, 100k users, 600 s
#   SOAK_SECS=60 SOAK_USERS=10000 bench/soak.sh    # quick check, ~1.5 min
#   SOAK_BACKENDS="sqlite postgres" bench/soak.sh  # both, one after the other
#
# Environment (all optional):
#   SOAK_USERS        preloaded users/subscriptions              (100000)
#   SOAK_SECS         seconds of load per backend                (600)
#   SOAK_SLICE_SECS   seconds per slice (one sample each)         (30)
#   SOAK_RATE         HasAccess req/s (grpc-load mix, -c4 -m16)  (2000)
#   SOAK_EVENTS_RATE  webhook sends/s (webhook-load -c4)         (100)
#   SOAK_REDELIVER    fraction of webhook sends that redeliver an
#                     already acknowledged event                 (0.05)
#   SOAK_BACKENDS     "sqlite", "postgres" or both               (sqlite)
#   SOAK_TOUCH_ALL    1: read every user once before the first slice, so
#                     the cache is at its working size and RSS growth
#                     during the soak is not the cache filling    (1)
#   SOAK_FD_GROWTH_PCT  most fd growth, first to last slice, in % (20)
#   SOAK_KEEP=1       keep the temp dir and the PostgreSQL database
#
# PostgreSQL: 127.0.0.1:5432, user postgres, trust auth (installed and
# started if need be, as bench/run.sh does); a fresh database per run,
# dropped afterwards. Every step is bounded in time, everything talks to
# 127.0.0.1 only, and the server, load generators and temp files are cleaned
# up on exit, except that if the server exits during the soak its exit
# status is recorded and its log kept as /tmp/tollgate-soak-server-*.log.
# Shared helpers are in bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh

USERS=${SOAK_USERS:-100000}
SECS=${SOAK_SECS:-600}
SLICE=${SOAK_SLICE_SECS:-30}
RATE=${SOAK_RATE:-2000}
EVENTS_RATE=${SOAK_EVENTS_RATE:-100}
REDELIVER=${SOAK_REDELIVER:-0.05}
BACKENDS=${SOAK_BACKENDS:-sqlite}
TOUCH_ALL=${SOAK_TOUCH_ALL:-1}
FD_GROWTH_PCT=${SOAK_FD_GROWTH_PCT:-20}
GRPC_C=4
GRPC_M=16
WEBHOOK_C=4
SLICES=$(( (SECS + SLICE - 1) / SLICE ))
SECRET="whsec_soak_$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
RAW="${SOAK_RAW:-$ROOT/bench/soak.raw}"
OUT="${SOAK_OUT:-$ROOT/bench/results.md}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d /tmp/tollgate-soak.XXXXXX)
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

SERVER_PID=""
SERVER_EXIT=""
KEPT_LOG=""
GL_PID=""
WL_PID=""
PG_DB=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
  set +e
  for pid in $GL_PID $WL_PID; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  if [ "${SOAK_KEEP:-0}" != 1 ]; then
    pg_drop_db
    rm -rf "$WORK"
  else
    echo "kept $WORK ${PG_DB:+and database $PG_DB}" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for n in USERS SECS SLICE RATE EVENTS_RATE FD_GROWTH_PCT; do
  if ! [[ ${!n} =~ ^[0-9]+$ ]] || [ "${!n}" -eq 0 ]; then
    echo "soak.sh: $n=${!n} must be a positive integer (see the header of bench/soak.sh)" >&2
    exit 2
  fi
done

need_tools jq curl sqlite3
log "building (release)"
nice -n 5 cargo build --release -q -p tollgate -p tollgate-bench

: > "$RAW"
emit() { echo "$1" >>"$RAW"; }

# json_or_failed FILE: the JSON line in FILE, or {"failed": true}.
json_or_failed() { jq -ce . "$1" 2>/dev/null || echo '{"failed": true}'; }

# db_bytes: the database's size on disk (SQLite: file + WAL + shm).
db_bytes() {
  case $backend in
    sqlite) stat -c %s "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }' ;;
    postgres) psql -h 127.0.0.1 -U postgres -tAc "SELECT pg_database_size('$PG_DB')" 2>/dev/null || echo 0 ;;
  esac
}

# sample: the server's resource use now, as JSON fields in SAMPLE (not
# printed: it keeps PREV_T and PREV_CPU, so it must not run in a subshell).
# The CPU % is over the time since the previous sample.
sample() {
  local now ticks cpu pct fds
  local rss hwm threads
  server_alive || { SAMPLE='{"server_dead": true}'; return; }
  now=$(date +%s.%N)
  rss=$(proc_kb "$SERVER_PID" VmRSS 2>/dev/null || true)
  hwm=$(proc_kb "$SERVER_PID" VmHWM 2>/dev/null || true)
  threads=$(proc_kb "$SERVER_PID" Threads 2>/dev/null || true)
  ticks=$(awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat" 2>/dev/null || true)
  # It may have exited since the check above.
  if [ -z "$rss" ] || [ -z "$hwm" ] || [ -z "$threads" ] || [ -z "$ticks" ]; then
    SAMPLE='{"server_dead": true}'
    return
  fi
  cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }')
  pct=$(awk -v c="$cpu" -v pc="$PREV_CPU" -v t="$now" -v pt="$PREV_T" 'BEGIN { printf "%.1f", (t > pt) ? 100 * (c - pc) / (t - pt) : 0 }')
  # shellcheck disable=SC2012 # fd names are numbers
  fds=$(ls "/proc/$SERVER_PID/fd" 2>/dev/null | wc -l)
  PREV_T=$now PREV_CPU=$cpu
  SAMPLE=$(jq -cn --argjson t "$(awk -v a="$now" -v b="$LOAD_T0" 'BEGIN { printf "%.1f", a - b }')" \
    --argjson rss "$rss" --argjson hwm "$hwm" --argjson threads "$threads" --argjson fds "$fds" \
    --argjson cpu "$cpu" --argjson pct "$pct" --argjson db "$(db_bytes)" \
    --argjson logb "$(stat -c %s "$SLOG")" --argjson load1 "$(cut -d' ' -f1 /proc/loadavg)" \
    '{t_s: $t, rss_kb: $rss, hwm_kb: $hwm, threads: $threads, fds: $fds, cpu_s: $cpu,
      cpu_pct: $pct, db_bytes: $db, log_bytes: $logb, load1: $load1}')
}

# server_alive: the server process exists and is not a zombie.
server_alive() {
  [ -n "$SERVER_PID" ] && [ -r "/proc/$SERVER_PID/status" ] &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$SERVER_PID/status" 2>/dev/null
}

# check_server: fails if the server has exited, after collecting its exit
# status (SERVER_EXIT), keeping its log (KEPT_LOG) and printing its tail.
check_server() {
  server_alive && return 0
  SERVER_EXIT=0
  wait "$SERVER_PID" 2>/dev/null || SERVER_EXIT=$?
  SERVER_PID=""
  KEPT_LOG="/tmp/tollgate-soak-server-$backend-$(date -u +%Y%m%dT%H%M%SZ).log"
  cp "$SLOG" "$KEPT_LOG"
  local how="status $SERVER_EXIT"
  if [ "$SERVER_EXIT" -gt 128 ]; then how="$how, signal $(kill -l $(( SERVER_EXIT - 128 )) 2>/dev/null || echo '?')"; fi
  log "$backend: the server exited during the soak ($how); log kept in $KEPT_LOG; its last lines:"
  { grep -E '"level":"(WARN|ERROR)"|panicked' "$SLOG" | tail -10; tail -3 "$SLOG"; } >&2 || true
  return 1
}

# metric_sum FILE NAME: the sum of every series of a Prometheus metric.
metric_sum() {
  awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d", s }' "$1"
}

SUB_OFFSET=0
for backend in $BACKENDS; do
  case $backend in
    sqlite)
      DB_FILE="$WORK/tollgate.db"
      DB_URL="sqlite://$DB_FILE"
      ;;
    postgres)
      ensure_postgres
      pg_create_db tollgate_soak
      DB_URL="postgres://postgres@127.0.0.1/$PG_DB"
      ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  SLOG="$WORK/server-$backend.log"

  log "$backend: preloading $USERS users"
  line=$(timeout 900 "$BIN/preload" --database-url "$DB_URL" --users "$USERS" --tags "section=soak_preload,backend=$backend")
  emit "$line"
  start_server "$DB_URL" "$SLOG"
  emit "$(tagged "section=soak_startup,backend=$backend" "{\"ms\": $STARTUP_MS, \"grpc_addr\": \"$GRPC_ADDR\", \"http_addr\": \"$HTTP_ADDR\"}")"
  LOAD_T0=$(date +%s.%N) PREV_T=$LOAD_T0 PREV_CPU=0
  sample
  emit "$(tagged "section=soak_sample,backend=$backend,phase=started" "$SAMPLE")"

  if [ "$TOUCH_ALL" = 1 ]; then
    log "$backend: reading every user once (fills the cache to its working size)"
    line=$(timeout 900 "$BIN/grpc-load" run --addr "$GRPC_ADDR" --pattern sequential --users "$USERS" \
      -c "$GRPC_C" -m "$GRPC_M" --tags "section=soak_touch_all,backend=$backend")
    emit "$line"
  fi
  sleep 2
  sample
  emit "$(tagged "section=soak_sample,backend=$backend,phase=before" "$SAMPLE")"

  log "$backend: $SLICES slices of ${SLICE} s: HasAccess at $RATE req/s + webhooks at $EVENTS_RATE/s ($REDELIVER redeliveries)"
  # Distinct events for a slice, with room to spare; redeliveries do not
  # use them up.
  slice_events=$(( EVENTS_RATE * SLICE + EVENTS_RATE ))
  for k in $(seq 1 "$SLICES"); do
    timeout -k 5 $(( SLICE + 60 )) "$BIN/webhook-load" --url "http://$HTTP_ADDR/webhooks/stripe" \
      --secret "$SECRET" --events "$slice_events" --max-duration "${SLICE}s" -c "$WEBHOOK_C" \
      --rate "$EVENTS_RATE" --redeliver "$REDELIVER" --users "$USERS" --sub-offset "$SUB_OFFSET" \
      --prefix "soak_${backend}_${k}_$$" --seed "$k" --tags "section=soak_webhooks" \
      >"$WORK/wl.json" 2>"$WORK/wl.err" &
    WL_PID=$!
    timeout -k 5 $(( SLICE + 60 )) "$BIN/grpc-load" run --addr "$GRPC_ADDR" --pattern mix --users "$USERS" \
      -c "$GRPC_C" -m "$GRPC_M" --rate "$RATE" --duration "${SLICE}s" --warmup 0s --seed "$k" \
      --tags "section=soak_grpc" >"$WORK/gl.json" 2>"$WORK/gl.err" &
    GL_PID=$!
    # The events of a slice go to subscriptions no earlier slice touched
    # (until the offset wraps), so they are applied, not stale.
    SUB_OFFSET=$(( (SUB_OFFSET + slice_events / 5 + 1) % USERS ))
    sleep $(( SLICE / 2 ))
    sample
    wait "$GL_PID" || cat "$WORK/gl.err" >&2
    wait "$WL_PID" || cat "$WORK/wl.err" >&2
    GL_PID="" WL_PID=""
    exited="null"
    check_server || exited=$(jq -cn --argjson st "$SERVER_EXIT" --arg log "$KEPT_LOG" '{status: $st, log: $log}')
    line=$(jq -cn --arg b "$backend" --argjson k "$k" --argjson s "$SAMPLE" \
      --argjson g "$(json_or_failed "$WORK/gl.json")" --argjson w "$(json_or_failed "$WORK/wl.json")" \
      --argjson exited "$exited" \
      '{section: "soak_slice", backend: $b, slice: $k} + $s + {grpc: $g, webhooks: $w}
       + if $exited then {server_dead: true, server_exit: $exited} else {} end')
    emit "$line"
    jq -r '"slice \(.slice): RSS \((.rss_kb // 0) / 1024 | floor) MiB, fds \(.fds), threads \(.threads), CPU \(.cpu_pct)%, "
      + "HasAccess \(.grpc.rps) req/s p99 \(.grpc.p99_ms) ms errors \(.grpc.errors), "
      + "webhooks \(.webhooks.rps)/s p99 \(.webhooks.p99_ms) ms non-200 \(.webhooks.non_200) errors \(.webhooks.errors)"' \
      <<<"$line" >&2
    [ -n "$SERVER_PID" ] || break
  done

  sleep 3
  sample
  emit "$(tagged "section=soak_sample,backend=$backend,phase=after" "$SAMPLE")"
  : >"$WORK/metrics.txt"
  if server_alive; then
    curl -sS --max-time 10 "http://$HTTP_ADDR/metrics" >"$WORK/metrics.txt" || : >"$WORK/metrics.txt"
  fi
  counters="{}"
  for m in tollgate_request_panics_total tollgate_task_restarts_total tollgate_connections_dropped_total \
    tollgate_webhook_errors_total tollgate_webhook_signature_failures_total tollgate_inputs_refused_total \
    tollgate_webhooks_received_total tollgate_has_access_total tollgate_cache_hits_total tollgate_cache_misses_total; do
    counters=$(jq -c --arg m "${m#tollgate_}" --argjson v "$(metric_sum "$WORK/metrics.txt" "$m")" '. + {($m): $v}' <<<"$counters")
  done
  # Which connections were cut, and why (port, cause), one entry a series.
  dropped=$({ grep '^tollgate_connections_dropped_total{' "$WORK/metrics.txt" || true; } |
    jq -Rcn '[inputs | capture("\\{(?<l>[^}]*)\\} (?<v>[0-9.e+]+)$") | {(.l | gsub("\""; "")): (.v | tonumber)}] | add // {}')
  stop_server
  case $backend in
    sqlite) rows=$(timeout 60 sqlite3 "$DB_FILE" "SELECT count(*) FROM events") ;;
    postgres) rows=$(timeout 60 psql -h 127.0.0.1 -U postgres -d "$PG_DB" -tAc "SELECT count(*) FROM events") ;;
  esac
  emit "$(tagged "section=soak_end,backend=$backend" "{\"metrics\": $counters, \"connections_dropped\": $dropped, \"events_rows\": ${rows:-0}, \"log_bytes\": $(stat -c %s "$SLOG")}")"
  if [ "${SOAK_KEEP:-0}" != 1 ]; then
    pg_drop_db
    rm -f "$WORK"/tollgate.db*
  fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -------------------------------------------------------------------
log "writing the Soak section of $OUT"
read -r -d '' REPORT_JQ <<'JQ' || true
# Missing figures (the server had exited) stay null and show as "–".
def r1: if . == null then null else . * 10 | round / 10 end;
def r2: if . == null then null else . * 100 | round / 100 end;
def mib: if . == null then null else . / 1024 | r1 end;
def mb: if . == null then null else . / 1048576 | r1 end;
def show: if . == null then "–" else tostring end;
def live: map(select(.server_dead != true));
def signed: if . > 0 then "+" + tostring else tostring end;
def pct(a; b): if a > 0 then ((b - a) / a * 100 | r1 | signed) + "%" else "–" end;
def slices($b): [.[] | select(.section == "soak_slice" and .backend == $b)];
def one($s; $b; $p): [.[] | select(.section == $s and .backend == $b and (.phase // "") == $p)][0];
def gerr: (.grpc.errors // 0);
def werr: (.webhooks.non_200 // 0) + (.webhooks.errors // 0);
def gen_fail: ([.grpc.failed, .webhooks.failed] | map(select(. == true)) | length);
def first_sends: (.webhooks.outcomes // {}) | (.applied + .stale + .ignored + .failed) // 0;
# least-squares slope of y over t_s, per 10 minutes
def slope(f): if length < 2 then 0 else
  (map(.t_s) | add / length) as $mt | (map(f) | add / length) as $my
  | (map((.t_s - $mt) * (f - $my)) | add) as $sxy | (map((.t_s - $mt) * (.t_s - $mt)) | add) as $sxx
  | if $sxx > 0 then $sxy / $sxx * 600 else 0 end end;
def summary($b; $fd_limit):
  slices($b) as $s | ($s[0]) as $f | ($s | live | .[-1] // $s[-1]) as $l
  | one("soak_sample"; $b; "before") as $before | one("soak_sample"; $b; "after") as $after
  | [.[] | select(.section == "soak_end" and .backend == $b)][0] as $fin
  | ($s | map(gerr) | add) as $gerrs | ($s | map(werr) | add) as $werrs | ($s | map(gen_fail) | add) as $fails
  | ($s | map(.grpc.count // 0) | add) as $greqs | ($s | map(.webhooks.count // 0) | add) as $wok
  | ($s | map(first_sends) | add) as $firsts
  | ($s | map(select(.server_dead == true)) | length) as $dead
  | ($fin.events_rows // -1) as $rows
  | (if $f.fds > 0 then ($l.fds - $f.fds) / $f.fds * 100 else 0 end) as $fd_growth
  | ($gerrs + $werrs + $fails + $dead + (if $rows == $firsts then 0 else 1 end)) as $bad
  | {backend: $b, slices: $s, first: $f, last: $l, before: $before, after: $after, fin: $fin,
     gerrs: $gerrs, werrs: $werrs, fails: $fails, dead: $dead, greqs: $greqs, wok: $wok,
     firsts: $firsts, rows: $rows, fd_growth: ($fd_growth | r1),
     ok: ($bad == 0 and $fd_growth <= $fd_limit and ($s | length) > 0)};
def exit_text: (.slices | map(select(.server_exit)) | .[0]) as $e
  | if $e then "; the server exited during slice \($e.slice) with status \($e.server_exit.status)"
      + (if $e.server_exit.status > 128 then " (signal \($e.server_exit.status - 128))" else "" end)
      + ", log kept in \($e.server_exit.log)"
    else "" end;
def verdict:
  "\(.backend): \(if .ok then "PASS" else "FAIL" end) - \(.slices | length) slices, "
  + "\(.greqs) HasAccess and \(.wok) webhooks answered, errors: \(.gerrs) gRPC, \(.werrs) webhook, "
  + "\(.fails) load generator failures\(exit_text); "
  + "events rows \(.rows) vs first deliveries \(.firsts); "
  + "fds \(.first.fds) -> \(.last.fds) (\(.fd_growth | signed)%), RSS \(.first.rss_kb | mib) -> \(.last.rss_kb | mib) MiB, "
  + "p99 HasAccess \(.first.grpc.p99_ms) -> \(.last.grpc.p99_ms) ms, webhooks \(.first.webhooks.p99_ms) -> \(.last.webhooks.p99_ms) ms";
JQ

backend_md() { # BACKEND
  jq -rs --arg b "$1" --argjson lim "$FD_GROWTH_PCT" --argjson rate "$RATE" --argjson erate "$EVENTS_RATE" --arg touch "$TOUCH_ALL" "$REPORT_JQ"'
  summary($b; $lim) as $x | $x.slices as $s | $x.first as $f | $x.last as $l
  | def row($name; f): "| \($name) | \($f | f | show) | \($l | f | show) | \($s | map(f) | max | show) | \(pct($f | f; $l | f)) |";
  ($s | length) as $n
  | "### \($b)",
    "",
    "Start (slice 1) vs end (slice \($l.slice)\(if $l.slice != $n then ", the last one the server lived through" else "" end)), and the largest value over all slices; samples taken halfway through each slice, under load.",
    "",
    "| | start | end | max | start → end |",
    "|---|---:|---:|---:|---:|",
    row("server RSS, MiB"; .rss_kb | mib),
    row("open file descriptors"; .fds),
    row("threads"; .threads),
    row("server CPU, % of one vCPU"; .cpu_pct),
    row("HasAccess p99, ms"; .grpc.p99_ms // 0),
    row("HasAccess p50, ms"; .grpc.p50_ms // 0),
    row("webhook p99, ms"; .webhooks.p99_ms // 0),
    row("webhook p50, ms"; .webhooks.p50_ms // 0),
    row("HasAccess answered, req/s (target \($rate))"; .grpc.rps // 0),
    row("webhooks answered, /s (target \($erate))"; .webhooks.rps // 0),
    row("non-OK gRPC answers"; gerr),
    row("non-200 webhooks + transport errors"; werr),
    "",
    "- Errors over the whole run: \($x.gerrs) non-OK gRPC answers (\($x.greqs) OK), \($x.werrs) non-200 or failed webhook sends (\($x.wok) answered 200), \($x.fails) load generator failures\($x | exit_text).",
    "- Webhooks: \($s | map(.webhooks.outcomes.applied // 0) | add) applied, \($s | map(.webhooks.outcomes.stale // 0) | add) stale, \($s | map(.webhooks.outcomes.ignored // 0) | add) ignored, \($s | map(.webhooks.outcomes.failed // 0) | add) failed; \($s | map(.webhooks.redelivered // 0) | add) redeliveries sent, \($s | map(.webhooks.outcomes.duplicate // 0) | add) answered `duplicate`. Rows in `events` at the end: \($x.rows), first deliveries acknowledged: \($x.firsts)\(if $x.rows == $x.firsts then " (equal)" else " (MISMATCH)" end).",
    "- Trend (least squares over all slices, per 10 minutes): RSS \($s | live | slope(.rss_kb / 1024) | r1 | signed) MiB, fds \($s | live | slope(.fds) | r1 | signed), HasAccess p99 \($s | live | slope(.grpc.p99_ms // 0) | r2 | signed) ms, webhook p99 \($s | live | slope(.webhooks.p99_ms // 0) | r2 | signed) ms.",
    "- Idle, before the first slice\(if $touch == "1" then " (after every user was read once)" else "" end) and 3 s after the last: RSS \($x.before.rss_kb | mib | show) / \($x.after.rss_kb | mib | show) MiB, fds \($x.before.fds | show) / \($x.after.fds | show), threads \($x.before.threads | show) / \($x.after.threads | show); peak RSS (VmHWM) \($x.after.hwm_kb | mib | show) MiB.",
    "- Server counters at the end (`/metrics`, summed over labels): \(if ($x.fin.metrics // {}) == {} then "not read (the server had exited)" else $x.fin.metrics | to_entries | map("`\(.key)` \(.value)") | join(", ") end)\(if ($x.fin.connections_dropped // {}) != {} then "; connections dropped by label: " + ($x.fin.connections_dropped | to_entries | map("`\(.key)` \(.value)") | join(", ")) else "" end); log written \($x.fin.log_bytes | mb | show) MiB; database \($l.db_bytes | mb | show) MiB at the last slice.",
    "- Verdict: **\($x | verdict)**",
    "",
    "Per slice (req/s and latency over the slice; RSS, fds, threads and the 1-minute load average of the machine at its middle; server CPU since the previous sample):",
    "",
    "| slice | t s | RSS MiB | fds | threads | CPU % | HasAccess req/s | p50 ms | p99 ms | max ms | gRPC errors | webhooks/s | p50 ms | p99 ms | max ms | redelivered | non-200 + errors | DB MiB | load |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ($s[] | "| \(.slice) | \(.t_s | if . then round else null end | show) | \(.rss_kb | mib | show) | \(.fds | show) | \(.threads | show) | \(.cpu_pct | show) | \(.grpc.rps // "–") | \(.grpc.p50_ms // "–") | \(.grpc.p99_ms // "–") | \(.grpc.max_ms // "–") | \(gerr) | \(.webhooks.rps // "–") | \(.webhooks.p50_ms // "–") | \(.webhooks.p99_ms // "–") | \(.webhooks.max_ms // "–") | \(.webhooks.redelivered // 0) | \(werr) | \(.db_bytes | mb | show) | \(.load1 | show) |")
  ' "$RAW"
}

{
  echo "## Soak"
  echo
  echo "\`SOAK_SECS=$SECS bench/soak.sh\`: one \`tollgate serve\` (release) per backend under a steady mixed load for $SECS s, as $SLICES back-to-back slices of $SLICE s: HasAccess through \`grpc-load\` (90% to a hot set of 10,000 users, 10% uniform over all users, -c$GRPC_C -m$GRPC_M, paced to $RATE req/s; latency from the actual send, so a stall delays later sends rather than hiding) and signed webhooks through \`webhook-load\` (-c$WEBHOOK_C, paced to $EVENTS_RATE sends/s, distinct events, $REDELIVER of the sends redeliveries of an already acknowledged event) at the same time, new client connections every slice. Raw samples: \`bench/soak.raw\`."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| commit | \`$(commit_desc)\` |"
  echo "| machine | $(cpu_desc); kernel \`$(uname -srm)\` |"
  echo "| parameters | SOAK_USERS=$USERS, SOAK_SECS=$SECS, SOAK_SLICE_SECS=$SLICE, SOAK_RATE=$RATE, SOAK_EVENTS_RATE=$EVENTS_RATE, SOAK_REDELIVER=$REDELIVER, SOAK_BACKENDS=\"$BACKENDS\", SOAK_TOUCH_ALL=$TOUCH_ALL |"
  echo "| note | load generators share the vCPUs with the server; load average (1/5/15 min) at start: $LOAD_START, at end: $LOAD_END (anything above ~0 at start is other work on the machine); wall time $(( $(date +%s) - T_START )) s |"
  for backend in $BACKENDS; do
    echo
    backend_md "$backend"
  done
} >"$WORK/soak.md"
md_replace_section "$OUT" Soak "$WORK/soak.md"

# --- verdict ------------------------------------------------------------------
status=0
for backend in $BACKENDS; do
  v=$(jq -rs --arg b "$backend" --argjson lim "$FD_GROWTH_PCT" "$REPORT_JQ"' summary($b; $lim) | "\(.ok) \(verdict)"' "$RAW")
  [ "${v%% *}" = true ] || status=1
  echo "soak ${v#* }"
done
log "done in $(( $(date +%s) - T_START )) s"
exit "$status"
