#!/usr/bin/env bash
# Checks deploy/tollgate.service with systemd-analyze: the unit parses,
# every directive is known, and the hardening exposure stays low. Needs a
# built binary (the unit's ExecStart is pointed at it for the check).
# Usage: deploy/verify.sh [path/to/tollgate]   (default: target/debug/tollgate)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/tollgate}")
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIPPED deploy/verify.sh: systemd-analyze not installed (apt-get install systemd)" >&2
  exit 0
fi
[ -x "$bin" ] || { echo "no tollgate binary at $bin: build it first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "s|^ExecStart=/usr/local/bin/tollgate|ExecStart=$bin|" \
    -e "s|^EnvironmentFile=/etc/tollgate/tollgate.env|EnvironmentFile=$PWD/deploy/tollgate.env.example|" \
    deploy/tollgate.service > "$work/tollgate.service"
# verify prints problems but exits 0 for some of them: fail on any output.
out=$(systemd-analyze verify --man=no "$work/tollgate.service" 2>&1 || true)
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "deploy/tollgate.service: systemd-analyze verify found problems" >&2
  exit 1
fi
echo "deploy/tollgate.service: systemd-analyze verify ok"
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  systemd-analyze security --offline=true --threshold=20 --no-pager "$work/tollgate.service" | tail -1
fi
