#!/usr/bin/env bash
# README command 2: run every test (Debian 12, as root the first time: bootstrap installs what is missing).
#   scripts/bootstrap.sh, then `ruff check .`, then `pytest` with this script's arguments, e.g.
#   bash scripts/run-tests.sh -k login -x
# Without arguments (CI) the SIP wire tests then run a second time against Kamailio 6.0 (Debian 13's, in the
# root file system bootstrap made; `pytest --kamailio 6.0`), about 3 minutes more. TOLLGATE_TEST_KAMAILIO60=no
# leaves that run out; with arguments it is left out (add `--kamailio 6.0` to run them on 6.0).
# The tests need only PostgreSQL and Redis up: they create their own temporary databases and start their
# own control services on free ports, so a running start-stack.sh service is neither needed nor touched.
# Exit code: pytest's (5, "no tests collected", counts as a failure); 1 if only ruff failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }

# The 6.0 root file system only when the 6.0 run may happen (it is left out with TOLLGATE_TEST_KAMAILIO60=no).
TOLLGATE_BOOTSTRAP_KAMAILIO60="${TOLLGATE_TEST_KAMAILIO60:-yes}" bash scripts/bootstrap.sh

say "ruff check ."
lint=0
.venv/bin/ruff check . || lint=$?

# The tests that start Kamailio and speak SIP to it: the ones that must pass on every Kamailio we support.
WIRE_TESTS=(tests/test_kamailio*.py tests/test_sip_security.py tests/test_metrics.py)

say "pytest $*"
tests=0
.venv/bin/pytest "$@" || tests=$?

if (($# == 0)) && [[ "${TOLLGATE_TEST_KAMAILIO60:-yes}" != no ]]; then
    say "pytest --kamailio 6.0 (the wire tests on Kamailio 6.0)"
    wire60=0
    .venv/bin/pytest --kamailio 6.0 "${WIRE_TESTS[@]}" || wire60=$?
    ((wire60 == 0)) || say "FAILED on Kamailio 6.0: pytest exit code $wire60"
    ((tests != 0)) || tests=$wire60
fi

if ((tests == 5)); then
    say "FAILED: pytest collected no tests"
elif ((tests != 0)); then
    say "FAILED: pytest exit code $tests"
fi
if ((lint != 0)); then
    say "FAILED: ruff found problems"
fi
if ((tests != 0)); then
    exit "$tests"
fi
if ((lint != 0)); then
    exit 1
fi
say "all passed"
