#!/usr/bin/env bash
# README command 1: start the whole tollgate stack with demo data (Debian 12, as root).
#   1. scripts/bootstrap.sh: Debian packages, PostgreSQL and Redis running, .venv installed;
#   2. the database named by the configured DSN (default "tollgate"), created when missing;
#   3. /etc/tollgate/control.toml (or $TOLLGATE_CONFIG) with a fresh admin token, when missing; a private CA,
#      a server certificate for 127.0.0.1/localhost and an operator client certificate in /etc/tollgate/tls
#      (next to the config), when missing, and the service set to mutual TLS with them;
#   4. ~/.config/tollgate/admin.toml for tollgate-admin, with that token and the client certificate;
#   5. the control service (re)started in the background: pid run/control.pid, log run/control.log;
#   6. the demo carrier on loopback (scripts/start-demo-carrier.sh) and the demo data (scripts/demo_data.sh);
#   7. Kamailio, unless it runs already, then a summary ending with the demo call command.
# Safe to run again: it keeps the configuration and the data, and restarts the control service only: a running
# Kamailio keeps its calls (restart it on its own with scripts/start-kamailio.sh; its calls survive that too).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export TOLLGATE_CONFIG="${TOLLGATE_CONFIG:-/etc/tollgate/control.toml}"
PY=.venv/bin/python
# Pid files and logs: run/ of this clone, or TOLLGATE_RUN_DIR (a second stack on one machine needs its own).
RUN="${TOLLGATE_RUN_DIR:-$ROOT/run}"
PIDFILE="$RUN/control.pid"
LOG="$RUN/control.log"

say() { printf '==> %s\n' "$*"; }
die() { printf 'start-stack: %s\n' "$*" >&2; exit 1; }

bash scripts/bootstrap.sh

# --- control service configuration --------------------------------------------------------------------
TLS_DIR="$(dirname "$TOLLGATE_CONFIG")/tls"
if ! mkdir -p "$(dirname "$TOLLGATE_CONFIG")" 2>/dev/null || [[ ! -w "$(dirname "$TOLLGATE_CONFIG")" ]]; then
    die "cannot write $(dirname "$TOLLGATE_CONFIG"): run as root (sudo bash scripts/start-stack.sh)"
fi
# A private CA, the server's certificate (127.0.0.1, ::1, localhost and this host's name) and an operator
# client certificate; kept when present (control/access/tls.py).
say "TLS material in $TLS_DIR"
"$PY" -m control.access.tls "$TLS_DIR" --host "$(hostname)" | sed 's/^/    made /'

if [[ ! -f "$TOLLGATE_CONFIG" ]]; then
    say "writing $TOLLGATE_CONFIG with a new admin token"
    (
        umask 077
        "$PY" - "$TOLLGATE_CONFIG" <<'EOF'
import json, secrets, sys, time
path = sys.argv[1]
token = "tga_" + secrets.token_urlsafe(32)  # never starts with "-", which a command line takes for an option
with open(path, "x") as f:
    f.write(f"""# tollgate control service: written by scripts/start-stack.sh on {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.
# Every key, its default and its TOLLGATE_* environment override: config/control.example.toml.
listen = "127.0.0.1:50051"
dsn = "postgresql://postgres@127.0.0.1:5432/tollgate"
redis_url = "redis://127.0.0.1:6379/0"
# Break-glass bearer tokens with the admin role (named operators: tollgate-admin operators). Keep this file
# mode 600.
admin_tokens = [{json.dumps(token)}]
""")
EOF
    )
else
    say "keeping $TOLLGATE_CONFIG"
fi
chmod 600 "$TOLLGATE_CONFIG"
# A configuration from before TLS (neither certificates nor plaintext = true) would not start: give it the
# private CA's, with client certificates required.
"$PY" - "$TOLLGATE_CONFIG" "$TLS_DIR" <<'EOF'
import sys, tomllib
path, tls = sys.argv[1:]
with open(path, "rb") as f:
    current = tomllib.load(f)
if not any(k in current for k in ("tls_cert_file", "tls_key_file", "plaintext")):
    with open(path, "a") as f:
        f.write(f"""
# Mutual TLS with the private CA of scripts/start-stack.sh (control/access/tls.py): clients need its certificate.
tls_cert_file = "{tls}/server.pem"
tls_key_file = "{tls}/server.key"
tls_client_ca_file = "{tls}/ca.pem"
""")
    print(f"==> {path}: TLS with {tls}")
EOF

# The effective settings (file + TOLLGATE_* overrides), read by the service's own loader.
# Line 1: client address, 2: DSN, 3: first admin token, 4: transport (tls, mtls or plaintext).
mapfile -t settings < <("$PY" - <<'EOF'
from control.config import load_config
config = load_config()
host, _, port = config.listen.rpartition(":")
if host in ("", "0.0.0.0", "[::]", "::", "*"):  # listening on every interface: talk to it over loopback
    host = "127.0.0.1"
print(f"{host}:{port}")
print(config.dsn)
print(config.admin_tokens[0] if config.admin_tokens else "")
print("plaintext" if not config.tls_cert_file else "mtls" if config.tls_client_ca_file else "tls")
EOF
)
((${#settings[@]} == 4)) || die "cannot read the configuration $TOLLGATE_CONFIG"
ADDRESS="${settings[0]}"
DSN="${settings[1]}"
TOKEN="${settings[2]}"
TRANSPORT="${settings[3]}"
[[ -n "$TOKEN" ]] || die "no admin_tokens in $TOLLGATE_CONFIG (nor in TOLLGATE_ADMIN_TOKENS)"

# --- database ----------------------------------------------------------------------------------------
created="$("$PY" - "$DSN" <<'EOF'
import sys
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

dsn = sys.argv[1]
name = conninfo_to_dict(dsn).get("dbname") or "tollgate"
with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=10) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")
    else:
        print(f"database {name} exists")
EOF
)" || die "cannot reach PostgreSQL with $DSN"
say "$created"

# --- CLI configuration -------------------------------------------------------------------------------
# write_cli_config HOME_DIR OWNER: ~/.config/tollgate/admin.toml with this server's address, admin token and
# TLS settings; the CA and the operator client certificate are copied beside it (owned by OWNER, key mode
# 600), since the originals in /etc/tollgate/tls are root's. An existing file is kept when it already holds
# one of the admin tokens and TLS settings that fit (it may carry other choices).
write_cli_config() {
    local home=$1 owner=$2 dir="$1/.config/tollgate" file="$1/.config/tollgate/admin.toml" group
    group="$(id -gn "$owner")"
    if [[ ! -d "$home/.config" ]]; then
        install -d -m 700 -o "$owner" -g "$group" "$home/.config"
    fi
    install -d -m 700 -o "$owner" -g "$group" "$dir"
    if [[ "$TRANSPORT" != plaintext ]]; then
        install -m 644 -o "$owner" -g "$group" "$TLS_DIR/ca.pem" "$dir/ca.pem"
        install -m 600 -o "$owner" -g "$group" "$TLS_DIR/client.pem" "$dir/client.pem"
        install -m 600 -o "$owner" -g "$group" "$TLS_DIR/client.key" "$dir/client.key"
    fi
    if [[ -f "$file" ]] && "$PY" - "$file" "$TRANSPORT" <<'EOF'
import sys, tomllib
from control.config import load_config
with open(sys.argv[1], "rb") as f:
    current = tomllib.load(f)
tls_ok = current.get("plaintext") is True if sys.argv[2] == "plaintext" else "ca_file" in current
sys.exit(0 if current.get("token") in load_config().admin_tokens and tls_ok else 1)
EOF
    then
        say "keeping $file"
        return
    fi
    say "writing $file (address $ADDRESS, admin token, $TRANSPORT)"
    (
        umask 077
        "$PY" - "$file" "$ADDRESS" "$TOKEN" "$TRANSPORT" "$dir" <<'EOF'
import json, sys
path, address, token, transport, directory = sys.argv[1:]
with open(path, "w") as f:
    f.write("# tollgate-admin: written by scripts/start-stack.sh\n")
    f.write(f"address = {json.dumps(address)}\ntoken = {json.dumps(token)}\n")
    if transport == "plaintext":
        f.write("plaintext = true\n")
    else:
        f.write(f"ca_file = {json.dumps(directory + '/ca.pem')}\n")
        f.write(f"cert_file = {json.dumps(directory + '/client.pem')}\n")
        f.write(f"key_file = {json.dumps(directory + '/client.key')}\n")
EOF
    )
    chown "$owner:$group" "$file"
}
write_cli_config "$HOME" "$(id -un)"
if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root && "$SUDO_USER" != "$(id -un)" ]]; then
    # Started with sudo: the user who typed it gets a working CLI too.
    write_cli_config "$(getent passwd "$SUDO_USER" | cut -d: -f6)" "$SUDO_USER"
fi

# --- control service ---------------------------------------------------------------------------------
bash scripts/stop-control.sh
if "$PY" - "$ADDRESS" <<'EOF'
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
except OSError:
    sys.exit(1)
EOF
then
    die "something else already listens on $ADDRESS: stop it, or set listen in $TOLLGATE_CONFIG"
fi

say "starting the control service on $ADDRESS (log $LOG)"
mkdir -p "$RUN"
printf '\n=== %s start-stack.sh: starting tollgate-control\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" >>"$LOG"
# setsid: the service outlives this shell and its terminal; it keeps the pid written below.
setsid .venv/bin/tollgate-control </dev/null >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"

# Wait (up to 30 s) for the standard gRPC health check to answer SERVING, while the process lives.
if ! "$PY" - "$ADDRESS" "$(cat "$PIDFILE")" <<'EOF'
import os, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from admin import config

address, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
with config.open_channel(config.resolve(address, None, None)) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("the control service exited")
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                sys.exit(0)
        except grpc.RpcError:
            pass
        time.sleep(0.5)
sys.exit("no SERVING health answer within 30 s")
EOF
then
    echo "--- last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    die "the control service did not come up"
fi
say "control service is SERVING on $ADDRESS (pid $(cat "$PIDFILE"))"

# --- demo carrier ------------------------------------------------------------------------------------
# A gateway on loopback that answers every call and hangs up after TOLLGATE_DEMO_HOLD seconds (admin/demo/carrier.py):
# the demo trunks point at it, so a demo call completes without any real carrier.
bash scripts/start-demo-carrier.sh

# --- demo data ---------------------------------------------------------------------------------------
TOLLGATE_ADDRESS="$ADDRESS" TOLLGATE_TOKEN="$TOKEN" bash scripts/demo_data.sh

# --- Kamailio ----------------------------------------------------------------------------------------
# Started when it is not running; a running one keeps its calls and follows the projection by itself.
if pid="$(cat "$RUN/kamailio/kamailio.pid" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    say "Kamailio keeps running (pid $pid); to restart it: bash scripts/start-kamailio.sh (calls survive)"
else
    bash scripts/start-kamailio.sh
fi

# --- summary -----------------------------------------------------------------------------------------
METRICS="$(.venv/bin/python -c 'from control.config import load_config; print(load_config().metrics_listen or "off")')"
cat <<EOF

tollgate control service
  address      $ADDRESS (gRPC, $TRANSPORT; CA and certificates in $TLS_DIR)
  pid / log    $PIDFILE  /  $LOG
  config       $TOLLGATE_CONFIG (admin token in admin_tokens)
  CLI config   $HOME/.config/tollgate/admin.toml (address + the same token)
  SIP          Kamailio on ${TOLLGATE_SIP_LISTEN:-udp:127.0.0.1:5060} (log $RUN/kamailio.log)
  demo carrier udp:${TOLLGATE_DEMO_CARRIER:-127.0.0.1:5090} answers every call, hangs up after ${TOLLGATE_DEMO_HOLD:-5} s (log $RUN/demo-carrier.log)
  metrics      control http://$METRICS/metrics, Kamailio http://${TOLLGATE_SIP_METRICS_LISTEN:-127.0.0.1:9465}/metrics
  stop         bash scripts/stop-stack.sh

Accounts (demo data):
EOF
TOLLGATE_ADDRESS="$ADDRESS" TOLLGATE_TOKEN="$TOKEN" .venv/bin/tollgate-admin accounts list | sed 's/^/  /'
cat <<EOF

Use the CLI:
  $ROOT/.venv/bin/tollgate-admin accounts list
  $ROOT/.venv/bin/tollgate-admin accounts get 9000000002
  $ROOT/.venv/bin/tollgate-admin --help            (or: source .venv/bin/activate)
List the gRPC services through server reflection:
  python3 scripts/list-services.py --methods
Place a call from the demo prepaid customer's SIP device through Kamailio to the demo carrier:
  bash scripts/demo-call.sh
EOF
