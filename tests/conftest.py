"""Shared fixtures: a throw-away PostgreSQL database and a real control server on a free port.

The DSN of the PostgreSQL server comes from TOLLGATE_TEST_PG (default: local trust auth as postgres);
each test session creates its own database and drops it at the end. The session's server is plaintext, for
speed; TLS and mutual TLS have their own servers (tests/test_tls.py, through `server_factory`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
import redis
from google.protobuf import field_mask_pb2
from psycopg import sql

from callstate.store import CallState
from control.config import Config
from control.server import RunningServer, create_server
from fastpath import runtime
from fastpath import snapshot_format as fmt
from tests.helpers import Run, Simulate, Stubs, clean_env, run_cli, stubs_for
from tests.kamailio_harness import (
    DIALOG_BYE_RACE,
    KAMAILIO_BUILDS,
    Kamailio,
    SippServer,
    free_udp_port,
    selected_kamailio,
    start_relay,
    use_kamailio,
)
from tests.prometheus_harness import Prometheus, start_prometheus
from tests.redis_cluster import RedisClusterProcesses
from tests.sip_wire import Gateway
from tollgate.v1 import company_pb2

PG_SERVER_DSN = os.environ.get("TOLLGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# A Redis database apart from the demo stack's, and a namespace of this session's own, so that test
# sessions running side by side do not read each other's projection.
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS", "redis://127.0.0.1:6379/15")
REDIS_NAMESPACE = f"tgtest{secrets.token_hex(4)}"
# Files a person may want to look at after a run (rendered documents): kept, not cleaned up.
ARTIFACTS = Path(os.environ.get("TOLLGATE_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "run" / "test-artifacts"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kamailio", choices=sorted(KAMAILIO_BUILDS), default=None,
                     help="the Kamailio the tests start: 5.6 (Debian 12's, app_python3) or 6.0 (Debian 13's in a "
                          "chroot, app_python3s; scripts/kamailio60-rootfs.sh). Default: TOLLGATE_TEST_KAMAILIO or 5.6")


def pytest_configure(config: pytest.Config) -> None:
    version = config.getoption("--kamailio")
    if version:
        use_kamailio(version)


def pytest_report_header(config: pytest.Config) -> str:
    return f"kamailio: {selected_kamailio()}"


def _dsn_for(database: str) -> str:
    return psycopg.conninfo.make_conninfo(PG_SERVER_DSN, dbname=database)


@contextmanager
def _scratch_database() -> Iterator[str]:
    """A new, empty database of the test PostgreSQL server, dropped afterwards; its DSN."""
    name = f"tollgate_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _dsn_for(name)
    finally:
        with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def database_dsn() -> Iterator[str]:
    with _scratch_database() as dsn:
        yield dsn


@pytest.fixture(scope="module")
def module_database() -> Iterator[str]:
    """A database of the test module's own, dropped after it: for control services that must share one."""
    with _scratch_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (TOLLGATE_TEST_REDIS); give each stack on it a namespace of its own."""
    return REDIS_URL


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """ARTIFACTS (TOLLGATE_TEST_ARTIFACTS, default run/test-artifacts/), created."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    for key in client.scan_iter(f"{REDIS_NAMESPACE}*:*", count=1000):  # server_factory's namespaces too
        client.delete(key)
    client.close()


@dataclass
class ControlServer:
    address: str
    admin_token: str
    dsn: str
    redis_url: str
    keys: fmt.Keys
    running: RunningServer


def _test_config(dsn: str, namespace: str, token: str) -> Config:
    # Every test logs in from 127.0.0.1: the per-source login throttle would soon lock the whole session out,
    # so its limits are out of reach here (tests/test_login_throttle.py runs servers with real ones).
    return Config(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", dsn=dsn, redis_url=REDIS_URL,
                  redis_namespace=namespace, plaintext=True,
                  admin_tokens=(token,), workers=8, projection_interval_seconds=0.5,
                  login_source_free_attempts=1_000_000, login_source_max_attempts=1_000_000)


@pytest.fixture(scope="session")
def control_server(database_dsn: str, redis_client: redis.Redis) -> Iterator[ControlServer]:
    token = "tga_" + secrets.token_urlsafe(24)
    running = create_server(_test_config(database_dsn, REDIS_NAMESPACE, token))
    try:
        yield ControlServer(f"127.0.0.1:{running.port}", token, database_dsn, REDIS_URL, fmt.Keys(REDIS_NAMESPACE),
                            running)
    finally:
        running.stop(grace=0)


ServerFactory = Callable[..., ControlServer]


@pytest.fixture(scope="session")
def server_factory(redis_client: redis.Redis) -> Iterator[ServerFactory]:
    """Start another control server: `server_factory(**config_overrides)`. It has a database and a Redis namespace
    of its own: its ledger would otherwise push the session's payments into its own namespace, and its login
    counts, invoicing and fuzzing would reach the session's data. Servers stop and databases go at the end."""
    started: list[RunningServer] = []
    with ExitStack() as stack:
        def start(**overrides) -> ControlServer:
            dsn = stack.enter_context(_scratch_database())
            namespace = f"{REDIS_NAMESPACE}s{len(started)}"
            token = "tga_" + secrets.token_urlsafe(24)
            config = dataclasses.replace(_test_config(dsn, namespace, token), **({"workers": 4} | overrides))
            running = create_server(config)
            started.append(running)
            stack.callback(running.stop, 0)
            return ControlServer(f"127.0.0.1:{running.port}", token, dsn, REDIS_URL, fmt.Keys(namespace), running)

        yield start


@pytest.fixture(scope="session")
def channel(control_server: ControlServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(control_server.address) as ch:
        yield ch


@pytest.fixture(scope="session")
def admin(channel: grpc.Channel, control_server: ControlServer) -> Stubs:
    """Stubs and the admin's bearer metadata: `admin.accounts.GetAccount(req, metadata=admin.metadata)`."""
    return stubs_for(channel, control_server.admin_token)


@pytest.fixture(scope="session")
def simulate(admin: Stubs) -> Simulate:
    """The route simulator as the admin asks it: `simulate(account, number)` -> SimulateCallResponse."""
    return Simulate(admin)


@pytest.fixture
def company_decimals(admin: Stubs) -> Iterator[Callable[[int], None]]:
    """`company_decimals(2)`: the company prints money with 2 decimals for this test, with what it had before
    afterwards (the session shares one company)."""
    before = admin.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=admin.metadata).decimals

    def set_decimals(value: int) -> None:
        admin.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
            company=company_pb2.Company(decimals=value), update_mask=field_mask_pb2.FieldMask(paths=["decimals"])),
            metadata=admin.metadata)

    yield set_decimals
    set_decimals(before)


@pytest.fixture
def cli(control_server: ControlServer, tmp_path) -> Run:
    """The command line as an operator runs it against the session's server, as its admin:
    `cli("invoices", "list")` -> CompletedProcess (tests/helpers.py ok() and ok_json() read it)."""
    home = tmp_path / "cli-home"
    home.mkdir()
    env = clean_env(home) | {"TOLLGATE_ADDRESS": control_server.address, "TOLLGATE_TOKEN": control_server.admin_token}
    return lambda *args: run_cli(list(args), env)


@pytest.fixture(scope="session")
def connect() -> Iterator[Callable[[ControlServer], Stubs]]:
    """Plaintext stubs for a server of server_factory, with its admin token: `connect(server).accounts…`."""
    with ExitStack() as stack:
        def open_stubs(server: ControlServer) -> Stubs:
            channel = stack.enter_context(grpc.insecure_channel(server.address))
            return stubs_for(channel, server.admin_token)

        yield open_stubs


# ---------------------------------------------------------------------------------------------- Kamailio
# Real Kamailio nodes on free loopback ports (tests/kamailio_harness.py), one per test module that asks.

def _stop_checked(instance: Kamailio) -> None:
    instance.stop()
    faults = [line for line in instance.faults() if DIALOG_BYE_RACE not in line]
    assert not faults, "faults in Kamailio's log:\n" + "\n".join(faults)


@pytest.fixture(scope="module")
def relay(control_server, tmp_path_factory) -> Kamailio:
    instance = start_relay(control_server, tmp_path_factory.mktemp("relay"))
    yield instance
    _stop_checked(instance)


@pytest.fixture(scope="module")
def relay2(control_server, tmp_path_factory) -> Kamailio:
    """A second node on the same Redis."""
    instance = start_relay(control_server, tmp_path_factory.mktemp("relay2"))
    yield instance
    _stop_checked(instance)


@pytest.fixture(scope="module")
def metered_relay(control_server, tmp_path_factory) -> Kamailio:
    """A relay node serving Prometheus metrics (Kamailio.metrics_address) that takes one new call a second from
    one source address: a second call within the same second is shed."""
    instance = start_relay(control_server, tmp_path_factory.mktemp("metered"), metrics_port=0, source_max_cps=1)
    yield instance
    _stop_checked(instance)


@pytest.fixture
def prometheus(tmp_path) -> Iterator[Callable[[dict[str, str]], Prometheus]]:
    """Start a real Prometheus: prometheus({job: "host:port"}) -> a server scraping their /metrics every second;
    stopped at the end."""
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        server = start_prometheus(tmp_path / f"prometheus{len(started)}", targets)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def fast(control_server):
    """The test's own view of the projection, to wait until a new world has reached Redis."""
    with tempfile.TemporaryDirectory() as images:
        yield runtime.FastPath(runtime.redis_client(control_server.redis_url), images, control_server.keys.namespace)


@pytest.fixture
def gateways(tmp_path):
    """Start sipp gateways: gateways(scenario, calls=1, **values) -> SippServer; all stopped at the end."""
    started: list[SippServer] = []

    def start(scenario: str, calls: int = 1, **values) -> SippServer:
        server = SippServer(scenario, tmp_path / "gateways", free_udp_port(), calls=calls, values=values)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def carriers():
    """carriers(behaviour, **options) -> a started sip_wire.Gateway; all stopped at the end."""
    started: list[Gateway] = []

    def start(behaviour="answer", **options) -> Gateway:
        gateway = Gateway(behaviour, **options)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def money(control_server, redis_client) -> CallState:
    """The call state in Redis (live balances, open calls, events) of the test session's namespace."""
    return CallState(redis_client, control_server.keys.namespace)


# ---------------------------------------------------------------------------------------------- Redis Cluster

@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A 3-master / 3-replica Redis Cluster of the session's own on free loopback ports (tests/redis_cluster.py),
    started when a test first asks (tests/test_cluster*.py), killed at the end."""
    cluster = RedisClusterProcesses()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
