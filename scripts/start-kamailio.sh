#!/usr/bin/env bash
# Start tollgate's Kamailio (relay mode, UDP and TCP on 127.0.0.1:5060, TLS on 5061) on the projection the
# control service writes. Run by start-stack.sh after the control service; safe to run again: it stops the
# previous one first, and calls in progress survive (the node's dialogs are kept in PostgreSQL and loaded again).
# Environment: TOLLGATE_SIP_LISTEN (default udp:127.0.0.1:5060; TCP listens on the same port),
# TOLLGATE_RUN_DIR (default run/: pid files, logs, the rendered cfg), TOLLGATE_SIP_TLS_PORT (default 5061; 0 = no TLS), TOLLGATE_SIP_MODE (relay | redirect), TOLLGATE_SIP_SHM_MB
# (Kamailio's shared memory, default 1024: every relayed call's transaction and dialog live there),
# TOLLGATE_SIP_SHED_PERCENT (new calls get 503 Overloaded below this share free, default 15),
# TOLLGATE_SIP_MAX_CPS (new calls a second before 503 Overloaded, default 0 = no limit: set it to what the node
# was measured to carry), TOLLGATE_SIP_SOURCE_MAX_CPS (the most of them one source address may make, default 0
# = no limit: a flooding customer is shed at its share, the others keep the rest),
# TOLLGATE_SIP_SECRETS (default /etc/tollgate/sip.secrets: the digest nonce secret and topology-hiding key,
# made once; every node of a stack needs the same file), TOLLGATE_SIP_TLS_DIR (default /etc/tollgate/sip-tls:
# certificate.pem and key.pem, a self-signed pair is made when missing), TOLLGATE_SIP_ALLOCATOR (qm | tlsf, default
# qm: see below), TOLLGATE_SIP_PKG_ALLOCATOR (the same for private memory, default: as TOLLGATE_SIP_ALLOCATOR), TOLLGATE_SIP_TOPOLOGY_HIDING (on | off, default on: off leaves Kamailio's topoh out, every trunk
# then sees the caller's topology),
# TOLLGATE_SIP_METRICS_LISTEN (default 127.0.0.1:9465: HOST:PORT where the node serves Prometheus' /metrics over
# plain HTTP, README "Metrics"; "off" = no metrics, Kamailio then loads no HTTP module at all).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN="${TOLLGATE_RUN_DIR:-$ROOT/run}"
RUNDIR="$RUN/kamailio"
LOG="$RUN/kamailio.log"
LISTEN="${TOLLGATE_SIP_LISTEN:-udp:127.0.0.1:5060}"
TLS_PORT="${TOLLGATE_SIP_TLS_PORT:-5061}"
MODE="${TOLLGATE_SIP_MODE:-relay}"
SHM_MB="${TOLLGATE_SIP_SHM_MB:-1024}"
SHED_PERCENT="${TOLLGATE_SIP_SHED_PERCENT:-15}"
MAX_CPS="${TOLLGATE_SIP_MAX_CPS:-0}"
SOURCE_MAX_CPS="${TOLLGATE_SIP_SOURCE_MAX_CPS:-0}"
SECRETS="${TOLLGATE_SIP_SECRETS:-/etc/tollgate/sip.secrets}"
TLS_DIR="${TOLLGATE_SIP_TLS_DIR:-/etc/tollgate/sip-tls}"
TOPOLOGY_HIDING="${TOLLGATE_SIP_TOPOLOGY_HIDING:-on}"
# Kamailio's shared-memory allocator. qm, the default: Kamailio 5.6.3's tls module with Debian 12's OpenSSL 3 can
# free a block twice (kamailio#3791); qm notices and carries on, TLSF has no such guard and crashes later anywhere
# (seen here twice, in tm's timer). tlsf spends ~13 % less CPU per relayed call: for nodes without TLS.
ALLOCATOR="${TOLLGATE_SIP_ALLOCATOR:-qm}"
# The private (per-process) memory's allocator, by default the same: tlsf there cut a shed INVITE's cost from 31 to
# 21 µs (qm_malloc was a quarter of it), with shared memory - where the double free lands - still on qm.
PKG_ALLOCATOR="${TOLLGATE_SIP_PKG_ALLOCATOR:-$ALLOCATOR}"
METRICS_LISTEN="${TOLLGATE_SIP_METRICS_LISTEN:-127.0.0.1:9465}"
[[ "$METRICS_LISTEN" == off ]] && METRICS_LISTEN=""

say() { printf '==> %s\n' "$*"; }

bash scripts/stop-kamailio.sh
mkdir -p "$RUNDIR/images"

# The secrets outlive restarts: a new topology-hiding key would make calls in progress undecodable.
if [[ ! -f "$SECRETS" ]]; then
    say "writing $SECRETS (digest nonce secret, topology-hiding key)"
    mkdir -p "$(dirname "$SECRETS")"
    (umask 077; printf 'auth_secret=%s\ntopoh_key=%s\n' "$(openssl rand -hex 16)" "$(openssl rand -hex 16)" >"$SECRETS")
fi
AUTH_SECRET="$(sed -n 's/^auth_secret=//p' "$SECRETS")"
TOPOH_KEY="$(sed -n 's/^topoh_key=//p' "$SECRETS")"

EXTRA_ARGS=()
[[ "$TOPOLOGY_HIDING" == off ]] && EXTRA_ARGS+=(--no-topology-hiding)
TLS_ARGS=()
if [[ "$TLS_PORT" != 0 ]]; then
    if [[ ! -f "$TLS_DIR/certificate.pem" ]]; then
        say "making a self-signed SIP TLS certificate in $TLS_DIR (replace it with your own)"
        mkdir -p "$TLS_DIR"
        (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=tollgate" \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/certificate.pem" >/dev/null 2>&1)
    fi
    TLS_ARGS=(--tls-port "$TLS_PORT" --tls-certificate "$TLS_DIR/certificate.pem" --tls-key "$TLS_DIR/key.pem")
fi

# The projection's Redis and namespace, and the database, as the control service sees them (config file +
# environment); the node's dialog tables in that database (made on first use: callstate/dialogs.py).
NODE="${LISTEN#*:}"
mapfile -t settings < <(.venv/bin/python -c '
from control.config import load_config
config = load_config()
print(config.redis_url, config.redis_namespace, config.dsn, sep="\n")')
REDIS_URL="${settings[0]}" NAMESPACE="${settings[1]}" DSN="${settings[2]}"
read -r DB_URL DIALOG_TABLE VARS_TABLE < <(.venv/bin/python -m callstate.dialogs --dsn "$DSN" \
    --node "$NODE" --namespace "$NAMESPACE") || { say "cannot prepare the dialog tables in PostgreSQL"; exit 1; }
.venv/bin/python -m kemi.render --listen "$LISTEN" --rundir "$RUNDIR" --redis-url "$REDIS_URL" \
    --namespace "$NAMESPACE" --image-dir "$RUNDIR/images" --mode "$MODE" --shed-free-percent "$SHED_PERCENT" \
    --max-cps "$MAX_CPS" --source-max-cps "$SOURCE_MAX_CPS" --node-id "$NODE" --dialog-db "$DB_URL" "$DIALOG_TABLE" "$VARS_TABLE" \
    --metrics-listen "$METRICS_LISTEN" \
    --auth-secret "$AUTH_SECRET" --topoh-key "$TOPOH_KEY" "${TLS_ARGS[@]}" "${EXTRA_ARGS[@]}" >"$RUNDIR/kamailio.cfg"
# Kamailio's embedded Python is the system's (/usr/lib/libpython3): a shell's PYTHONHOME, PYTHONPATH or another
# Python first on PATH (pyenv) must not leak into it, or its standard library does not load.
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root)
"${CLEAN_ENV[@]}" kamailio -f "$RUNDIR/kamailio.cfg" -c >"$RUNDIR/check.log" 2>&1 || {
    tail -n 20 "$RUNDIR/check.log" >&2
    if grep -qi "python" "$RUNDIR/check.log"; then
        say "Kamailio's app_python3 could not load the script with the system's Python 3: is python3 (Debian's)" \
            "installed, and was .venv made from a Python 3.11 (the same minor version)?"
    fi
    say "kamailio.cfg does not check out"
    exit 1
}
say "starting Kamailio on $LISTEN ($MODE mode, TLS port $TLS_PORT, metrics ${METRICS_LISTEN:-off}, log $LOG)"
printf '\n=== %s start-kamailio.sh\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" >>"$LOG"
# -E with a log file: Kamailio logs to stderr.
rm -f "$RUNDIR/kamailio.pid"
"${CLEAN_ENV[@]}" kamailio -f "$RUNDIR/kamailio.cfg" -P "$RUNDIR/kamailio.pid" -Y "$RUNDIR" -E -m "$SHM_MB" -M 16 \
    -x "$ALLOCATOR" -X "$PKG_ALLOCATOR" </dev/null >>"$LOG" 2>&1 \
    || true  # (a failed start is reported below, with the log's end)
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
