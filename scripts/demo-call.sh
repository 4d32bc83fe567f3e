#!/usr/bin/env bash
# Place one demo call through the running stack (start-stack.sh) and show what it did:
#   bash scripts/demo-call.sh [NUMBER]        (default 4930123456, Berlin)
# The demo prepaid customer 9000000003's SIP device (credentials in run/demo-sip-device) dials NUMBER through
# Kamailio; the demo carrier answers and hangs up after a few seconds. Printed: the SIP flow as the device saw it,
# the call's CDR once the ledger has written it, and the account's balance before and after.
# Environment: TOLLGATE_SIP_LISTEN (Kamailio's address, default udp:127.0.0.1:5060), TOLLGATE_RUN_DIR (default
# run/), TOLLGATE_DEMO_CALLER_ID (default 442071234567); the CLI's usual TOLLGATE_ADDRESS / TOLLGATE_TOKEN or
# ~/.config/tollgate/admin.toml. Exit 0 when the call was answered, billed and its CDR found; non-zero otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${TOLLGATE_RUN_DIR:-$ROOT/run}"
ADMIN="$ROOT/.venv/bin/tollgate-admin"
PY="$ROOT/.venv/bin/python"
LISTEN="${TOLLGATE_SIP_LISTEN:-udp:127.0.0.1:5060}"
PROXY="${LISTEN#*:}"
NUMBER="${1:-4930123456}"
ACCOUNT=9000000003
DEVICE_FILE="$RUN/demo-sip-device"

die() { printf 'demo-call: %s\n' "$*" >&2; exit 1; }

[[ -r "$DEVICE_FILE" ]] || die "no $DEVICE_FILE: run scripts/start-stack.sh first (as the same user)"
balance() { "$ADMIN" accounts get "$ACCOUNT" | awk '$1 == "balance" { print $2 }'; }

before="$(balance)" || die "cannot read account $ACCOUNT: is the control service up (scripts/start-stack.sh)?"
printf 'Account %s (prepaid) balance %s; calling %s through Kamailio on %s\n\n' "$ACCOUNT" "$before" "$NUMBER" \
    "$PROXY"

summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
rc=0
"$PY" -m admin.demo.call --proxy "$PROXY" --credentials "$DEVICE_FILE" --number "$NUMBER" \
    --caller-id "${TOLLGATE_DEMO_CALLER_ID:-442071234567}" --summary "$summary" || rc=$?
call_id="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["call_id"])' "$summary")"
case $rc in
    0) ;;
    1) printf '\nThe switch refused the call (the answer above); its CDR says why:\n' ;;
    *) die "no answer from Kamailio on $PROXY (is it running? bash scripts/start-kamailio.sh)" ;;
esac

# The ledger moves the call's event from Redis to PostgreSQL within a second or two.
printf '\nCDR (call id %s):\n' "$call_id"
for _ in $(seq 1 40); do
    cdr="$("$ADMIN" cdrs list --filter "call_id = $call_id")"
    if (($(wc -l <<<"$cdr") > 2)); then
        printf '%s\n' "$cdr" | sed 's/^/  /'
        printf '\nBalance of %s: %s before, %s after\n' "$ACCOUNT" "$before" "$(balance)"
        exit "$rc"
    fi
    sleep 0.5
done
die "no CDR for $call_id after 20 s: is the control service's ledger running? (see $RUN/control.log)"
