#!/usr/bin/env bash
# Reliability check (by hand, not part of `make test`): slowhttptest's slowloris (-H),
# slow-body (-B) and slow-read (-X) attacks against `nessen serve`, each printing whether the
# server stayed available to a probe connection throughout.
#
#   bash benchmarks/slowhttptest.sh [connections] [seconds]
#
# Needs Debian's slowhttptest (installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-1000}
length=${2:-30}
port=${PORT_UNDER_TEST:-3099}

command -v slowhttptest >/dev/null || { apt-get update -qq && apt-get install -y -qq slowhttptest; }
[ -x .venv/bin/nessen ] || make setup
ulimit -n "$(ulimit -Hn)" || true

HEADERS_TIMEOUT=5000 BODY_TIMEOUT=5000 SEND_TIMEOUT=5000 LOG_LEVEL=warning \
  .venv/bin/nessen serve --host 127.0.0.1 --port "$port" 2>/tmp/nessen-slowhttptest.log &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

status=0
for mode in H B X; do
  out=$(slowhttptest -"$mode" -c "$connections" -r 500 -i 1 -l "$length" -p 3 \
        -u "http://127.0.0.1:$port/" -s 8192 -k 2 -n 1 -w 8 -y 16 -z 8 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' || true)
  # slowhttptest prints the probe's verdict once a second; any NO means the probe failed.
  if grep -q "service available:.*NO" <<<"$out"; then verdict="UNAVAILABLE at some point"; status=1
  else verdict="available throughout"; fi
  peak=$(grep -o "connected: *[0-9]*" <<<"$out" | grep -o "[0-9]*" | sort -n | tail -1 || true)
  ended=$(grep -A1 "Test ended" <<<"$out" | tr '\n' ' ' | sed 's/  */ /g' || true)
  echo "mode -$mode, $connections connections, ${length}s: $verdict; peak connected ${peak:-?}; ${ended}"
done
curl -fs "http://127.0.0.1:$port/health" >/dev/null && echo "after the attacks: /health OK" || { echo "after the attacks: /health FAILED"; status=1; }
exit $status
