#!/usr/bin/env bash
# The same benchmark runtime served from two or more checkouts of this repository (e.g. a
# commit before a change and after it), interleaved round by round; prints req/s and the
# server's CPU time per request (utime + stime / requests) for each. Server on CPU 0, wrk on
# CPU 1. Every checkout uses this checkout's .venv, with its own src/ first on PYTHONPATH.
#   bash benchmarks/ab_checkouts.sh rounds seconds app path checkout...
#   e.g. git worktree add /tmp/before HEAD~1
#        bash benchmarks/ab_checkouts.sh 4 5 full /health /tmp/before .
# ``app`` is a runtime in benchmarks/middleware_apps.py (the first checkout's file is used
# by all, so that only src/ differs).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,10p' "$0"
  exit 2
fi
ROUNDS=$1
SECONDS_PER_RUN=$2
APP=$3
URL_PATH=$4
shift 4
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=$HERE/.venv/bin/python
PORT=${PORT:-3301}
CHECKOUTS=()
for checkout in "$@"; do CHECKOUTS+=("$(cd "$checkout" && pwd)"); done
APPS_DIR=$(mktemp -d)
trap 'rm -rf "$APPS_DIR"' EXIT
mkdir -p "$APPS_DIR/benchmarks"
cp "${CHECKOUTS[0]}/benchmarks/middleware_apps.py" "$APPS_DIR/benchmarks/"
touch "$APPS_DIR/benchmarks/__init__.py"
printf 'checkout\treq/s\tcpu us/request\n'
for _ in $(seq 1 "$ROUNDS"); do
  for checkout in "${CHECKOUTS[@]}"; do
    (cd "$APPS_DIR" && PYTHONPATH="$checkout/src:$APPS_DIR" LOG_LEVEL=info \
      exec taskset -c 0 "$PYTHON" -m nessen serve "benchmarks.middleware_apps:$APP" \
      --port "$PORT" 2>/dev/null) &
    for _ in $(seq 1 100); do
      if curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
      sleep 0.1
    done
    pid=$(pgrep -f "middleware_apps:$APP --port $PORT" | head -1)
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    report=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$PORT$URL_PATH")
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    requests=$(awk '/requests in/ {print $1}' <<<"$report")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$report")
    us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "%.1f", t / hz / n * 1e6}')
    printf '%s\t%s\t%s\n' "$checkout" "$rps" "$us"
    kill -TERM "$pid"
    wait || true
  done
done
