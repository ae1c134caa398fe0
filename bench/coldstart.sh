#!/usr/bin/env bash
# bench/coldstart.sh: time from `parley dev` exec to a 200 from /readyz, on a data
# directory that already holds a cluster (setup has run; the first start's initdb is
# reported separately). Runs N restarts (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
make -s build
DATA=$(mktemp -d /tmp/parley-cold-XXXX); chmod 755 "$DATA"
trap 'rm -rf "$DATA"' EXIT
run() {
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local t0; t0=$(date +%s.%N)
  ./bin/parley dev --addr 127.0.0.1:$port --data-dir "$DATA" >"$DATA/out.log" 2>&1 &
  local pid=$!
  until curl -sf http://127.0.0.1:$port/readyz >/dev/null 2>&1; do sleep 0.02; done
  local t1; t1=$(date +%s.%N)
  kill -INT $pid; wait $pid
  python3 -c "print(f'{$t1-$t0:.2f}')"
}
echo "first start (initdb + migrations): $(run) s"
for i in $(seq 1 "$N"); do echo "restart $i: $(run) s"; done
