"""The control service's Prometheus metrics (README "Metrics"), served at /metrics on `metrics_listen`.

Each service has a registry of its own (a process may run several services, as the tests do). Events are
counted where they happen - RPCs by control/api/interceptors.MetricsInterceptor, published projection versions
by the publisher, recorded CDRs and invoice runs by the billing worker, mails by the sender, failed logins by
the throttle. Queues are read when Prometheus scrapes (StateCollector): the ledger's backlog in Redis, the
projection's live version and families behind, the notification outbox; one failing store leaves out its own
metrics, never the scrape.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from callstate.keys import EVENTS
from fastpath import snapshot_format as fmt

log = logging.getLogger("tollgate.metrics")

# RPCs run from a millisecond (a cached read) to minutes (a deck import, invoicing)
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SCRAPE_TIMEOUT_SECONDS = 2.0  # a store slower than this leaves its metrics out of the scrape

# No `<name>_created` series beside every counter and histogram: Prometheus stores each as a series of its own and
# rate() has no use for them (a process-wide switch of prometheus_client).
disable_created_metrics()


class ControlMetrics:
    """Every event metric of one control service, in its registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter("tollgate_grpc_handled", "RPCs finished, by method and status code",
                            ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("tollgate_grpc_handling_seconds", "RPC handling time, by method",
                                     ["method"], buckets=RPC_BUCKETS, registry=r)
        self.publish_lag = Histogram(
            "tollgate_projection_publish_lag_seconds",
            "Seconds from the publisher finding a family behind PostgreSQL to its new version being live, by kind",
            ["kind"], buckets=PUBLISH_BUCKETS, registry=r)
        self.cdrs = Counter("tollgate_cdrs_recorded", "Call events recorded as CDRs in PostgreSQL", registry=r)
        self.invoice_runs = Counter("tollgate_invoice_runs", "Automatic invoicing runs, by result (ok, failed)",
                                    ["result"], registry=r)
        self.invoices = Counter("tollgate_invoices_issued", "Invoices issued by the automatic runs", registry=r)
        self.mails = Counter("tollgate_notifications_tried",
                             "Notification mails tried, by result (sent, retry, failed)", ["result"], registry=r)
        self.login_failures = Counter("tollgate_login_failures", "Failed logins (accounts and operators)",
                                      registry=r)
        self.login_locked = Counter("tollgate_login_locked", "Logins refused because the login or source is locked",
                                    registry=r)
        for result in ("ok", "failed"):  # (series present from the start: rate() sees the first one)
            self.invoice_runs.labels(result)
        for result in ("sent", "retry", "failed"):
            self.mails.labels(result)

    def watch(self, collector: Collector) -> None:
        """Read `collector` at every scrape too."""
        self.registry.register(collector)


@dataclass(frozen=True)
class StateSources:
    """Where StateCollector reads the queues from."""

    pool: ConnectionPool
    redis: redis.Redis
    namespace: str


class StateCollector(Collector):
    """Queues and versions, read at scrape time from PostgreSQL and Redis (a handful of cheap reads)."""

    def __init__(self, sources: StateSources):
        self._sources = sources
        self._keys = fmt.Keys(sources.namespace)

    def collect(self) -> Iterator[Metric]:
        for read in (self._projection, self._ledger, self._outbox):
            try:
                yield from read()
            except Exception as exc:  # a store down: its metrics are missing, which alerts can see (absent())
                log.warning("metrics: %s unreadable: %s", read.__name__.strip("_"), exc)

    def _projection(self) -> Iterator[Metric]:
        client = self._sources.redis
        live = {k.decode(): int(v) for k, v in client.hgetall(self._keys.pointer).items()}
        published = {k.decode(): int(v) for k, v in client.hgetall(self._keys.sources).items()}
        with self._sources.pool.connection(timeout=SCRAPE_TIMEOUT_SECONDS) as conn:
            wanted = {row["family"]: row["seq"] for row in conn.execute("SELECT family, seq FROM projection_state")}
        behind = sum(1 for family, seq in wanted.items() if published.get(family, -1) < seq or family not in live)
        yield _gauge("tollgate_projection_version",
                     "Newest live projection version (the one counter every family's versions come from)",
                     max(live.values(), default=0))
        yield _gauge("tollgate_projection_families_behind", "Families whose live version lags PostgreSQL", behind)

    def _ledger(self) -> Iterator[Metric]:
        client = self._sources.redis
        streams = list(client.scan_iter(match=f"{self._sources.namespace}:{{a:*}}:{EVENTS}", count=1000,
                                        _type="stream"))
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        # Recorded entries are trimmed (control/billing/ledger.py): what is left waits for PostgreSQL.
        yield _gauge("tollgate_ledger_backlog", "Call events in Redis not yet recorded as CDRs",
                     sum(pipe.execute()) if streams else 0)

    def _outbox(self) -> Iterator[Metric]:
        with self._sources.pool.connection(timeout=SCRAPE_TIMEOUT_SECONDS) as conn:
            row = conn.execute("SELECT count(*) AS pending, count(*) FILTER (WHERE next_attempt_at <= now()) AS due"
                               " FROM notifications WHERE status = 'PENDING'").fetchone()  # (a partial index)
        pending, due = row["pending"], row["due"]
        yield _gauge("tollgate_notifications_pending", "Notification mails waiting in the outbox", pending)
        yield _gauge("tollgate_notifications_due", "Pending notification mails whose next try is due now", due)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


@dataclass
class MetricsServer:
    """The /metrics HTTP server of one control service."""

    server: WSGIServer
    thread: threading.Thread
    client: redis.Redis | None = None  # the scrape's own Redis client, closed with the server

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        if self.client is not None:
            self.client.close()


def serve(listen: str, registry: CollectorRegistry, client: redis.Redis | None = None) -> MetricsServer:
    """Serve the registry at http://listen/metrics ("host:port"; port 0 picks a free one)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"metrics_listen {listen!r}: expected HOST:PORT, or empty for no metrics")
    try:
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        raise SystemExit(f"cannot serve metrics on {listen}: {exc}") from None
    return MetricsServer(server, thread, client)
