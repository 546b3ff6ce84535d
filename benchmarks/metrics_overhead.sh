#!/usr/bin/env bash
# Prometheus metrics overhead (by hand, not part of `make test`): `/health` under wrk with
# metrics off, on (batched, the default) and direct (prometheus-client updated on every
# request), in interleaved rounds. Prints each round's req/s and the server's CPU time per
# request (from /proc, so less sensitive to other load on the machine), then the medians.
#
#   bash benchmarks/metrics_overhead.sh [rounds] [seconds]
#
# Server pinned to CPU 0, wrk to CPU 1, access log off (LOG_LEVEL=warning).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-8}
port=${PORT_UNDER_TEST:-3098}
ticks=$(getconf CLK_TCK)
declare -A rates cpus

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for round in $(seq "$rounds"); do
  for variant in off on direct; do
    LOG_LEVEL=warning PYTHONPATH=benchmarks taskset -c 0 .venv/bin/nessen serve \
      "metrics_app:$variant" --host 127.0.0.1 --port "$port" 2>/tmp/nessen-metrics-bench.log &
    server=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    before=$(cpu_ticks "$server")
    out=$(taskset -c 1 wrk -t1 -c64 -d"${seconds}s" "http://127.0.0.1:$port/health")
    after=$(cpu_ticks "$server")
    kill -TERM "$server"; wait "$server" || true
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    count=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(awk -v t="$((after - before))" -v hz="$ticks" -v n="$count" 'BEGIN {printf "%.2f", t / hz / n * 1e6}')
    echo "round $round  $variant  $rps req/s  $us us CPU/request"
    rates[$variant]+="$rps "
    cpus[$variant]+="$us "
  done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for variant in off on direct; do
  echo "median  $variant  $(median "${rates[$variant]}") req/s  $(median "${cpus[$variant]}") us CPU/request"
done
