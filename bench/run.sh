#!/usr/bin/env bash
# Tollgate benchmark harness: builds in release, preloads each backend, runs
# the real server beside a bare tonic baseline, and writes bench/results.md
# (medians) and bench/results.raw (every JSON result line).
#
#   bench/run.sh                                   # full: 1M users, 3 runs,
#                         # scaling table at 10k, 100k and 1M subjects
#   BENCH_QUICK=1 bench/run.sh
#                         # quick: every row of the full run at 100k users
#                         # (3 runs, medians), scaling table at 10k and 100k
#
# Wall time on the 2-vCPU session VM (2026-12-06): full 941 s on a quiet
# AMD EPYC machine, 1003 s on an Intel Xeon one, release build included
# (1168 s while another agent built beside it); quick 726 s on the busy
# machine. Of a full run, touch-all of 1M users
# costs 1-2 min per backend, the reconciler ~30 s and the scaling table ~40 s
# per backend. Use the quick mode when the budget matters; the full run is
# for the 1M figures.
#   BENCH_USERS=10000 BENCH_SCALES="2000 10000" BENCH_RUNS=1 bench/run.sh
#                         # smoke test of every section (BENCH_OUT to keep
#                         # results.md as it is)
#   BENCH_ONLY=feature BENCH_BACKENDS=sqlite bench/run.sh
#                         # only the feature-check pairs: rewrites just that
#                         # section of results.md (raw lines: results-feature.raw)
#   BENCH_ONLY=rss BENCH_BACKENDS=sqlite bench/run.sh
#                         # only touch-all and peak RSS: prints the JSON
#                         # lines, writes no report
#
# What a full run measures, per backend (sqlite, postgres): preload; `serve`
# start to first answer; the feature-check pairs; the HasAccess hot path
# (h2load) against the baseline; the realistic mix (10% cold) against the
# baseline (each pair in the order that flips every run, as the feature
# pairs); webhook ingest against raw single-row inserts at c=1, 8, 32;
# HasAccess p99 alone and under ~50% ingest load; every user read once
# (touch-all) and the peak RSS with all of them cached; the reconciler's
# catch-up from a fake Stripe (reconcile-load); and the scaling table:
# hot path, touch-all, ingest c=8 and peak RSS at each of BENCH_SCALES
# subjects (at BENCH_USERS the main run's figures are reused and only the
# hot path is measured again, after touch-all; other scales get a fresh
# database and one run each). Before each realistic-mix, ingest,
# under-ingest and touch-all run the database's files are read once
# (`warm_db`, bench/lib.sh), so that the run starts with them in the OS
# page cache.
#
# Environment (all optional):
#   BENCH_QUICK=1    quick mode: BENCH_USERS and BENCH_SCALES default to
#                    100000 and "10000 100000" (everything else as in full)
#   BENCH_USERS      preloaded users/subscriptions          (1000000; quick 100000)
#   BENCH_SCALES     subject counts of the scaling table    ("10000 100000 1000000";
#                    quick "10000 100000"); BENCH_USERS among them is not
#                    preloaded again
#   BENCH_RUNS       repetitions of each throughput figure  (3)
#   BENCH_BACKENDS   "sqlite postgres", or one of them
#   BENCH_EVENTS     most webhook events per ingest measurement  (10000)
#   BENCH_INGEST_SECS  most seconds per ingest measurement  (6; the raw-insert
#                    ceiling then inserts as many rows as Tollgate ingested)
#   BENCH_H2LOAD_SECS  measured seconds per h2load run      (3, plus 1 s warm-up)
#   BENCH_MIX_SECS   measured seconds per grpc-load run     (5, plus 1 s warm-up)
#   BENCH_MIX_RATE   HasAccess req/s in the mixed-load test (half the measured mix rate)
#   BENCH_TOUCH_ALL  backends on which every user is read once before the peak
#                    RSS is taken (BENCH_BACKENDS: all of them)
#   BENCH_FEATURE_RUNS  pairs of the feature-check figure     (BENCH_RUNS)
#   BENCH_RECONCILE_EVENTS  events (over as many subscriptions) the reconciler
#                    catches up on per reconcile-load run, 100 a page, from a
#                    fake Stripe with no rate limit, fresh database each run
#                    (10000; BENCH_RUNS runs per backend)
#   BENCH_ONLY       "feature" or "rss": that part alone (see above)
#   BENCH_OUT        the report to write (bench/results.md); its sections
#                    the report does not generate are kept (see below)
#   BENCH_RAW        the raw JSON lines (bench/results.raw)
#   BENCH_KEEP=1     keep the temp dir and the PostgreSQL databases
#
# Everything is bounded in time or count and talks to 127.0.0.1 only; each
# PostgreSQL measurement gets a database of its own, dropped at the end. The
# helpers shared with bench/soak.sh are in bench/lib.sh. Every `## ` section
# of the existing report that the report does not generate (hand-written
# ones, bench/soak.sh's "Soak") is carried over verbatim after the
# generated ones, in its original order.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  USERS=${BENCH_USERS:-100000}
  SCALES=${BENCH_SCALES:-"10000 100000"}
  MODE="quick (BENCH_QUICK=1)"
else
  USERS=${BENCH_USERS:-1000000}
  SCALES=${BENCH_SCALES:-"10000 100000 1000000"}
  MODE="full"
fi
RUNS=${BENCH_RUNS:-3}
BACKENDS=${BENCH_BACKENDS:-"sqlite postgres"}
EVENTS=${BENCH_EVENTS:-10000}
INGEST_SECS=${BENCH_INGEST_SECS:-6}
TOUCH_ALL=${BENCH_TOUCH_ALL:-$BACKENDS}
H2_SECS=${BENCH_H2LOAD_SECS:-3}
MIX_SECS=${BENCH_MIX_SECS:-5}
H2_FLAGS=("-c1 -m1" "-c4 -m32" "-c16 -m64")
FEATURE_FLAGS=("-c1 -m1" "-c16 -m64")
ONLY=${BENCH_ONLY:-}
FEATURE_RUNS=${BENCH_FEATURE_RUNS:-$RUNS}
INGEST_C=(1 8 32)
RECONCILE_EVENTS=${BENCH_RECONCILE_EVENTS:-10000}
SECRET="whsec_bench_$(date +%s)"
case $ONLY in
  "") RAW_DEFAULT=$ROOT/bench/results.raw ;;
  feature) RAW_DEFAULT=$ROOT/bench/results-feature.raw ;;
  rss) RAW_DEFAULT=/dev/null ;; # the lines are printed; nothing to keep
  *) echo "BENCH_ONLY is feature or rss, not $ONLY" >&2; exit 2 ;;
esac
RAW="${BENCH_RAW:-$RAW_DEFAULT}"
OUT="${BENCH_OUT:-$ROOT/bench/results.md}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

SERVER_PID=""
BASELINE_PID=""
BASELINE_ND_PID=""
PG_DB=""

cleanup() {
  set +e
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -n "$BASELINE_PID" ] && kill -TERM "$BASELINE_PID" 2>/dev/null && wait "$BASELINE_PID" 2>/dev/null
  [ -n "$BASELINE_ND_PID" ] && kill -TERM "$BASELINE_ND_PID" 2>/dev/null && wait "$BASELINE_ND_PID" 2>/dev/null
  if [ "${BENCH_KEEP:-0}" != 1 ]; then
    pg_drop_db
    for db in "${SCRATCH_PG[@]}"; do
      psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    done
    rm -rf "$WORK"
  else
    echo "kept $WORK ${PG_DB:+and database $PG_DB}" >&2
  fi
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------
need_tools h2load:nghttp2-client jq curl

log "building (release)"
cargo build --release -q -p tollgate -p tollgate-bench

: > "$RAW"
emit() { echo "$1" | tee -a "$RAW"; }

# --- helpers -----------------------------------------------------------------
# The HasAccess request frame for h2load (one hot user), and the same with
# a feature its product carries (see preload) for the feature pairs.
"$BIN/h2load-frame" encode --user user_0 --out "$WORK/body.bin" 2>/dev/null
cp "$WORK/body.bin" "$WORK/plain.bin"
"$BIN/h2load-frame" encode --user user_0 --feature bench_feature --out "$WORK/feature.bin" 2>/dev/null

# h2 ADDR TAGS FLAGS...: one h2load run on the hot user, summarized as JSON.
h2() {
  local addr=$1 tags=$2
  shift 2
  rm -f "$WORK/h2.log"
  # shellcheck disable=SC2068
  h2load -t1 $@ -D "$H2_SECS" --warm-up-time=1 -d "${H2_BODY:-$WORK/body.bin}" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    --log-file="$WORK/h2.log" "http://$addr/tollgate.v1.Entitlements/HasAccess" \
    >"$WORK/h2.out" 2>&1 || true
  emit "$("$BIN/h2load-frame" stats --output "$WORK/h2.out" --log-file "$WORK/h2.log" --tags "$tags")"
}

# addr_of TARGET: the gRPC address of `tollgate` or `baseline`.
addr_of() {
  if [ "$1" = baseline ]; then echo "$BASE_ADDR"; else echo "$GRPC_ADDR"; fi
}

# pair_order RUN A B: "A B" in odd runs, "B A" in even ones. A pair
# measured back to back always in one order carries whatever favours the
# first or the second slot (a machine settling after the step before, the
# host's load drifting), and the ratio with it; flipping the order every
# run puts it on both sides.
pair_order() {
  if [ $(($1 % 2)) = 1 ]; then echo "$2 $3"; else echo "$3 $2"; fi
}

# grpc_check ADDR TAGS: h2load only checks HTTP 200; confirm grpc-status 0
# and a decodable, granted answer for the same frame.
grpc_check() {
  local addr=$1 tags=$2 status decoded ok=false
  rm -f "$WORK/check.hdr" "$WORK/check.bin"
  curl -sS --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"${H2_BODY:-$WORK/body.bin}" -D "$WORK/check.hdr" -o "$WORK/check.bin" \
    "http://$addr/tollgate.v1.Entitlements/HasAccess" || true
  status=$(tr -d '\r' <"$WORK/check.hdr" | awk -F': ' 'tolower($1) == "grpc-status" { print $2 }' | tail -1)
  decoded=$("$BIN/h2load-frame" decode --input "$WORK/check.bin" 2>/dev/null || echo '{}')
  if [ "$status" = 0 ] && [ "$(jq -r .has_access <<<"$decoded")" = true ]; then ok=true; fi
  emit "$(jq -c --arg tags "$tags" --arg st "${status:-missing}" --argjson ok "$ok" \
    '($tags | split(",") | map(split("=") | {(.[0]): .[1]}) | add) + {grpc_status: $st, ok: $ok, answer: .}' <<<"$decoded")"
}

# feature_pairs BACKEND: HasAccess(feature=bench_feature) against a plain
# HasAccess on the same cached user, alternated (the order flips every
# run), FEATURE_RUNS pairs per flag set.
feature_pairs() {
  local backend=$1 run flags label target order
  for target in plain feature; do
    H2_BODY="$WORK/$target.bin" grpc_check "$GRPC_ADDR" "section=feature_check,backend=$backend,target=$target"
  done
  for run in $(seq 1 "$FEATURE_RUNS"); do
    order=$(pair_order "$run" plain feature)
    for flags in "${FEATURE_FLAGS[@]}"; do
      label=$(tr -d ' -' <<<"$flags")
      for target in $order; do
        # shellcheck disable=SC2086
        H2_BODY="$WORK/$target.bin" h2 "$GRPC_ADDR" \
          "section=feature,backend=$backend,target=$target,label=$label,run=$run" $flags
      done
    done
  done
}

# scratch_db BACKEND NAME: a fresh, empty database for one measurement
# (a file in WORK, or a PostgreSQL database dropped by drop_scratch or at
# exit); sets SCRATCH_URL.
SCRATCH_PG=()
scratch_db() {
  case $1 in
    sqlite)
      rm -f "$WORK/$2.db" "$WORK/$2.db-wal" "$WORK/$2.db-shm"
      SCRATCH_URL="sqlite://$WORK/$2.db"
      ;;
    postgres)
      local db="tollgate_bench_$2_$(date +%s)_$$"
      psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
      SCRATCH_PG+=("$db")
      SCRATCH_URL="postgres://postgres@127.0.0.1/$db"
      ;;
  esac
}
# drop_scratch: drops the database scratch_db last made.
drop_scratch() {
  [ "${BENCH_KEEP:-0}" = 1 ] && return 0
  case $SCRATCH_URL in
    sqlite://*) rm -f "${SCRATCH_URL#sqlite://}"* ;;
    postgres://*) psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${SCRATCH_URL##*/}" >/dev/null 2>&1 || true ;;
  esac
}

SUB_OFFSET=0
next_offset() { SUB_OFFSET=$(( (SUB_OFFSET + EVENTS / 5 + 1) % USERS )); }

# --- baseline ------------------------------------------------------------------
start_baseline() { # OUTFILE ARGS...
  local out=$1
  shift
  "$BIN/baseline" --users "$USERS" --addr 127.0.0.1:0 "$@" >"$out" 2>"$out.err" &
  LAST_PID=$!
  for _ in $(seq 1 600); do
    grep -q grpc_addr "$out" 2>/dev/null && break
    sleep 0.1
  done
  LAST_ADDR=$(sed -n 's/.*grpc_addr=//p' "$out" | head -1)
  [ -n "$LAST_ADDR" ] || { echo "baseline did not start" >&2; cat "$out.err" >&2; exit 1; }
}
if [ -z "$ONLY" ]; then
log "starting the baselines (HashMap of $USERS users; as is, and with TCP_NODELAY)"
start_baseline "$WORK/baseline.out"
BASELINE_PID=$LAST_PID
BASE_ADDR=$LAST_ADDR
start_baseline "$WORK/baseline-nodelay.out" --nodelay
BASELINE_ND_PID=$LAST_PID
BASE_ND_ADDR=$LAST_ADDR
fi

# --- per backend -----------------------------------------------------------------
for backend in $BACKENDS; do
  case $backend in
    sqlite)
      DB_URL="sqlite://$WORK/tollgate.db"
      RAW_URL="sqlite://$WORK/raw.db"
      ;;
    postgres)
      ensure_postgres
      pg_create_db tollgate_bench
      DB_URL="postgres://postgres@127.0.0.1/$PG_DB"
      RAW_URL="$DB_URL"
      ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  SLOG="$WORK/server-$backend.log"

  log "$backend: preloading $USERS users"
  emit "$("$BIN/preload" --database-url "$DB_URL" --users "$USERS" --tags "section=preload,backend=$backend")"

  log "$backend: startup time (x$RUNS)"
  for run in $(seq 1 "$RUNS"); do
    stop_server
    start_server "$DB_URL" "$SLOG"
    emit "$(tagged "section=startup,backend=$backend,run=$run" "{\"ms\": $STARTUP_MS}")"
  done
  RSS_START=$(proc_kb "$SERVER_PID" VmRSS)

  if [ "$ONLY" != rss ]; then
    log "$backend: HasAccess with a feature vs plain, one cached user (x$FEATURE_RUNS)"
    feature_pairs "$backend"
  fi
  if [ "$ONLY" = feature ]; then stop_server; continue; fi
  if [ "$ONLY" = rss ]; then TOUCH_ALL=$backend; fi
  if [ -z "$ONLY" ]; then # up to touch-all, left unindented: BENCH_ONLY skips it

  log "$backend: HasAccess hot path, h2load vs baseline"
  for run in $(seq 1 "$RUNS"); do
    for flags in "${H2_FLAGS[@]}"; do
      label=$(tr -d ' -' <<<"$flags")
      for target in $(pair_order "$run" tollgate baseline); do
        h2 "$(addr_of "$target")" "section=h2load,backend=$backend,target=$target,label=$label,run=$run" $flags
      done
    done
  done
  if [ "$backend" = "${BACKENDS%% *}" ]; then
    # Socket options do not depend on the backend: measured once. One
    # connection with 32 streams is how a gRPC client usually calls.
    log "$backend: one connection, 32 streams: Tollgate vs baseline, without and with TCP_NODELAY"
    for run in $(seq 1 "$RUNS"); do
      h2 "$GRPC_ADDR" "section=nodelay,backend=$backend,target=tollgate,label=c1m32,run=$run" -c1 -m32
      h2 "$BASE_ADDR" "section=nodelay,backend=$backend,target=baseline,label=c1m32,run=$run" -c1 -m32
      h2 "$BASE_ND_ADDR" "section=nodelay,backend=$backend,target=baseline_nodelay,label=c1m32,run=$run" -c1 -m32
    done
  fi
  grpc_check "$GRPC_ADDR" "section=grpc_check,backend=$backend,target=tollgate"
  grpc_check "$BASE_ADDR" "section=grpc_check,backend=$backend,target=baseline"

  log "$backend: realistic mix, grpc-load vs baseline"
  for run in $(seq 1 "$RUNS"); do
    for target in $(pair_order "$run" tollgate baseline); do
      [ $target = tollgate ] && warm_db "$DB_URL"
      emit "$("$BIN/grpc-load" run --addr "$(addr_of "$target")" --pattern mix --users "$USERS" -c 4 -m 16 \
        --duration "${MIX_SECS}s" --warmup 1s --seed "$run" \
        --tags "section=mix,backend=$backend,target=$target,run=$run")"
    done
  done

  log "$backend: webhook ingest vs raw inserts"
  for run in $(seq 1 "$RUNS"); do
    for c in "${INGEST_C[@]}"; do
      warm_db "$DB_URL"
      line=$("$BIN/webhook-load" --url "http://$HTTP_ADDR/webhooks/stripe" --secret "$SECRET" \
        --events "$EVENTS" --max-duration "${INGEST_SECS}s" -c "$c" --users "$USERS" \
        --sub-offset "$SUB_OFFSET" --prefix "${backend}_${c}_${run}_$$" --seed "$run" \
        --tags "section=ingest,backend=$backend,target=tollgate,c=$c,run=$run")
      emit "$line"
      next_offset
      # The ceiling inserts as many rows as Tollgate ingested (same payloads).
      sent=$(jq -r '.count' <<<"$line")
      [ "$sent" -gt 0 ] 2>/dev/null || sent=$EVENTS
      emit "$("$BIN/webhook-load" --raw-inserts "$RAW_URL" \
        --events "$sent" --max-duration "${INGEST_SECS}s" -c "$c" --users "$USERS" \
        --sub-offset "$SUB_OFFSET" --prefix "raw_${backend}_${c}_${run}_$$" --seed "$run" \
        --tags "section=ingest,backend=$backend,target=raw,c=$c,run=$run")"
      next_offset
    done
  done

  log "$backend: HasAccess p99 alone and under ~50% webhook load"
  ingest8=$(jq -s "[.[] | select(.section==\"ingest\" and .backend==\"$backend\" and .target==\"tollgate\" and .c==8) | .rps] | sort | .[length/2|floor]" "$RAW")
  mix_max=$(jq -s "[.[] | select(.section==\"mix\" and .backend==\"$backend\" and .target==\"tollgate\") | .rps] | sort | .[length/2|floor]" "$RAW")
  half_ingest=$(awk -v r="$ingest8" 'BEGIN { r = r / 2; printf "%d", (r < 10 ? 10 : r) }')
  mix_rate=${BENCH_MIX_RATE:-$(awk -v r="$mix_max" 'BEGIN { r = r / 2; printf "%d", (r < 100 ? 100 : r) }')}
  mixed_events=$(( half_ingest * (MIX_SECS + 2) + 10 ))
  for run in $(seq 1 "$RUNS"); do
    warm_db "$DB_URL"
    emit "$("$BIN/grpc-load" run --addr "$GRPC_ADDR" --pattern mix --users "$USERS" -c 4 -m 16 \
      --rate "$mix_rate" --duration "${MIX_SECS}s" --warmup 1s --seed $((run + 100)) \
      --tags "section=mixed,backend=$backend,phase=alone,run=$run")"
    "$BIN/webhook-load" --url "http://$HTTP_ADDR/webhooks/stripe" --secret "$SECRET" \
      --events "$mixed_events" -c 8 --rate "$half_ingest" --users "$USERS" --sub-offset "$SUB_OFFSET" \
      --prefix "mixed_${backend}_${run}_$$" --seed $((run + 100)) \
      --tags "section=mixed_ingest,backend=$backend,run=$run" >"$WORK/mixed_ingest.json" &
    WL_PID=$!
    next_offset
    emit "$("$BIN/grpc-load" run --addr "$GRPC_ADDR" --pattern mix --users "$USERS" -c 4 -m 16 \
      --rate "$mix_rate" --duration "${MIX_SECS}s" --warmup 1s --seed $((run + 200)) \
      --tags "section=mixed,backend=$backend,phase=with_ingest,run=$run")"
    wait "$WL_PID"
    emit "$(cat "$WORK/mixed_ingest.json")"
  done

  fi # [ -z "$ONLY" ]

  if [[ " $TOUCH_ALL " == *" $backend "* ]]; then
    log "$backend: touching all $USERS users once (cold reads), then peak RSS"
    warm_db "$DB_URL"
    emit "$("$BIN/grpc-load" run --addr "$GRPC_ADDR" --pattern sequential --users "$USERS" -c 4 -m 16 \
      --tags "section=touch_all,backend=$backend")"
    touched=true
  else
    touched=false
  fi
  emit "$(tagged "section=rss,backend=$backend" \
    "{\"touched_all\": $touched, \"before_kb\": $RSS_START, \"vmrss_kb\": $(proc_kb "$SERVER_PID" VmRSS), \"vmhwm_kb\": $(proc_kb "$SERVER_PID" VmHWM), \"log_bytes\": $(stat -c %s "$SLOG")}")"

  if [ -z "$ONLY" ] && [[ " $SCALES " == *" $USERS "* ]]; then
    # The scaling table's row at this scale takes ingest, touch-all and RSS
    # from above; the hot path is measured again with the cache full.
    log "$backend: scaling, $USERS subjects: hot path after touch-all"
    h2 "$GRPC_ADDR" "section=scale,backend=$backend,users=$USERS,figure=hot" -c16 -m64
  fi

  stop_server

  if [ -z "$ONLY" ]; then
    log "$backend: reconciler catch-up, $RECONCILE_EVENTS events from a fake Stripe (x$RUNS)"
    for run in $(seq 1 "$RUNS"); do
      scratch_db "$backend" "reconcile_$run"
      emit "$("$BIN/reconcile-load" --tollgate "$BIN/tollgate" --database-url "$SCRATCH_URL" \
        --events "$RECONCILE_EVENTS" --subs "$RECONCILE_EVENTS" \
        --tags "section=reconcile,backend=$backend,run=$run")"
      drop_scratch
    done

    for n in $SCALES; do
      [ "$n" = "$USERS" ] && continue
      log "$backend: scaling, $n subjects: ingest c=8, touch-all, peak RSS, hot path"
      scratch_db "$backend" "scale_$n"
      emit "$("$BIN/preload" --database-url "$SCRATCH_URL" --users "$n" \
        --tags "section=scale_preload,backend=$backend,users=$n")"
      start_server "$SCRATCH_URL" "$WORK/server-$backend-$n.log"
      rss0=$(proc_kb "$SERVER_PID" VmRSS)
      emit "$("$BIN/webhook-load" --url "http://$HTTP_ADDR/webhooks/stripe" --secret "$SECRET" \
        --events "$EVENTS" --max-duration "${INGEST_SECS}s" -c 8 --users "$n" \
        --prefix "scale_${backend}_${n}_$$" --seed 1 \
        --tags "section=scale,backend=$backend,users=$n,figure=ingest")"
      emit "$("$BIN/grpc-load" run --addr "$GRPC_ADDR" --pattern sequential --users "$n" -c 4 -m 16 \
        --tags "section=scale,backend=$backend,users=$n,figure=cold")"
      emit "$(tagged "section=scale,backend=$backend,users=$n,figure=rss" \
        "{\"before_kb\": $rss0, \"vmrss_kb\": $(proc_kb "$SERVER_PID" VmRSS), \"vmhwm_kb\": $(proc_kb "$SERVER_PID" VmHWM)}")"
      h2 "$GRPC_ADDR" "section=scale,backend=$backend,users=$n,figure=hot" -c16 -m64
      stop_server
      drop_scratch
    done
  fi
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(commit_desc)
cpu=$(cpu_desc)
if [ "$ONLY" = rss ]; then
  log "done in $(( $(date +%s) - T_START )) s (no report written)"
  exit 0
fi
if [ "$ONLY" = feature ]; then
  log "writing the feature section of $OUT"
  "$BIN/report" --raw "$RAW" --out "$WORK/feature.md" --section feature \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --uname "$(uname -srm)" --cpu "$cpu" \
    --commit "$commit" --users "$USERS" --runs "$FEATURE_RUNS" \
    --note "load average (1/5/15 min) at start: $LOAD_START, at end: $LOAD_END"
  md_replace_section "$OUT" "$(head -1 "$WORK/feature.md" | sed 's/^## //')" "$WORK/feature.md"
  cat "$WORK/feature.md"
  exit 0
fi
log "writing $OUT"
"$BIN/report" --raw "$RAW" --out "$OUT" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --uname "$(uname -srm)" --cpu "$cpu" \
  --commit "$commit" --users "$USERS" --runs "$RUNS" --scales "$SCALES" --mode "$MODE" \
  --wall-time "$(( $(date +%s) - T_START )) s" \
  --note "load generators (h2load -t1, grpc-load, webhook-load) share the machine's vCPUs with the server" \
  --note "the database's files are read once before each realistic-mix, ingest, under-ingest and touch-all run (\`warm_db\` in bench/lib.sh): this VM pages out file pages left unread for about a minute" \
  --note "load average (1/5/15 min) at start: $LOAD_START, at end: $LOAD_END (anything above ~0 at start is other work on the machine)"
log "done in $(( $(date +%s) - T_START )) s"
cat "$OUT"
