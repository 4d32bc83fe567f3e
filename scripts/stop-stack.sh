#!/usr/bin/env bash
# Stop Kamailio, the control service and the demo carrier that start-stack.sh started (pid files under run/).
# PostgreSQL and Redis are left running: other programs on the machine may use them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/stop-kamailio.sh"
bash "$ROOT/scripts/stop-control.sh"
bash "$ROOT/scripts/stop-demo-carrier.sh"
