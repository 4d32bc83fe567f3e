"""bench/bench_kamailio.py's processes: the control service it routes with, the baseline Kamailio configurations
it compares against, and the CPU they burn."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import _repo_path  # noqa: F401  (the repository root on sys.path, for tests/)
import grpc
import psycopg
import redis
from psycopg import sql

from control.config import Config
from control.server import create_server
from tests.conftest import PG_SERVER_DSN
from tests.helpers import stubs_for
from tests.kamailio_harness import (
    DESTINATION,
    LOOPBACK,
    Kamailio,
    free_udp_port,
    kamailio_build,
    kamailio_environment,
    options_probe,
)

BENCH = Path(__file__).resolve().parent
KEMI_FLOOR_SCRIPT = BENCH / "kemi_floor.py"
CHILDREN = 2
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS", "redis://127.0.0.1:6379/15")


class Processes:
    """Everything this bench starts, stopped at the end whatever happens."""

    def __init__(self) -> None:
        self.kamailios: list[Kamailio] = []
        self.popens: list[subprocess.Popen] = []

    def stop(self) -> None:
        for process in self.popens:
            if process.poll() is None:
                process.kill()
                process.wait()
        for kamailio in self.kamailios:
            kamailio.stop()


def cpu_seconds_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pid(client: redis.Redis) -> int | None:
    """redis-server's pid when it runs on this machine and its /proc entry can be read (else no Redis CPU)."""
    pid = int(client.info("server").get("process_id", 0))
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm.startswith("redis") else None


def start_baseline(template: Path, workdir: Path, processes: Processes, *, account: str, namespace: str,
                   gateway: str, timeout: float = 10.0) -> Kamailio:
    """A baseline cfg (bench/native_redirect.cfg, bench/kemi_floor.cfg) on a free loopback port, answering
    OPTIONS."""
    workdir.mkdir(parents=True, exist_ok=True)
    rundir = workdir / "run"
    rundir.mkdir(exist_ok=True)
    log_path, pidfile, cfg = workdir / "kamailio.log", rundir / "kamailio.pid", workdir / "kamailio.cfg"
    url = urlparse(REDIS_URL)
    port = free_udp_port()
    build = kamailio_build()  # the bench's --kamailio: baselines run on the same Kamailio as tollgate
    values = {"PYTHON_MODULE": build.python_module,
              "LISTEN": f"udp:{LOOPBACK}:{port}", "CHILDREN": str(CHILDREN), "RUNDIR": str(rundir),
              "REDIS_HOST": url.hostname or "127.0.0.1", "REDIS_PORT": str(url.port or 6379),
              "REDIS_DB": (url.path or "/0").strip("/") or "0", "NAMESPACE": namespace, "ACCOUNT": account,
              "DESTINATION": DESTINATION, "GATEWAY": gateway, "KEMI_FLOOR": str(KEMI_FLOOR_SCRIPT)}
    cfg.write_text(re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], template.read_text()))
    with log_path.open("ab") as log:
        started = subprocess.run([*build.command, "-f", str(cfg), "-P", str(pidfile), "-Y", str(rundir), "-E",
                                  # the allocator tollgate's nodes run with (scripts/start-kamailio.sh), so
                                  # that a baseline spends what they spend in malloc
                                  "-m", "256", "-M", "16", "-x", "qm"],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=timeout,
                                 env=kamailio_environment(build, workdir))
    if started.returncode != 0 or not pidfile.exists():
        raise RuntimeError(f"{template.name} did not start (exit {started.returncode}):\n{log_path.read_text()}")
    kamailio = Kamailio(LOOPBACK, port, workdir, int(pidfile.read_text()), log_path, version=build.version)
    processes.kamailios.append(kamailio)
    deadline = time.monotonic() + timeout
    while options_probe(LOOPBACK, port) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{template.name} on {kamailio.address} does not answer OPTIONS 200")
    return kamailio


def idle_cpu(kamailio: Kamailio, seconds: float = 3.0) -> float:
    """CPU seconds per second this instance burns with no traffic (timers; tollgate's projection polling)."""
    before = kamailio.cpu_seconds()
    time.sleep(seconds)
    return (kamailio.cpu_seconds() - before) / seconds



@contextlib.contextmanager
def control_service():
    """The control server on a throw-away database and a Redis namespace of its own; yields (stubs, namespace,
    Redis client, DSN)."""
    database = f"tollgate_bench_{secrets.token_hex(4)}"
    namespace = f"tgbench{secrets.token_hex(4)}"
    with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    client = redis.Redis.from_url(REDIS_URL)
    running = None
    try:
        token = secrets.token_urlsafe(24)
        dsn = psycopg.conninfo.make_conninfo(PG_SERVER_DSN, dbname=database)
        config = Config(listen="127.0.0.1:0", metrics_listen="", dsn=dsn,
                        redis_url=REDIS_URL, redis_namespace=namespace, admin_tokens=(token,), workers=8,
                        projection_interval_seconds=0.5, plaintext=True)
        running = create_server(config)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield stubs_for(channel, token), namespace, client, dsn
    finally:
        if running is not None:
            running.stop(grace=0)
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
        client.close()
        with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


