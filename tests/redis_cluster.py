"""A Redis Cluster of its own for tests: 3 masters and 3 replicas from Debian's redis-server, on free loopback ports.

Each node runs without persistence in a temporary directory (`--cluster-enabled yes`, its client and bus ports
chosen free), `redis-cli --cluster create ... --cluster-replicas 1` joins them, and start() returns once every
node says cluster_state:ok. kill_master_of(key) is the failover test's fault: kill -9 of the master serving a
key; its replica is promoted after cluster-node-timeout (NODE_TIMEOUT_MS, short here).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.kamailio_harness import LOOPBACK, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
# How long a master may be silent before the others mark it failed and its replica takes over. Redis's default
# is 15 s; a short one keeps the failover test short (README "Redis Cluster" states what production gets).
NODE_TIMEOUT_MS = 1000


@dataclass
class Node:
    port: int
    bus_port: int
    workdir: Path
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(LOOPBACK, self.port, socket_timeout=1, socket_connect_timeout=0.5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RedisClusterProcesses:
    """Six redis-server processes made into one cluster; stop() kills them and removes their directory."""

    def __init__(self, masters: int = 3, replicas_per_master: int = 1):
        self.workdir = Path(tempfile.mkdtemp(prefix="tollgate-cluster-"))
        self.replicas = replicas_per_master
        self.nodes = [self._node(i) for i in range(masters * (1 + replicas_per_master))]

    def _node(self, index: int) -> Node:
        port = free_port()
        bus = free_port()
        while bus == port:
            bus = free_port()
        workdir = self.workdir / f"node{index}"
        workdir.mkdir()
        return Node(port, bus, workdir)

    @property
    def url(self) -> str:
        """redis+cluster:// naming every node as a seed (callstate.connection)."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            _wait(lambda n=node: _pings(n), 10, f"redis-server on {node.address} answers")
        subprocess.run([REDIS_CLI, "--cluster", "create", *(n.address for n in self.nodes), "--cluster-replicas",
                        str(self.replicas), "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok(timeout)

    def _spawn(self, node: Node) -> None:
        # cluster-require-full-coverage no: while one master's slots are down, the other masters' accounts go
        # on (the production setting README "Redis Cluster" recommends).
        node.process = subprocess.Popen(
            [REDIS_SERVER, "--bind", LOOPBACK, "--port", str(node.port), "--cluster-enabled", "yes",
             "--cluster-port", str(node.bus_port), "--cluster-config-file", str(node.workdir / "nodes.conf"),
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-require-full-coverage", "no",
             "--appendonly", "no", "--save", "", "--dir", str(node.workdir),
             "--logfile", str(node.workdir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ok(self, timeout: float = 30.0, replicated: bool = True) -> None:
        """Until every live node says cluster_state:ok and sees every slot served (and, when `replicated`, each
        master has its replica attached: a test that kills a master needs one to take over)."""
        _wait(lambda: all(_cluster_ok(n) for n in self.nodes if n.alive()), timeout, "cluster_state:ok everywhere")
        if replicated:
            _wait(lambda: all(len(entry) > 3 for entry in self._slots()), timeout, "every master has a replica")

    def master_of(self, key: str | bytes) -> Node:
        """The live node serving `key`'s slot now (as a live node's CLUSTER SLOTS says)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for low, high, master, *_replicas in self._slots():
            if low <= slot <= high:
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def _slots(self) -> list:
        for node in self.nodes:
            if node.alive():
                with contextlib.closing(node.client()) as client, contextlib.suppress(redis.RedisError):
                    return client.execute_command("CLUSTER SLOTS")
        raise RuntimeError("no node of the cluster is alive")

    def wait_promoted(self, key: str | bytes, dead: Node, timeout: float = 30.0) -> None:
        """Until a live node other than `dead` serves `key` (its replica promoted)."""
        _wait(lambda: self.master_of(key).port != dead.port, timeout, f"{key!r} served by another node")

    def kill(self, node: Node) -> None:
        """kill -9: no goodbye, whatever its replica has not received is lost (as in a crash)."""
        if node.alive():
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def restart(self, node: Node) -> None:
        """Bring a killed node back (empty: it rejoins as a replica of whoever took its slots)."""
        self._spawn(node)
        _wait(lambda: _pings(node), 10, f"redis-server on {node.address} answers")

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _pings(node: Node) -> bool:
    with contextlib.closing(node.client()) as client:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False


def _cluster_ok(node: Node) -> bool:
    with contextlib.closing(node.client()) as client:
        try:
            info = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False
    if not isinstance(info, dict):  # (redis-py parses the reply into a dict; a raw one is "name:value" lines)
        text = info.decode() if isinstance(info, bytes) else str(info)
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return str(info.get("cluster_state")) == "ok" and str(info.get("cluster_slots_ok")) == "16384"


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)
