#!/usr/bin/env bash
# Kamailio 6.0 on this Debian 12 machine: a Debian 13 (trixie) root file system with Kamailio 6.0.1 and its
# Python 3.13, and tollgate's Cython extensions built for that Python, in this checkout's fastpath/ next to the
# host's (the ABI tag in the file name keeps cpython-311 and cpython-313 apart). Debian 12 only has 5.6.3, and
# Kamailio embeds the system's libpython, so 6.0 needs Debian 13's userland: scripts/kamailio60.sh runs it there.
#   TOLLGATE_KAMAILIO60_ROOT  where the root file system goes (default /var/lib/tollgate/rootfs-trixie)
#   TOLLGATE_DEBIAN_MIRROR    the Debian mirror (default http://deb.debian.org/debian)
# Idempotent: does nothing that is done (the package list is kept in the root file system; a changed list
# makes a new one; an extension older than its .pyx is rebuilt). Needs root (mmdebstrap, mount, chroot).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOTFS="${TOLLGATE_KAMAILIO60_ROOT:-/var/lib/tollgate/rootfs-trixie}"
MIRROR="${TOLLGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The modules kemi/kamailio.cfg loads (tls, db_postgres, ndb_redis, app_python3/app_python3s), Python and what
# builds the extensions, and the Python packages the KEMI side imports (redis + hiredis) from Debian itself:
# no pip inside, and nothing of the host's 3.11 venv reaches the 3.13 interpreter.
PACKAGES="kamailio,kamailio-python3-modules,kamailio-redis-modules,kamailio-postgres-modules,kamailio-tls-modules"
PACKAGES+=",python3,python3-dev,gcc,libc6-dev,cython3,python3-setuptools,python3-redis,python3-hiredis"
STAMP="$ROOTFS/.tollgate-packages"  # the package list this root file system was made with
LOG_DIR="$REPO/run"

say() { printf '==> %s\n' "$*"; }
die() { printf 'kamailio60-rootfs: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "needs root (mmdebstrap, mount, chroot): sudo bash $0"
mkdir -p "$LOG_DIR"

ensure_mmdebstrap() {
    command -v mmdebstrap >/dev/null && return
    say "installing mmdebstrap"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -o Dpkg::Use-Pty=0 mmdebstrap; } \
        >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get install mmdebstrap failed (see $LOG_DIR/apt.log)"
}

# Made next to its final place and renamed when complete: an interrupted run leaves no half root behind.
make_rootfs() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PACKAGES" ]] && { say "Debian 13 root file system ready ($ROOTFS)"; return; }
    ensure_mmdebstrap
    say "making a Debian 13 root file system with Kamailio 6.0 in $ROOTFS (about a minute, 550 MB)"
    local fresh="$ROOTFS.new"
    rm -rf "$fresh"
    mkdir -p "$(dirname "$ROOTFS")"
    mmdebstrap --variant=minbase --include="$PACKAGES" trixie "$fresh" "$MIRROR" >"$LOG_DIR/mmdebstrap.log" 2>&1 \
        || { tail -n 20 "$LOG_DIR/mmdebstrap.log" >&2; die "mmdebstrap failed (see $LOG_DIR/mmdebstrap.log)"; }
    printf '%s' "$PACKAGES" >"$fresh/.tollgate-packages"
    rm -rf "$ROOTFS"
    mv "$fresh" "$ROOTFS"
}

# Every fastpath/*.pyx has a cpython-313 extension at least as new as itself.
extensions_fresh() {
    local pyx so
    for pyx in "$REPO"/fastpath/*.pyx; do
        so="$(ls "${pyx%.pyx}".cpython-313-*.so 2>/dev/null | head -n 1)"
        [[ -n "$so" && "$so" -nt "$pyx" ]] || return 1
    done
}

# Built inside the root file system (its Python 3.13 headers, its Cython) on the checkout itself, bind-mounted
# at its own path in a mount namespace of its own: the mounts vanish with the build.
build_extensions() {
    extensions_fresh && { say "fastpath extensions for Python 3.13 up to date"; return; }
    say "building fastpath's Cython extensions for Debian 13's Python 3.13"
    local BUILD=/tmp/tollgate-build-313  # (not the checkout's build/)
    "$REPO/scripts/kamailio60.sh" --run /bin/sh -c \
        "cd '$REPO' && python3 setup.py -q build_ext --inplace --build-temp $BUILD --build-lib $BUILD/lib" \
        >>"$LOG_DIR/build313.log" 2>&1 || { tail -n 20 "$LOG_DIR/build313.log" >&2; die "build failed (see $LOG_DIR/build313.log)"; }
    extensions_fresh || die "the build left no cpython-313 extension in fastpath/"
}

make_rootfs
build_extensions
