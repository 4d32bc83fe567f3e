#!/usr/bin/env bash
# Load the demo accounts through tollgate-admin, skipping those that exist already (safe to run again):
#   9000000001  provider "Demo Carrier Ltd", prepaid
#   9000000002  customer "Demo Customer Inc", postpaid with a 100.00 credit limit and a SIP device
#   9000000003  customer "Demo Prepaid Shop", prepaid, funded with one 20.00 payment, with a SIP device whose
#               credentials are kept in run/demo-sip-device (mode 600) for scripts/demo-call.sh
#   CARRIER01   provider of examples/provider.yaml, its trunks pointed at the demo carrier (TOLLGATE_DEMO_CARRIER,
#               default 127.0.0.1:5090: admin/demo/carrier.py, which start-stack.sh runs)
# The CLI finds the server and an admin token as usual: TOLLGATE_ADDRESS / TOLLGATE_TOKEN, or
# ~/.config/tollgate/admin.toml. start-stack.sh runs this after starting the control service.
# The demo accounts have no portal password; set one with `tollgate-admin accounts update N --password ...`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADMIN="$ROOT/.venv/bin/tollgate-admin"
RUN="${TOLLGATE_RUN_DIR:-$ROOT/run}"
CARRIER="${TOLLGATE_DEMO_CARRIER:-127.0.0.1:5090}"
EXIT_NOT_FOUND=4        # tollgate-admin's exit codes (admin/errors.py)
EXIT_ALREADY_EXISTS=5

say() { printf '==> %s\n' "$*"; }

# ensure NUMBER LABEL CREATE-FLAGS...: create the account unless `accounts get NUMBER` finds it.
ensure() {
    local number=$1 label=$2; shift 2
    local rc=0 err
    err="$("$ADMIN" accounts get "$number" 2>&1 >/dev/null)" || rc=$?
    if ((rc == 0)); then
        say "demo $label $number exists"
        return
    fi
    if ((rc != EXIT_NOT_FOUND)); then
        printf '%s\n' "$err" >&2
        say "cannot look up demo $label $number (tollgate-admin exit $rc)"
        return "$rc"
    fi
    local out
    rc=0
    out="$("$ADMIN" accounts create --number "$number" "$@" 2>&1)" || rc=$?
    if ((rc == 0)); then
        say "created demo $label $number"
        # The one line worth keeping from the full record: the SIP password is never shown again.
        grep 'SIP device password' <<<"$out" | sed 's/^/    /' || true
    elif ((rc == EXIT_ALREADY_EXISTS)); then
        # Numbers are never reused: a deleted demo account (or its email on another account) stays taken.
        printf '%s\n' "$out" | sed 's/^/    /'
        say "demo $label $number not created: its number or email is taken (a deleted demo account?)"
    else
        printf '%s\n' "$out" >&2
        return "$rc"
    fi
}

ensure 9000000001 provider --provider \
    --email noc@carrier.example.com --company "Demo Carrier Ltd" \
    --first-name Dana --last-name Carrier --phone "+44 20 7946 0001" \
    --address1 "1 Interconnect Way" --city London --zip "EC1A 1AA" \
    --country GB --timezone Europe/London \
    --max-calls 200 --cps 20

ensure 9000000002 customer \
    --email ops@customer.example.com --company "Demo Customer Inc" \
    --first-name Casey --last-name Customer --phone "+1 212 555 0102" \
    --address1 "2 Dial Tone Street" --city "New York" --province NY --zip 10001 \
    --country US --timezone America/New_York \
    --postpaid --credit-limit 100.00 --sip-device \
    --max-calls 10 --cps 2

# The demo carrier's trunks, decks and localization come from the declarative example (idempotent):
# provider CARRIER01 with trunks carrier-fra and carrier-ams and their termination decks; the example's gateways
# are documentation addresses, so the demo applies a copy whose trunks all reach the demo carrier on loopback.
# --yes: the repository's file is the truth for the demo, also where a newer one leaves something out (apply
# asks before deleting, and refuses without a terminal otherwise).
mkdir -p "$RUN"
"$ROOT/.venv/bin/python" -m admin.demo.provider "$ROOT/examples/provider.yaml" --carrier "$CARRIER" \
    -o "$RUN/demo-provider.yaml"
say "applying examples/provider.yaml, trunks sent to the demo carrier on udp:$CARRIER ($RUN/demo-provider.yaml)"
"$ADMIN" apply -f "$RUN/demo-provider.yaml" --yes | sed 's/^/    /'

# A retail rate group over those trunks, with its origination deck, for the demo customer.
rc=0
"$ADMIN" rate-groups get demo-retail >/dev/null 2>&1 || rc=$?
if ((rc == EXIT_NOT_FOUND)); then
    "$ADMIN" rate-groups create demo-retail --display-name "Demo retail" --markup-percent 0 --strategy lcr \
        --trunk carrier-fra --trunk carrier-ams >/dev/null
    say "created rate group demo-retail"
elif ((rc != 0)); then
    say "cannot look up rate group demo-retail (tollgate-admin exit $rc)"
    exit "$rc"
fi
"$ADMIN" origination-rates import demo-retail "$ROOT/examples/retail-origination.csv" --no-progress | sed 's/^/    /'
"$ADMIN" accounts update 9000000002 --rate-group rateGroups/demo-retail >/dev/null
say "demo customer 9000000002 rates with demo-retail"

ensure 9000000003 customer \
    --email ops@prepaid.example.com --company "Demo Prepaid Shop" \
    --first-name Pat --last-name Prepaid --country GB --timezone Europe/London \
    --prepaid --sip-device --max-calls 4 --cps 1
"$ADMIN" accounts update 9000000003 --rate-group demo-retail >/dev/null
# The request id makes this payment once-only, however often the demo data is loaded.
"$ADMIN" accounts pay 9000000003 20.00 --note "demo opening balance" --request-id demo-9000000003-opening \
    >/dev/null
say "demo prepaid customer 9000000003 rates with demo-retail, balance 20.00"

# The prepaid customer's SIP device places the demo call (scripts/demo-call.sh). Its password is shown only once,
# at creation, so the demo keeps a password of its own in a file only root reads, set on the device whenever the
# file is new (a fresh stack, or a run/ that was wiped).
DEVICE_FILE="$RUN/demo-sip-device"
if [[ ! -s "$DEVICE_FILE" ]]; then
    password="$("$ROOT/.venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))')"
    "$ADMIN" sip-devices update 9000000003 --password="$password" >/dev/null
    (umask 077; printf '9000000003 %s\n' "$password" >"$DEVICE_FILE")
    say "demo SIP device 9000000003: credentials in $DEVICE_FILE (for scripts/demo-call.sh)"
fi
