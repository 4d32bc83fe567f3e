"""The README's main command, run as a new user would, then its demo call.

`scripts/start-stack.sh` runs here whole - bootstrap, TLS material, configuration, control service, demo carrier,
demo data, Kamailio - on ports, a database, a Redis namespace and a run directory of its own, so that a stack
already running on this machine is neither used nor disturbed. Then `scripts/demo-call.sh` must place a real call
through Kamailio to the demo carrier, print its SIP flow and its CDR, and the balance must drop by the CDR's cost.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PG_SERVER_DSN, REDIS_URL
from tests.kamailio_harness import free_port

ROOT = Path(__file__).resolve().parents[1]


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a stack started by start-stack.sh in a scratch corner; stopped and dropped after."""
    base = tmp_path_factory.mktemp("stack")
    database = f"tollgate_stack_{secrets.token_hex(4)}"
    (base / "home").mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TOLLGATE_", "SUDO_"))}
    env |= {
        "HOME": str(base / "home"),
        "TOLLGATE_CONFIG": str(base / "etc" / "control.toml"),
        "TOLLGATE_RUN_DIR": str(base / "run"),
        "TOLLGATE_LISTEN": f"127.0.0.1:{_free_tcp_port()}",
        "TOLLGATE_DSN": psycopg.conninfo.make_conninfo(PG_SERVER_DSN, dbname=database),
        "TOLLGATE_REDIS_URL": REDIS_URL,
        "TOLLGATE_REDIS_NAMESPACE": f"tgstack{secrets.token_hex(3)}",
        "TOLLGATE_SIP_LISTEN": f"udp:127.0.0.1:{free_port()}",
        "TOLLGATE_SIP_TLS_PORT": "0",
        "TOLLGATE_SIP_SECRETS": str(base / "etc" / "sip.secrets"),
        "TOLLGATE_DEMO_CARRIER": f"127.0.0.1:{free_port()}",
        "TOLLGATE_DEMO_HOLD": "1",
        "TOLLGATE_METRICS_LISTEN": f"127.0.0.1:{_free_tcp_port()}",
        "TOLLGATE_SIP_METRICS_LISTEN": f"127.0.0.1:{_free_tcp_port()}",
    }
    try:
        started = subprocess.run(["bash", "scripts/start-stack.sh"], cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=600)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        env["START_OUTPUT"] = started.stdout
        yield env
    finally:
        subprocess.run(["bash", "scripts/stop-stack.sh"], cwd=ROOT, env=env, capture_output=True, timeout=120)
        with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def test_start_stack_ends_with_the_demo_call_command(stack: dict[str, str]) -> None:
    assert "bash scripts/demo-call.sh" in stack["START_OUTPUT"]
    assert re.search(r"demo carrier\s+udp:127\.0\.0\.1:\d+ answers every call", stack["START_OUTPUT"])
    device_file = Path(stack["TOLLGATE_RUN_DIR"]) / "demo-sip-device"
    assert device_file.stat().st_mode & 0o077 == 0, "the demo device's password file is readable by others"


def test_the_demo_call_is_answered_billed_and_recorded(stack: dict[str, str]) -> None:
    call = subprocess.run(["bash", "scripts/demo-call.sh"], cwd=ROOT, env=stack, capture_output=True, text=True,
                          timeout=120)
    out = call.stdout
    assert call.returncode == 0, out + call.stderr
    # The SIP flow as the device saw it: challenged, answered, hung up by the carrier.
    for step in ("<- 407 Proxy Authentication Required", "-> INVITE again with digest credentials", "<- 200 OK",
                 "-> ACK", "<- BYE (the far end hung up)"):
        assert step in out, f"{step!r} missing from:\n{out}"
    cdr = next(line for line in out.splitlines() if line.strip().startswith("demo-"))
    assert re.search(r"\bcarrier-(fra|ams)\b.*\b200\s+hangup\b", cdr), cdr
    before, after = (Decimal(x) for x in re.search(r"balance of 9000000003: ([\d.]+) before, ([\d.]+) after",
                                                   out, re.I).groups())
    customer_cost = Decimal(cdr.split()[-2])
    assert customer_cost > 0
    assert before - after == customer_cost


def test_a_refused_demo_call_says_why(stack: dict[str, str]) -> None:
    call = subprocess.run(["bash", "scripts/demo-call.sh", "999123"], cwd=ROOT, env=stack, capture_output=True,
                          text=True, timeout=120)
    assert call.returncode == 1, call.stdout + call.stderr
    assert "<- 404 No rate for destination" in call.stdout
    assert re.search(r"\b404\s+refused \(rate\)\s+0\.0+\s+0\.0+\s*$", call.stdout, re.M), call.stdout
