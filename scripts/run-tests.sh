#!/usr/bin/env bash
# README command 2: run every test (Debian 12, as root the first time: bootstrap installs what is missing).
#   scripts/bootstrap.sh, then `ruff check .`, then `pytest` with this script's arguments, e.g.
#   bash scripts/run-tests.sh -k login -x
# The tests need only PostgreSQL and Redis up: they create their own temporary databases and start their
# own control services on free ports, so a running start-stack.sh service is neither needed nor touched.
# Exit code: pytest's (5, "no tests collected", counts as a failure); 1 if only ruff failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }

bash scripts/bootstrap.sh

say "ruff check ."
lint=0
.venv/bin/ruff check . || lint=$?

say "pytest $*"
tests=0
.venv/bin/pytest "$@" || tests=$?

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
