#!/usr/bin/env bash
# Start the demo carrier (admin/demo/carrier.py): a UDP gateway on loopback that answers every call, echoes
# Record-Route and hangs up after a few seconds. start-stack.sh runs it and points the demo trunks at it.
# Safe to run again: it stops the previous one first.
# Environment: TOLLGATE_DEMO_CARRIER (default 127.0.0.1:5090), TOLLGATE_DEMO_HOLD (seconds before it hangs up,
# default 5; 0 = only the caller hangs up), TOLLGATE_RUN_DIR (default run/: pid file and log).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN="${TOLLGATE_RUN_DIR:-$ROOT/run}"
CARRIER="${TOLLGATE_DEMO_CARRIER:-127.0.0.1:5090}"
HOLD="${TOLLGATE_DEMO_HOLD:-5}"

say() { printf '==> %s\n' "$*"; }

bash scripts/stop-demo-carrier.sh
mkdir -p "$RUN"
printf '\n=== %s start-demo-carrier.sh\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" >>"$RUN/demo-carrier.log"
setsid .venv/bin/python -m admin.demo.carrier --listen "$CARRIER" --hold "$HOLD" </dev/null \
    >>"$RUN/demo-carrier.log" 2>&1 &
echo $! >"$RUN/demo-carrier.pid"
# It binds at once; a taken port shows as an early exit.
sleep 0.5
if ! kill -0 "$(cat "$RUN/demo-carrier.pid")" 2>/dev/null; then
    tail -n 5 "$RUN/demo-carrier.log" >&2
    say "the demo carrier did not start (is udp:$CARRIER taken? set TOLLGATE_DEMO_CARRIER)"
    exit 1
fi
say "demo carrier answering on udp:$CARRIER (pid $(cat "$RUN/demo-carrier.pid"), log $RUN/demo-carrier.log)"
