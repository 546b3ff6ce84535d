#!/usr/bin/env bash
# Throughput of /health and a 2 KB JSON route with no middleware, the full default stack and
# each built-in alone; rounds interleaved, median reported. Server on CPU 0, wrk on CPU 1.
# Besides req/s it reports the server's CPU time per request (utime + stime / requests),
# which other load on the machine disturbs less than throughput.
#   bash benchmarks/middleware_overhead.sh [rounds] [seconds] [apps...]
# An app may carry a log level: "full@warning" runs the full stack with LOG_LEVEL=warning
# (the access-log middleware runs but its records are dropped before being built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
shift $(( $# > 2 ? 2 : $# ))
APPS=("$@")
if [ ${#APPS[@]} -eq 0 ]; then
  APPS=(bare full full@warning passthrough request_id access_log security_headers rate_limit
    compression)
fi
PORT=3201
OUT=${OUT:-/tmp/nessen-mw-bench}
mkdir -p "$OUT"
: > "$OUT/results.tsv"

cpu_ticks() {  # utime + stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

run_wrk() {  # pid app round label path [header]
  local pid=$1 label=$4 path=$5 header=${6:-}
  local args=(-t1 -c64 -d"${SECONDS_PER_RUN}s")
  if [ -n "$header" ]; then args+=(-H "$header"); fi
  local before after report rps requests us
  before=$(cpu_ticks "$pid")
  report=$(taskset -c 1 wrk "${args[@]}" "http://127.0.0.1:$PORT$path")
  after=$(cpu_ticks "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$report")
  requests=$(awk '/requests in/ {print $1}' <<<"$report")
  # server CPU per request: robust to wrk and to other load on the machine
  us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.1f", t / hz / n * 1e6}')
  printf '%s\t%s\t%s\t%s\t%s\n' "$2" "$3" "$label" "$rps" "$us" | tee -a "$OUT/results.tsv"
}

for round in $(seq 1 "$ROUNDS"); do
  for entry in "${APPS[@]}"; do
    app=${entry%@*}
    level=info
    if [ "$entry" != "$app" ]; then level=${entry#*@}; fi
    LOG_LEVEL=$level taskset -c 0 .venv/bin/nessen serve "benchmarks.middleware_apps:$app" \
      --port "$PORT" 2>"$OUT/$entry.$round.log" &
    for _ in $(seq 1 100); do
      if curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
      sleep 0.1
    done
    pid=$(pgrep -f "middleware_apps:$app" | head -1)  # the Python process itself
    run_wrk "$pid" "$entry" "$round" health /health
    run_wrk "$pid" "$entry" "$round" json /json
    run_wrk "$pid" "$entry" "$round" json-br /json "Accept-Encoding: gzip, deflate, br, zstd"
    kill -TERM "$pid"
    wait || true
  done
done

# medians per app and route: req/s, and server CPU microseconds per request
python3 - "$OUT/results.tsv" <<'PY'
import statistics, sys
from collections import defaultdict
rps, cpu = defaultdict(list), defaultdict(list)
for line in open(sys.argv[1]):
    app, _, label, r, us = line.rstrip("\n").split("\t")
    rps[(app, label)].append(float(r))
    cpu[(app, label)].append(float(us))
apps = list(dict.fromkeys(app for app, _ in rps))
labels = list(dict.fromkeys(label for _, label in rps))
print("app\t" + "\t".join(f"{l} req/s\t{l} cpu us" for l in labels))
for app in apps:
    cells = [f"{statistics.median(rps[(app, l)]):.0f}\t{statistics.median(cpu[(app, l)]):.1f}" for l in labels]
    print(app + "\t" + "\t".join(cells))
PY
