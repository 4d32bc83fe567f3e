#!/usr/bin/env bash
# Start tollgate's Kamailio (relay mode, UDP 127.0.0.1:5060) on the projection the control service writes.
# Run by start-stack.sh after the control service; safe to run again (stops the previous one first).
# Environment: TOLLGATE_SIP_LISTEN (default udp:127.0.0.1:5060), TOLLGATE_SIP_MODE (relay | redirect),
# TOLLGATE_SIP_SHM_MB (Kamailio's shared memory, default 1024: every relayed call's transaction and dialog
# live there), TOLLGATE_SIP_SHED_PERCENT (relay: new calls get 503 Overloaded below this share free, default 15).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNDIR="$ROOT/run/kamailio"
LOG="$ROOT/run/kamailio.log"
LISTEN="${TOLLGATE_SIP_LISTEN:-udp:127.0.0.1:5060}"
MODE="${TOLLGATE_SIP_MODE:-relay}"
SHM_MB="${TOLLGATE_SIP_SHM_MB:-1024}"
SHED_PERCENT="${TOLLGATE_SIP_SHED_PERCENT:-15}"

say() { printf '==> %s\n' "$*"; }

bash scripts/stop-kamailio.sh
mkdir -p "$RUNDIR/images"
# The projection's Redis and namespace, as the control service sees them (config file + environment).
read -r REDIS_URL NAMESPACE REALM < <(.venv/bin/python - <<'PYEOF'
import psycopg
from control.config import load_config
config = load_config()
with psycopg.connect(config.dsn) as conn:
    realm = conn.execute("SELECT sip_realm FROM company").fetchone()[0]
print(config.redis_url, config.redis_namespace, realm)
PYEOF
)
.venv/bin/python - "$LISTEN" "$RUNDIR" "$REDIS_URL" "$NAMESPACE" "$MODE" "$REALM" "$SHED_PERCENT" \
    >"$RUNDIR/kamailio.cfg" <<'PYEOF'
import os, sys
from kemi.render import render
listen, rundir, redis_url, namespace, mode, realm, shed = sys.argv[1:]
sys.stdout.write(render(listen=listen, rundir=os.path.abspath(rundir), redis_url=redis_url, namespace=namespace,
                        image_dir=os.path.abspath(os.path.join(rundir, "images")), mode=mode, realm=realm,
                        shed_free_percent=int(shed)))
PYEOF
kamailio -f "$RUNDIR/kamailio.cfg" -c >"$RUNDIR/check.log" 2>&1 || {
    tail -n 20 "$RUNDIR/check.log" >&2
    say "kamailio.cfg does not check out"
    exit 1
}
say "starting Kamailio on $LISTEN ($MODE mode, log $LOG)"
printf '\n=== %s start-kamailio.sh\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" >>"$LOG"
# -E with a log file: Kamailio logs to stderr.
kamailio -f "$RUNDIR/kamailio.cfg" -P "$RUNDIR/kamailio.pid" -Y "$RUNDIR" -E -m "$SHM_MB" -M 16 </dev/null >>"$LOG" 2>&1
for _ in $(seq 1 40); do
    [[ -s "$RUNDIR/kamailio.pid" ]] && break
    sleep 0.25
done
if [[ ! -s "$RUNDIR/kamailio.pid" ]]; then
    tail -n 20 "$LOG" >&2
    say "Kamailio did not start (is $LISTEN taken?)"
    exit 1
fi
say "Kamailio is running (pid $(cat "$RUNDIR/kamailio.pid"))"
