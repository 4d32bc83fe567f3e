#!/usr/bin/env bash
# Stop Kamailio and the control service that start-stack.sh started (pid files under run/).
# PostgreSQL and Redis are left running: other programs on the machine may use them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/stop-kamailio.sh"
bash "$ROOT/scripts/stop-control.sh"
