#!/usr/bin/env bash
# Make a Debian 12 machine ready for tollgate, and do nothing that is already done:
#   - the Debian packages (PostgreSQL, Redis, Python build tools, Kamailio + its Python/Redis modules, SIPp,
#     Prometheus for the metrics test);
#   - Kamailio 6.0's Debian 13 root file system (scripts/kamailio60-rootfs.sh), for the wire tests on 6.0, when
#     TOLLGATE_BOOTSTRAP_KAMAILIO60=yes (run-tests.sh sets it; the stack itself runs Debian 12's 5.6);
#   - PostgreSQL and Redis running on 127.0.0.1, with 127.0.0.1 connections as user `postgres` allowed;
#   - the virtualenv .venv with tollgate installed in editable mode (`pip install -e '.[test]'`).
# Installing packages, starting PostgreSQL and editing pg_hba.conf need root; the rest does not.
# Called by start-stack.sh and run-tests.sh; safe to run again at any time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(
    postgresql redis-server
    python3-venv python3-dev build-essential
    kamailio kamailio-python3-modules kamailio-redis-modules kamailio-tls-modules kamailio-postgres-modules
    sip-tester openssl
    mmdebstrap
    poppler-utils fonts-dejavu-core
    curl ca-certificates
    prometheus
)
PYTHON="${PYTHON:-python3}"          # the interpreter that creates .venv
STAMP=.venv/.tollgate-installed      # touched after a successful pip install
LOGS="$ROOT/run"                     # apt and pip output go to run/apt.log and run/pip.log
mkdir -p "$LOGS"

say() { printf '==> %s\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
need_root() { [[ $EUID -eq 0 ]] || die "$1 needs root: run  sudo bash scripts/bootstrap.sh"; }

# quietly LOG COMMAND...: run COMMAND with its output appended to LOG; show the end of LOG if it fails.
quietly() {
    local log=$1; shift
    printf '\n$ %s\n' "$*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "'$*' failed (full output in $log)"
    fi
}

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2; shift 2
    local tries=$((seconds * 2))
    until "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        ((tries > 0)) || die "$what not ready after ${seconds}s"
        sleep 0.5
    done
}

# --- Debian packages ---------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    need_root "installing ${missing[*]}"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly "$LOGS/apt.log" apt-get update
    quietly "$LOGS/apt.log" apt-get install -y -o Dpkg::Use-Pty=0 "${missing[@]}"
    # Under systemd the package enables and starts a stock Kamailio on port 5060; tollgate runs its own
    # Kamailio with its own configuration, so switch the stock one off when this script installed it.
    if [[ " ${missing[*]} " == *" kamailio "* && -d /run/systemd/system ]]; then
        say "disabling the stock kamailio.service (tollgate starts Kamailio itself)"
        systemctl disable --now kamailio.service >/dev/null 2>&1 || true
    fi
    # Likewise Debian's Prometheus, installed for tests/test_metrics.py (which starts its own on a free port):
    # the stock one scrapes only itself. Point a Prometheus of your own at tollgate (README "Metrics").
    if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
        say "disabling the stock prometheus.service (the tests start their own)"
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
else
    say "Debian packages present"
fi

# --- PostgreSQL --------------------------------------------------------------------------------------
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }
if pg_ready; then
    say "PostgreSQL is running"
else
    need_root "starting PostgreSQL"
    # The newest installed major version; its cluster "main" is created by the package's postinst.
    version="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
    [[ -n "$version" ]] || die "no PostgreSQL server under /usr/lib/postgresql"
    if [[ ! -d "/etc/postgresql/$version/main" ]]; then
        say "creating PostgreSQL $version cluster main"
        pg_createcluster "$version" main >/dev/null
    fi
    port="$(pg_conftool -s "$version" main show port 2>/dev/null || echo 5432)"
    [[ "$port" == 5432 ]] || die "PostgreSQL $version/main is configured for port $port, tollgate expects 5432:
    set 'port = 5432' in /etc/postgresql/$version/main/postgresql.conf (or stop the server using 5432)"
    if ! pg_ctlcluster "$version" main status >/dev/null 2>&1; then
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    wait_for 30 "PostgreSQL" pg_ready
fi

# Debian's pg_hba.conf only has peer auth for the postgres user: allow TCP from 127.0.0.1 when it fails.
pg_tcp_ok() { PGCONNECT_TIMEOUT=5 psql -w -X -q -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; }
if ! pg_tcp_ok; then
    need_root "editing pg_hba.conf"
    hba="$(cd / && runuser -u postgres -- psql -X -At -c 'show hba_file')"
    [[ -f "$hba" ]] || die "cannot find pg_hba.conf (got '$hba')"
    say "allowing 'host all postgres 127.0.0.1/32 trust' in $hba"
    cp -p "$hba" "$hba.before-tollgate"
    { printf '# added by tollgate scripts/bootstrap.sh: local TCP as postgres without a password\n'
      printf 'host all postgres 127.0.0.1/32 trust\n'
      cat "$hba.before-tollgate"; } >"$hba"
    (cd / && runuser -u postgres -- psql -X -q -c 'select pg_reload_conf()' >/dev/null)
    wait_for 10 "PostgreSQL on 127.0.0.1 as postgres" pg_tcp_ok
fi

# Every Kamailio node keeps its dialogs in PostgreSQL over one connection per process (about 13 for a node
# of the default size); a few nodes, the control service's pool and the test suite's nodes outgrow the
# stock 100 connections.
PG_MAX_CONNECTIONS=300
connections="$(psql -w -X -At -h 127.0.0.1 -U postgres -d postgres -c 'show max_connections')"
if (( connections < PG_MAX_CONNECTIONS )); then
    need_root "raising PostgreSQL's max_connections"
    cluster="$(pg_lsclusters --no-header 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')"
    [[ -n "$cluster" ]] || die "PostgreSQL allows $connections connections; tollgate needs $PG_MAX_CONNECTIONS:
    set max_connections = $PG_MAX_CONNECTIONS in postgresql.conf and restart it"
    say "raising PostgreSQL's max_connections from $connections to $PG_MAX_CONNECTIONS (restarting $cluster)"
    psql -w -X -q -h 127.0.0.1 -U postgres -d postgres -c "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS"
    # shellcheck disable=SC2086  # "<version> <name>"
    pg_ctlcluster --skip-systemctl-redirect $cluster restart
    wait_for 30 "PostgreSQL" pg_tcp_ok
fi

# --- Redis -------------------------------------------------------------------------------------------
redis_ready() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }
if redis_ready; then
    say "Redis is running"
else
    say "starting Redis (append-only file in /var/lib/redis, fsync every second)"
    mkdir -p /var/lib/redis
    # The safe configuration of the README's "Redis is a cache of PostgreSQL": a crash loses at most a second.
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly yes --appendfsync everysec \
        --dir /var/lib/redis >/dev/null
    wait_for 15 "Redis" redis_ready
fi

# --- Kamailio 6.0 -----------------------------------------------------------------------------------
# The wire tests run on Kamailio 6.0 too (scripts/run-tests.sh): Debian 13's, in a root file system of its own,
# with fastpath's extensions for its Python 3.13. Made once (about a minute, ~550 MB), then only checked; only
# for the tests (run-tests.sh asks for it): start-stack.sh runs 5.6 and need not wait for it.
if [[ "${TOLLGATE_BOOTSTRAP_KAMAILIO60:-no}" != yes ]]; then
    :
elif [[ $EUID -eq 0 ]]; then
    bash scripts/kamailio60-rootfs.sh
else
    say "not root: Kamailio 6.0's root file system left as it is (sudo bash scripts/kamailio60-rootfs.sh)"
fi

# --- Python virtualenv -------------------------------------------------------------------------------
if ! .venv/bin/python -c '' >/dev/null 2>&1; then
    say "creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    rm -rf .venv
    "$PYTHON" -m venv .venv
fi
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" || setup.py -nt "$STAMP" ]]; then
    say "installing tollgate into .venv (pip install -e '.[test]', generates the gRPC stubs)"
    quietly "$LOGS/pip.log" .venv/bin/pip install --disable-pip-version-check -e '.[test]'
    touch "$STAMP"
else
    # pip is not needed again, but a .proto edited since the last build must still reach the stubs.
    stale=""
    for proto in proto/tollgate/*/*.proto; do
        pb2="${proto%.proto}_pb2.py"
        if [[ ! -f "$pb2" || "$proto" -nt "$pb2" ]]; then stale=yes; fi
    done
    if [[ -n "$stale" ]]; then
        say "regenerating gRPC stubs from proto/"
        .venv/bin/python proto/generate.py
    fi
    # Likewise a Cython source edited since the last build must reach its extension module.
    for source in fastpath/*.pyx fastpath/*.pxd; do
        if [[ "$source" -nt "$STAMP" ]]; then
            say "rebuilding the Cython extensions of fastpath/"
            quietly "$LOGS/pip.log" .venv/bin/python setup.py build_ext --inplace
            touch "$STAMP"
            break
        fi
    done
    say "tollgate is installed in .venv"
fi
