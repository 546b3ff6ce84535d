#!/usr/bin/env bash
# The same FastAPI app (tests/e2e/apps/fastapi_app.py) under `nessen serve` and under
# `uvicorn --loop uvloop --http httptools`. Server pinned to CPU 0, wrk to CPU 1,
# `wrk -t1 -c64 -d8s --latency`, rounds interleaved (round 1: every server, round 2: every
# server...), median req/s and p99 latency per server and path. Besides req/s it reports the
# server's CPU time per request ((utime + stime) / requests), which other load on the
# machine disturbs less than throughput.
#   bash benchmarks/asgi_fastapi.sh [rounds] [seconds] [servers...]
# Servers: nessen, uvicorn (both as shipped: access log on, to a file), nessen-quiet,
# uvicorn-quiet (access log off: LOG_LEVEL=warning / --no-access-log).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
shift $(( $# > 2 ? 2 : $# ))
SERVERS=("$@")
if [ ${#SERVERS[@]} -eq 0 ]; then
  SERVERS=(nessen uvicorn nessen-quiet uvicorn-quiet)
fi
PATHS=(/items/42?q=x /json)
APP=tests.e2e.apps.fastapi_app:app
PORT=${PORT_BENCH:-3317}
OUT=${OUT:-/tmp/nessen-asgi-bench}
mkdir -p "$OUT"
: > "$OUT/results.tsv"

cpu_ticks() {  # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

start_server() {  # name round -> sets PID
  local name=$1 log="$OUT/$1.$2.log"
  case "$name" in
    nessen)
      HOST=127.0.0.1 PORT=$PORT taskset -c 0 .venv/bin/nessen serve "$APP" 2>"$log" &
      ;;
    nessen-quiet)
      LOG_LEVEL=warning HOST=127.0.0.1 PORT=$PORT taskset -c 0 .venv/bin/nessen serve "$APP" \
        2>"$log" &
      ;;
    uvicorn)
      taskset -c 0 .venv/bin/uvicorn "$APP" --host 127.0.0.1 --port "$PORT" --loop uvloop \
        --http httptools >"$log" 2>&1 &
      ;;
    uvicorn-quiet)
      taskset -c 0 .venv/bin/uvicorn "$APP" --host 127.0.0.1 --port "$PORT" --loop uvloop \
        --http httptools --no-access-log >"$log" 2>&1 &
      ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  PID=$!  # taskset execs the server: this is the Python process itself
  for _ in $(seq 1 200); do
    if curl -fs "http://127.0.0.1:$PORT/json" >/dev/null 2>&1; then return; fi
    sleep 0.05
  done
  echo "$name did not start; see $log" >&2
  exit 1
}

run_wrk() {  # name round path
  local before after report rps requests us p99 non2xx
  before=$(cpu_ticks "$PID")
  report=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:$PORT$3")
  after=$(cpu_ticks "$PID")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$report")
  requests=$(awk '/requests in/ {print $1}' <<<"$report")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$report")
  if [ -n "$non2xx" ] || grep -q "Socket errors" <<<"$report"; then
    echo "$1 $3: errors in the run:" >&2
    echo "$report" >&2
    exit 1
  fi
  # p99 in ms, whatever unit wrk picked
  p99=$(awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v}' <<<"$report")
  us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.1f", t / hz / n * 1e6}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$p99" "$us" | tee -a "$OUT/results.tsv"
}

echo "load before: $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  for name in "${SERVERS[@]}"; do
    start_server "$name" "$round"
    curl -fs "http://127.0.0.1:$PORT/items/1" >/dev/null  # warm up the route
    for path in "${PATHS[@]}"; do
      run_wrk "$name" "$round" "$path"
    done
    kill -TERM "$PID"
    wait "$PID" || true
  done
done
echo "load after: $(uptime)"

.venv/bin/python - "$OUT/results.tsv" <<'EOF'
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    name, _, path, rps, p99, us = line.split("\t")
    rows[(path, name)].append((float(rps), float(p99), float(us)))
print("| path | server | median req/s | median p99 (ms) | server CPU us/request | rounds |")
print("|---|---|---|---|---|---|")
for (path, name), runs in sorted(rows.items()):
    rps = statistics.median(r[0] for r in runs)
    p99 = statistics.median(r[1] for r in runs)
    us = statistics.median(r[2] for r in runs)
    print(f"| `{path}` | {name} | {rps:,.0f} | {p99:.2f} | {us:.1f} | {len(runs)} |")
EOF
