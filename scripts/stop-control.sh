#!/usr/bin/env bash
# Stop the control service that start-stack.sh started (pid file run/control.pid); Kamailio keeps running and
# keeps routing with the projection it has (scripts/stop-stack.sh stops both).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIDFILE="${TOLLGATE_RUN_DIR:-$ROOT/run}/control.pid"

say() { printf '==> %s\n' "$*"; }

if [[ ! -f "$PIDFILE" ]]; then
    say "control service not running (no $PIDFILE)"
    exit 0
fi
pid="$(cat "$PIDFILE")"
# Only signal the process if it is still ours: a stale pid file may name a recycled pid.
if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tollgate-control'; then
    say "stopping control service (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 80); do           # up to 20 s for a graceful stop (gRPC grace, publisher, pool)
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after 20 s: killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
else
    say "control service not running (stale pid file)"
fi
rm -f "$PIDFILE"
