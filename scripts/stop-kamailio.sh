#!/usr/bin/env bash
# Stop the Kamailio that start-kamailio.sh started (pid file run/kamailio/kamailio.pid).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIDFILE="${TOLLGATE_RUN_DIR:-$ROOT/run}/kamailio/kamailio.pid"

say() { printf '==> %s\n' "$*"; }

[[ -f "$PIDFILE" ]] || exit 0
pid="$(cat "$PIDFILE")"
if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kamailio'; then
    say "stopping Kamailio (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PIDFILE"
