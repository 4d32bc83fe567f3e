#!/usr/bin/env bash
# Run Kamailio 6.0 (or, with --run, any command) inside the Debian 13 root file system that
# scripts/kamailio60-rootfs.sh makes, sharing this machine's network (loopback, Redis, PostgreSQL, sipp):
#   scripts/kamailio60.sh -f CFG -P PIDFILE ...     /usr/sbin/kamailio with these arguments
#   scripts/kamailio60.sh --run python3 -V          any command
# Paths are the same inside as outside: this checkout, /tmp and the directories in TOLLGATE_KAMAILIO60_BIND
# (colon-separated) are bind-mounted at their own paths, with /proc and /dev. The mounts live in a mount
# namespace of the command's own (unshare), so they vanish when its last process ends (a stopped Kamailio
# leaves nothing mounted, whatever way it stopped). Needs root.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOTFS="${TOLLGATE_KAMAILIO60_ROOT:-/var/lib/tollgate/rootfs-trixie}"

if [[ "${1:-}" != --inside ]]; then
    [[ -f "$ROOTFS/.tollgate-packages" ]] || {
        echo "kamailio60.sh: no Debian 13 root file system in $ROOTFS: run scripts/kamailio60-rootfs.sh" >&2
        exit 1
    }
    exec unshare --mount --propagation private -- /bin/bash "${BASH_SOURCE[0]}" --inside "$@"
fi
shift

# bind DIR: DIR of this machine at the same path inside (made there when missing).
bind() {
    mkdir -p "$ROOTFS$1"
    mount --rbind "$1" "$ROOTFS$1"
}

mount -t proc proc "$ROOTFS/proc"
bind /dev
bind /tmp
bind "$REPO"
IFS=: read -r -a extra <<<"${TOLLGATE_KAMAILIO60_BIND:-}"
for dir in "${extra[@]}"; do
    [[ -n "$dir" && -d "$dir" ]] && bind "$dir"
done

if [[ "${1:-}" == --run ]]; then
    shift
    exec chroot "$ROOTFS" "$@"
fi
exec chroot "$ROOTFS" /usr/sbin/kamailio "$@"
