#!/usr/bin/env bash
# bench/api.sh: throughput and latency of GET /v1/agents/{id} authenticated by API key,
# against `parley dev` (managed PostgreSQL) on this machine, with wrk as the load
# generator. Also reports CPU time per request (Parley and PostgreSQL, from /proc).
#
#   bench/api.sh [duration=30s] [connections=64]
#
# The per-user rate limit stays on (the limiter runs on every request) but is raised so
# the benchmark measures serving, not 429s.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-30s}
CONNS=${2:-64}
command -v wrk >/dev/null || { echo "wrk missing: run scripts/setup"; exit 1; }
make -s build
DATA=$(mktemp -d /tmp/parley-bench-XXXX); chmod 755 "$DATA"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PARLEY_RATE_LIMIT_USER=1000000000 PARLEY_LOG_LEVEL=warn ./bin/parley dev --addr 127.0.0.1:$PORT --data-dir "$DATA" >"$DATA/out.log" 2>"$DATA/err.log" &
PID=$!
trap 'kill -INT $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do grep -q "Ctrl-C stops" "$DATA/out.log" 2>/dev/null && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT
EMAIL=$(awk '/email /{print $2; exit}' "$DATA/out.log"); PASS=$(awk '/password /{print $2; exit}' "$DATA/out.log")
TOKEN=$(curl -sf $URL/v1/auth/login -H 'Content-Type: application/json' -d "{\"email\":\"$EMAIL\",\"password\":\"$PASS\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
AGENT=$(curl -sf $URL/v1/agents -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"agent_name":"Bench","begin_message":"Hello","response_engine":{"system_prompt":"You are a helpful receptionist for a dental clinic. Answer briefly."},"functions":[{"name":"book","description":"Book a visit","url":"https://example.com/book","parameters":{"type":"object","properties":{"day":{"type":"string"}}}}]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["agent_id"])')
KEY=$(curl -sf $URL/v1/api-keys -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"name":"bench","scopes":["agents:read"]}' \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("key") or d.get("api_key") or d.get("secret"))')
curl -sf $URL/v1/agents/$AGENT -H "Authorization: Bearer $KEY" >/dev/null
PGPIDS=$(pgrep -f "postgres.*$DATA" | tr '\n' ' ' || true)
cpu() { local t=0; for p in "$@"; do for c in /proc/$p/task/*/stat /proc/$p/stat; do :; done; [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15+$16+$17}' /proc/$p/stat))); done; echo $t; }
pg_cpu() { local t=0; for p in $(pgrep -u postgres postgres; pgrep -f "postgres: " ); do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
HZ=$(getconf CLK_TCK)
# Warm up, then measure.
wrk -t2 -c$CONNS -d3s -H "Authorization: Bearer $KEY" $URL/v1/agents/$AGENT >/dev/null
P0=$(awk '{print $14+$15}' /proc/$PID/stat); G0=$(pg_cpu)
wrk -t2 -c$CONNS -d$DUR --latency -H "Authorization: Bearer $KEY" $URL/v1/agents/$AGENT | tee "$DATA/wrk.txt"
P1=$(awk '{print $14+$15}' /proc/$PID/stat); G1=$(pg_cpu)
REQS=$(awk '/requests in/{print $1}' "$DATA/wrk.txt")
python3 - "$P0" "$P1" "$G0" "$G1" "$REQS" "$HZ" <<'PY'
import sys
p0,p1,g0,g1,reqs,hz=map(float,sys.argv[1:])
print(f"\nCPU per request: parley {(p1-p0)/hz/reqs*1e6:.1f} µs, postgres {(g1-g0)/hz/reqs*1e6:.1f} µs (over {int(reqs)} requests)")
PY
