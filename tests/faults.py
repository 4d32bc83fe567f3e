"""Parts a fault test can kill: a Redis, a PostgreSQL and a control service of their own, on free loopback ports.

The session's PostgreSQL and Redis serve every other test and may not be killed; these do. `PrivateRedis` runs
without persistence (a kill loses everything, as a cache may), `PrivatePostgres` is a cluster made with
initdb in a temporary directory (as the postgres user when run as root: PostgreSQL refuses root), and
`ControlProcess` is `tollgate-control` as a process of its own, with its config file. `CallLoad` places calls
through Kamailio nodes from threads, as raw SIP, and remembers what each caller saw.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.kamailio_harness import LOOPBACK, free_port
from tests.sip_wire import Message, Peer, request, sdp

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
BYE_ATTEMPTS = 12  # a caller sends its BYE again every second for this long


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:g} s: no")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- Redis


class PrivateRedis:
    """redis-server on a free port, no persistence: kill() loses everything, start() brings it back empty."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        _wait(lambda: _pings(client), 10, "Redis answers")
        client.close()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.kill()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


# ---------------------------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} in /usr/lib/postgresql/*/bin")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb), trust auth on loopback; kill() is kill -9 of the postmaster.
    Its directory is made directly under the system's temporary directory: run as root, the cluster runs as
    the postgres user, who cannot enter pytest's (root's) directories."""

    def __init__(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="tollgate-faults-pg-"))
        self.data = self.workdir / "pgdata"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@{LOOPBACK}:{self.port}/tollgate"
        self._user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self._user, "--"] if self._user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if self._user:
            user = pwd.getpwnam(self._user)
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        with psycopg.connect(f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE tollgate")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses={LOOPBACK} -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.workdir / "pg.log"),
                  "-w", "start")

    def kill(self) -> None:
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _alive(pid), 10, "the postmaster is gone")
        time.sleep(0.5)  # its backends notice and exit

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- control service


class ControlProcess:
    """tollgate-control as a process (so that it can be killed -9), plaintext on a free port."""

    def __init__(self, workdir: Path, *, dsn: str, redis_url: str, namespace: str, token: str, **settings):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.token = token
        # A free metrics port unless told: the default 9464 is taken by a stack on this machine, or by the other
        # control service of a test that runs two.
        settings = {"metrics_listen": f"{LOOPBACK}:0"} | settings
        lines = [f'listen = "{self.address}"', f'dsn = "{dsn}"', f'redis_url = "{redis_url}"',
                 f'redis_namespace = "{namespace}"', f'admin_tokens = ["{token}"]', "plaintext = true",
                 *(f"{key} = {value!r}".replace("'", '"') for key, value in settings.items())]
        self.config = workdir / "control.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        log = (self.workdir / "control.log").open("ab")
        self.process = subprocess.Popen([str(VENV_BIN / "tollgate-control"), "--config", str(self.config)],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environment)
        _wait(self._serving, 30, "the control service is SERVING")

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the control service exited: {(self.workdir / 'control.log').read_text()[-3000:]}")
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def kill_kamailio(node) -> None:
    """kill -9 of every process of a Kamailio node (as a crash leaves it: no goodbye, nothing flushed)."""
    for pid in node.worker_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _alive(node.pid), 10, "Kamailio is gone")
    time.sleep(0.3)


# ---------------------------------------------------------------------------------------------- calls


@dataclass
class Placed:
    call_id: str
    node: str
    answer: int = 0  # the final answer's code (0: none)
    hung_up: bool = False  # the caller's BYE got its 200
    ended: float = 0.0  # when the caller's part ended (time.time())
    started: float = 0.0  # when its INVITE went out (time.time())


@dataclass
class CallLoad:
    """Threads placing calls (INVITE, 200, ACK, hold, BYE) through the nodes in turn, `rate` a second."""

    nodes: list
    dialled: str  # the customer's tech prefix + the number
    rate: float = 5.0
    hold: float = 1.5
    placed: list[Placed] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads.append(threading.Thread(target=self._pace, daemon=True))
        self._threads[0].start()

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=15)

    def _pace(self) -> None:
        turn = 0
        while not self._stop.wait(1 / self.rate):
            node = self.nodes[turn % len(self.nodes)]
            turn += 1
            call = Placed(f"load-{uuid.uuid4().hex}@faults", node.address)
            self.placed.append(call)
            thread = threading.Thread(target=self._call, args=(node, call), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _call(self, node, call: Placed) -> None:
        with Peer() as caller:
            sent = request("INVITE", f"sip:{self.dialled}@{node.address}", via=caller.address, call_id=call.call_id,
                           body=sdp(), headers=["Content-Type: application/sdp"])
            call.started = time.time()
            caller.send(sent, (node.host, node.port))
            final = caller.final(timeout=8, method="INVITE")
            call.answer = final.status if final is not None else 0
            if call.answer == 200:
                invite = Message(sent.encode())
                target = final.header("Contact").strip("<>")
                routes = [f"Route: {r}" for r in reversed(final.headers("Record-Route"))]
                common = dict(via=caller.address, call_id=call.call_id, from_tag=invite.tag("From"),
                              to_uri=invite.header("To").strip("<>"), to_tag=final.tag("To"), headers=routes)
                caller.send(request("ACK", target, cseq=1, **common), (node.host, node.port))
                time.sleep(self.hold)
                bye_request = request("BYE", target, cseq=2, **common)
                for _ in range(BYE_ATTEMPTS):  # as a UA retransmits its BYE (over UDP, for up to 32 s)
                    caller.send(bye_request, (node.host, node.port))
                    bye = caller.final(timeout=1, method="BYE")
                    if bye is not None:
                        call.hung_up = bye.status == 200
                        break
            call.ended = time.time()
