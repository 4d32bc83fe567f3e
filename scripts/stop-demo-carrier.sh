#!/usr/bin/env bash
# Stop the demo carrier that start-demo-carrier.sh started (pid file run/demo-carrier.pid).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIDFILE="${TOLLGATE_RUN_DIR:-$ROOT/run}/demo-carrier.pid"

[[ -f "$PIDFILE" ]] || exit 0
pid="$(cat "$PIDFILE")"
# Only signal the process if it is still ours: a stale pid file may name a recycled pid.
if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'admin.demo.carrier'; then
    printf '==> stopping the demo carrier (pid %s)\n' "$pid"
    kill -TERM "$pid"
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PIDFILE"
