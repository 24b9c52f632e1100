#!/usr/bin/env bash
# Runs the clients nobody at riskid wrote against a fresh server on the demo data:
# tools/readme_grpcurl.py (every grpcurl line of the README) and tools/api_check.py
# (grpcio, grpcio-status, tritonclient). Needs tools/setup.sh once. Loopback only; the server
# is stopped at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RISKID_BIN:-target/debug/riskid}
[ -x "$BIN" ] || cargo build --quiet
[ -x tools/.venv/bin/python ] || tools/setup.sh
DIR=$(mktemp -d)
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$BIN" demo --keep "$DIR/demo-data" > "$DIR/demo.log"
key() { "$BIN" keys create --data-dir "$DIR/demo-data" "$@" 2>/dev/null; }
export ANALYST=$(key --role analyst) SCHOOL=$(key --role school --school 110001)
export LW=$(key --role link_worker --school 110001) SERVICE=$(key --role service)
PORT=$(tools/.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MPORT=$(tools/.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --data-dir "$DIR/demo-data" --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" > "$DIR/serve.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
# The README's lines name port 50051; they run here against the fresh server's port.
sed "s/127.0.0.1:50051/127.0.0.1:$PORT/g" README.md > "$DIR/README.md"
tools/.venv/bin/python tools/readme_grpcurl.py "$DIR/README.md"
tools/.venv/bin/python tools/api_check.py "127.0.0.1:$PORT" 110001 "$SCHOOL" "$SERVICE"
curl -sf "127.0.0.1:$MPORT/metrics" | grep -c '^riskid_rpc_requests_total' | sed 's/^/ok  metrics: /; s/$/ method and code series counted/'
