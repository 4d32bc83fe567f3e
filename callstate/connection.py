"""The one place a Redis URL becomes a client: a single Redis (`redis://`, `unix://`) or a Redis Cluster.

A cluster is opt-in by its URL scheme, `redis+cluster://[user:password@]host:port[,host:port...]`: any of its
nodes will do as a seed (the client learns the rest from CLUSTER SLOTS), but naming several lets a client
start while one is down. Every other URL goes to redis-py's `Redis.from_url` exactly as before, so a stack
on one Redis sees no change.

What cluster mode asks of the code that uses the client (README "Redis Cluster", docs/DECISIONS.md): every
script's and every multi-key command's keys share one hash tag ({a:<account>}, {t:<trunk>}, {cfg}); reads
over many accounts' streams go one stream per command (callstate.connection.per_slot); scripts are loaded on
every node, replicas included, so that a promoted replica knows them (load_everywhere).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

CLUSTER_SCHEME = "redis+cluster"
DEFAULT_PORT = 6379
AnyRedis = redis.Redis | RedisCluster  # (a LazyCluster stands for a RedisCluster)


def is_cluster(url: str) -> bool:
    return url.partition("://")[0].lower() == CLUSTER_SCHEME


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The seed nodes (host, port) of a redis+cluster:// URL, in the order written."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for part in filter(None, netloc.split(",")):
        host, _, port = part.rpartition(":") if part.rpartition(":")[2].isdigit() else (part, "", "")
        nodes.append((host.strip("[]") or "127.0.0.1", int(port or DEFAULT_PORT)))
    if not nodes:
        raise ValueError(f"redis URL {url!r}: a cluster needs at least one host:port")
    return nodes


def cluster_credentials(url: str) -> tuple[str | None, str | None]:
    """(username, password) of a redis+cluster:// URL; None where absent."""
    credentials, at, _ = urlsplit(url).netloc.rpartition("@")
    if not at:
        return None, None
    user, colon, password = credentials.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def connect(url: str, **options) -> AnyRedis:
    """A client for `url`; `options` are redis-py connection options (socket_timeout, retry, ...)."""
    if not is_cluster(url):
        return redis.Redis.from_url(url, **options)
    path = urlsplit(url).path.strip("/")
    if path not in ("", "0"):
        raise ValueError(f"redis URL {url!r}: a Redis Cluster has database 0 only")
    username, password = cluster_credentials(url)
    nodes = [ClusterNode(host, port) for host, port in cluster_nodes(url)]
    # A node that stops answering makes redis-py re-read the slot map and try again: that is how a client
    # follows a failover (the replica promoted takes the dead master's slots).
    return LazyCluster(lambda: RedisCluster(startup_nodes=nodes, username=username, password=password, **options))


class LazyCluster:
    """A RedisCluster made at its first use. redis-py's connects in its constructor and raises when no seed
    answers, where a single Redis's client connects lazily: the services and Kamailio's workers are built to
    start while Redis is down (fail-static) and catch redis.RedisError, so the first use tries again and a
    failure is a redis.ConnectionError."""

    def __init__(self, factory: Callable[[], RedisCluster]):
        self._factory = factory
        self._client: RedisCluster | None = None

    def __getattr__(self, name: str):
        return getattr(self.cluster(), name)

    def cluster(self) -> RedisCluster:
        if self._client is None:
            try:
                self._client = self._factory()
            except RedisClusterException as exc:
                raise redis.ConnectionError(f"no Redis Cluster node answers: {exc}") from exc
        return self._client

    def register_script(self, script: str | bytes) -> Script:
        # Bytes, so that the Script needs no encoder from a client that may not exist yet.
        return Script(self, script.encode() if isinstance(script, str) else script)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def clustered(client: AnyRedis) -> bool:
    return isinstance(client, (RedisCluster, LazyCluster))


def per_slot(client: AnyRedis, keys: Iterable[bytes | str]) -> list[list]:
    """`keys` in groups a multi-key command may name together: one group on a single Redis, one group per
    hash slot on a cluster (a command whose keys span slots is refused with CROSSSLOT there)."""
    keys = list(keys)
    if not clustered(client):
        return [keys] if keys else []
    groups: dict[int, list] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode() if isinstance(key, str) else key), []).append(key)
    return list(groups.values())


def load_everywhere(client: AnyRedis, text: str) -> None:
    """SCRIPT LOAD on every node, replicas too: Redis does not replicate its script cache, and a replica
    promoted by a failover would answer NOSCRIPT to the clients that EVALSHA without a fallback
    (Kamailio's ndb_redis)."""
    if clustered(client):
        client.execute_command("SCRIPT LOAD", text, target_nodes=RedisCluster.ALL_NODES)
    else:
        client.script_load(text)
