#!/usr/bin/env bash
# Two builds of Tollgate side by side in one run, with the bare tonic
# baseline: HasAccess on one hot user with h2load, the three targets
# interleaved for AB_ROUNDS rounds, so a noisy machine hits them alike.
#
#   git worktree add /tmp/before <rev> && (cd /tmp/before && cargo build --release -p tollgate)
#   cargo build --release -p tollgate -p tollgate-bench
#   OLD=/tmp/before/target/release bench/ab.sh
#
# Prints one line per run; take medians. SQLite, AB_USERS preloaded users.
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=${NEW:-$PWD/target/release}
OLD=${OLD:?set OLD to the release directory of the build to compare with}
ROUNDS=${AB_ROUNDS:-7}
W=$(mktemp -d /tmp/ab.XXXX)
USERS=${AB_USERS:-50000}
"$NEW/preload" --database-url "sqlite://$W/a.db" --users $USERS --tags x >/dev/null
cp "$W/a.db" "$W/b.db"; for f in "$W"/a.db-*; do [ -e "$f" ] && cp "$f" "$W/b.db${f#$W/a.db}"; done
"$NEW/baseline" --users $USERS --addr 127.0.0.1:0 --nodelay > "$W/base.out" 2>&1 &
BASE=$!
start() { # BIN DB OUT
  STRIPE_WEBHOOK_SECRET=whsec_x TOLLGATE_DATABASE_URL="sqlite://$2" TOLLGATE_HTTP_ADDR=127.0.0.1:0 \
    TOLLGATE_GRPC_ADDR=127.0.0.1:0 TOLLGATE_LOG_FORMAT=json RUST_LOG=warn,tollgate::startup=info \
    "$1/tollgate" serve > "$3" 2>&1 &
  echo $!
}
OLDPID=$(start "$OLD" "$W/a.db" "$W/old.log")
NEWPID=$(start "$NEW" "$W/b.db" "$W/new.log")
trap 'kill $BASE $OLDPID $NEWPID 2>/dev/null; rm -rf $W' EXIT
sleep 3
addr() { grep -o '"grpc_addr":"[^"]*"' "$1" | head -1 | cut -d'"' -f4; }
BA=$(grep -oE '127\.0\.0\.1:[0-9]+' "$W/base.out" | head -1)
OA=$(addr "$W/old.log"); NA=$(addr "$W/new.log")
echo "baseline $BA old $OA new $NA"
"$NEW/h2load-frame" encode --user user_0 --out "$W/body.bin" >/dev/null 2>&1
run() { # ADDR FLAGS
  h2load -t1 $2 -D 3 --warm-up-time=1 -d "$W/body.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://$1/tollgate.v1.Entitlements/HasAccess" 2>&1 | grep -E "^finished in" | grep -oE "[0-9.]+ req/s"
}
for flags in "${AB_FLAGS:--c16 -m64}"; do
  for round in $(seq 1 "$ROUNDS"); do
    for who in base old new; do
      case $who in base) a=$BA;; old) a=$OA;; new) a=$NA;; esac
      echo "$flags round=$round $who $(run "$a" "$flags")"
    done
  done
done
