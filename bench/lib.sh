# shellcheck shell=bash
# Shell helpers shared by bench/run.sh and bench/soak.sh. Sourced, not run.
#
# The sourcing script sets, before calling them: T_START (date +%s, for log
# timestamps), BIN (the release target dir), SECRET (the webhook secret the
# server is started with) and, for pg_create_db, PG_DB is set here and
# should be dropped by the caller's cleanup (pg_drop_db).

log() { printf '\n==> [%4ss] (load %s) %s\n' "$(( $(date +%s) - T_START ))" "$(cut -d' ' -f1-3 /proc/loadavg)" "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# need_tools CMD[:APT_PACKAGE]...: installs the packages of missing commands.
need_tools() {
  local spec need_apt=()
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || need_apt+=("${spec#*:}")
  done
  if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
}

# ensure_postgres: PostgreSQL answering on 127.0.0.1:5432 with trust auth
# for local TCP (installed and started if need be).
ensure_postgres() {
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q; then
    return 0
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
  fi
  log "starting PostgreSQL"
  for dir in /etc/postgresql/*/; do
    as_root pg_ctlcluster --skip-systemctl-redirect "$(basename "$dir")" main start || true
  done
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && return 0
    sleep 1
  done
  echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
  return 1
}

# pg_create_db PREFIX: a fresh database PREFIX_<time>_<pid>; sets PG_DB.
pg_create_db() {
  PG_DB="$1_$(date +%s)_$$"
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $PG_DB" >/dev/null
}

# warm_db DATABASE_URL: reads the database's files once, so that the
# measurement that follows starts with them in the OS page cache and
# measures the server rather than the VM's disk. These VMs page out file
# pages left unread for about a minute (a DAMON `pageout` scheme, see
# /sys/kernel/mm/damon/admin/kdamonds): a SQLite file preloaded before
# the hot-path runs was mostly gone by the realistic mix, whose cold
# reads then went to the disk (side by side, SQLite mix at 28,000 req/s
# with the file paged out against 45,000 with it cached). PostgreSQL's
# files need read access to its data directory (root, or its owner);
# without it they are left as they are.
warm_db() {
  case "$1" in
    sqlite://*) cat "${1#sqlite://}" "${1#sqlite://}-wal" >/dev/null 2>&1 || true ;;
    postgres://*)
      local dir
      dir=$(psql -h 127.0.0.1 -U postgres -d "${1##*/}" -Atc \
        "SELECT current_setting('data_directory') || '/base/' || oid FROM pg_database WHERE datname = current_database()" 2>/dev/null) || return 0
      [ -n "$dir" ] && find "$dir" -maxdepth 1 -type f -exec cat {} + >/dev/null 2>&1
      return 0
      ;;
  esac
}

# pg_drop_db: drops PG_DB if set (for cleanup traps; never fails).
pg_drop_db() {
  [ -n "${PG_DB:-}" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1
  PG_DB=""
}

# start_server DATABASE_URL LOGFILE: starts `tollgate serve` on free ports and
# waits for the first successful HasAccess. Sets SERVER_PID, GRPC_ADDR,
# HTTP_ADDR, STARTUP_MS.
# shellcheck disable=SC2034 # those are for the caller
start_server() {
  : > "$2"
  local t0 probe t1
  t0=$(date +%s%N)
  env -u STRIPE_API_KEY \
    TOLLGATE_DATABASE_URL="$1" \
    TOLLGATE_HTTP_ADDR=127.0.0.1:0 \
    TOLLGATE_GRPC_ADDR=127.0.0.1:0 \
    TOLLGATE_LOG_FORMAT=json \
    STRIPE_WEBHOOK_SECRET="$SECRET" \
    "$BIN/tollgate" serve >>"$2" 2>&1 &
  SERVER_PID=$!
  if ! probe=$("$BIN/grpc-load" probe --log-file "$2" --user user_0 --timeout 120s --tags section=probe); then
    echo "server did not answer; its log:" >&2
    tail -20 "$2" >&2
    return 1
  fi
  t1=$(jq -r .first_ok_unix_ns <<<"$probe")
  GRPC_ADDR=$(jq -r .grpc_addr <<<"$probe")
  HTTP_ADDR=$(jq -r .http_addr <<<"$probe")
  STARTUP_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
}

stop_server() {
  if [ -n "${SERVER_PID:-}" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

# proc_kb PID FIELD: a /proc/PID/status field (VmRSS, VmHWM, Threads, ...).
proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# tagged TAGS JSON-FIELDS: a JSON line from tags plus extra fields.
tagged() {
  jq -cn --arg tags "$1" --argjson f "$2" '($tags | split(",") | map(split("=") | {(.[0]): (.[1] | tonumber? // .)}) | add) + $f'
}

# The machine and the code, as the reports quote them.
cpu_desc() { echo "$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) vCPUs"; }
commit_desc() {
  local commit
  commit=$(git rev-parse --short HEAD)
  git diff --quiet HEAD -- src migrations proto build.rs 2>/dev/null || commit="$commit (+ uncommitted changes)"
  echo "$commit"
}

# md_replace_section FILE TITLE NEWFILE: replaces the `## TITLE` section of
# FILE with NEWFILE's content (which starts with that heading), in place;
# appends it after a blank line if FILE has no such section. Everything else
# in FILE stays byte for byte.
md_replace_section() {
  local file=$1 title=$2 new=$3 tmp
  tmp=$(mktemp "$file.XXXXXX")
  if [ -f "$file" ] && grep -qxF "## $title" "$file"; then
    awk -v h="## $title" -v new="$new" '
      $0 == h { while ((getline line < new) > 0) print line; skip = 1; next }
      skip && /^## / { skip = 0; print ""; }
      !skip { print }' "$file" >"$tmp"
  else
    { [ -s "$file" ] && { cat "$file"; echo; }; cat "$new"; } >"$tmp"
  fi
  mv "$tmp" "$file"
}
