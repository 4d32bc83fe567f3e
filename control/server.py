"""The control service process: gRPC server with TLS, auth, reflection and health, on a PostgreSQL pool.

`create_server(config)` builds and starts a server and returns it with its port (port 0 picks a free
one, as tests do); `main()` only adds logging and waiting.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg_pool import ConnectionPool

from callstate.connection import connect
from control import db
from control.access import throttle, tls
from control.access.auth import PasswordGate, TokenAuthority
from control.api import calls, paging
from control.api.interceptors import AuthInterceptor, ErrorInterceptor, MetricsInterceptor, RequestCheckInterceptor
from control.api.servicers.access import AuditService, AuthService, OperatorService
from control.api.servicers.accounts import AccountService, CompanyService
from control.api.servicers.billing import CdrService, InvoiceService, NotificationService, ReceiptService
from control.api.servicers.configuration import DirectoryService, RateGroupService, TrunkService
from control.api.servicers.routing import RouteService
from control.billing.worker import BillingWorker, Settings
from control.config import Config, describe, load_config
from control.leader import Leadership
from control.metrics import ControlMetrics, MetricsServer, StateCollector, StateSources, serve
from control.notifications.sender import MailSettings, Sender
from control.projection import Publisher
from control.routing.simulator import Simulator
from tollgate.v1 import (
    account_pb2,
    account_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    cdr_pb2,
    cdr_pb2_grpc,
    company_pb2,
    company_pb2_grpc,
    directory_pb2,
    directory_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
    notification_pb2,
    notification_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
    receipt_pb2,
    receipt_pb2_grpc,
    route_pb2,
    route_pb2_grpc,
    trunks_pb2,
    trunks_pb2_grpc,
)

log = logging.getLogger("tollgate.control")

SERVICE_NAMES = (
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    company_pb2.DESCRIPTOR.services_by_name["CompanyService"].full_name,
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    rating_pb2.DESCRIPTOR.services_by_name["RateGroupService"].full_name,
    trunks_pb2.DESCRIPTOR.services_by_name["TrunkService"].full_name,
    directory_pb2.DESCRIPTOR.services_by_name["DirectoryService"].full_name,
    cdr_pb2.DESCRIPTOR.services_by_name["CdrService"].full_name,
    invoice_pb2.DESCRIPTOR.services_by_name["InvoiceService"].full_name,
    operator_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    receipt_pb2.DESCRIPTOR.services_by_name["ReceiptService"].full_name,
    notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    route_pb2.DESCRIPTOR.services_by_name["RouteService"].full_name,
)
_HEALTH_INTERVAL_SECONDS = 5.0
# Health of this name: SERVING on the leader (control/leader.py), NOT_SERVING on a follower. Not a gRPC service:
# only a way to ask a service whether it runs the billing jobs (load balancers check "", served by both).
LEADER_HEALTH_NAME = "tollgate.control.Leader"


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    pool: ConnectionPool
    publisher: Publisher
    billing: BillingWorker
    notifier: Sender
    simulator: Simulator
    _stop_health: threading.Event
    metrics: ControlMetrics
    leadership: Leadership
    metrics_server: MetricsServer | None = None  # None: metrics_listen is empty

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.port if self.metrics_server else None

    def stop(self, grace: float = 2.0) -> None:
        self._stop_health.set()
        if self.metrics_server:
            self.metrics_server.stop()
        self.server.stop(grace).wait()
        self.simulator.close()
        self.publisher.close()
        self.billing.stop()
        self.notifier.stop()
        self.leadership.stop()  # after its jobs stopped: a follower takes over at its next poll
        self.pool.close()


def _watch_health(pool: ConnectionPool, redis_url: str, servicer: health.HealthServicer,
                  stop: threading.Event) -> None:
    """SERVING while PostgreSQL and Redis answer; NOT_SERVING otherwise, so load balancers can route away."""
    client = connect(redis_url, socket_timeout=5)
    while True:
        try:
            with pool.connection(timeout=5) as conn:
                conn.execute("SELECT 1")
            client.ping()
            status = health_pb2.HealthCheckResponse.SERVING
        except Exception:  # any failure to reach the database means "not serving"
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            servicer.set(name, status)
        if stop.wait(_HEALTH_INTERVAL_SECONDS):
            client.close()
            return


def _housekeeping(pool: ConnectionPool, config: Config, stop: threading.Event) -> None:
    """Purge expired account sessions, long-expired operator tokens and stale login failures."""
    while not stop.wait(config.housekeeping_interval_seconds):
        try:
            with pool.connection(timeout=5) as conn, conn.transaction():
                conn.execute("DELETE FROM api_tokens WHERE expires_at < now()")
                # Operator tokens stay listable for a while after they expire or are revoked (who had access).
                conn.execute("DELETE FROM operator_tokens WHERE greatest(expires_at, coalesce(revoked_at, expires_at))"
                             " < now() - interval '90 days'")
                throttle.purge(conn, config.login_lock_seconds)
        except Exception:  # housekeeping must never stop the service; the next round tries again
            log.warning("housekeeping failed; retrying in %s s", config.housekeeping_interval_seconds, exc_info=True)


def _listen(server: grpc.Server, config: Config) -> int:
    """Bind with TLS (mutual with a client CA), or plaintext when configured so; the port, 0 if it failed."""
    credentials = None
    if config.tls_cert_file or config.tls_key_file:
        if not (config.tls_cert_file and config.tls_key_file):
            raise SystemExit("TLS needs both tls_cert_file and tls_key_file")
        credentials = tls.server_credentials(config)
    elif not config.plaintext:
        raise SystemExit("no TLS configured: set tls_cert_file and tls_key_file (scripts/start-stack.sh makes a "
                         "private CA), or plaintext = true to serve without TLS behind a TLS proxy or on loopback")
    try:
        if credentials is not None:
            return server.add_secure_port(config.listen, credentials)
        return server.add_insecure_port(config.listen)
    except RuntimeError:  # grpc raises instead of returning 0 when it cannot bind
        return 0


def _servicers(server: grpc.Server, database: db.Database, config: Config, simulator: Simulator,
               metrics: ControlMetrics) -> None:
    limiter = throttle.LoginThrottle(
        throttle.Policy(config.login_free_attempts, config.login_max_attempts, config.login_lock_seconds),
        throttle.Policy(config.login_source_free_attempts, config.login_source_max_attempts, config.login_lock_seconds),
        metrics)
    account_pb2_grpc.add_AccountServiceServicer_to_server(AccountService(database), server)
    company_pb2_grpc.add_CompanyServiceServicer_to_server(CompanyService(database), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthService(database, config, limiter), server)
    rating_pb2_grpc.add_RateGroupServiceServicer_to_server(RateGroupService(database), server)
    trunks_pb2_grpc.add_TrunkServiceServicer_to_server(TrunkService(database), server)
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(DirectoryService(database), server)
    cdr_pb2_grpc.add_CdrServiceServicer_to_server(CdrService(database), server)
    invoice_pb2_grpc.add_InvoiceServiceServicer_to_server(InvoiceService(database), server)
    operator_pb2_grpc.add_OperatorServiceServicer_to_server(OperatorService(database, config, limiter), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditService(database), server)
    receipt_pb2_grpc.add_ReceiptServiceServicer_to_server(ReceiptService(database), server)
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(NotificationService(database), server)
    route_pb2_grpc.add_RouteServiceServicer_to_server(RouteService(database, simulator), server)


def billing_settings(config: Config) -> Settings:
    return Settings(config.ledger_interval_seconds, config.reap_grace_seconds, config.max_ring_seconds,
                    config.node_dead_seconds)


def mail_settings(config: Config) -> MailSettings:
    return MailSettings(config.smtp_host, config.smtp_port, config.smtp_security, config.smtp_username,
                        config.smtp_password, config.smtp_from, config.smtp_ca_file, config.smtp_timeout_seconds,
                        config.notification_retry_seconds, config.notification_retry_max_seconds,
                        config.notification_interval_seconds)


def _lead(config: Config, servicer: health.HealthServicer) -> Leadership:
    """Start contending for the leader lock; its health name follows (see LEADER_HEALTH_NAME)."""
    def show(leading: bool) -> None:
        servicer.set(LEADER_HEALTH_NAME, health_pb2.HealthCheckResponse.SERVING if leading
                     else health_pb2.HealthCheckResponse.NOT_SERVING)

    show(False)
    leadership = Leadership(config.dsn, config.leader_poll_seconds, show)
    leadership.start()
    return leadership


def create_server(config: Config) -> RunningServer:
    mail_settings(config).check()  # before anything starts: a mail setup that cannot work stops the service
    db.migrate(config.dsn)
    pool = db.open_pool(config.dsn, config.pool_max_size, config.statement_timeout_seconds)
    database = db.Database(pool, config.statement_timeout_seconds, config.long_statement_timeout_seconds)
    with pool.connection() as conn:
        page_key = paging.load_key(conn)
    parts = calls.Server(config, paging.PageTokens(page_key),
                         PasswordGate(config.password_checks, config.password_checks_waiting))
    metrics = ControlMetrics()
    interceptors = [MetricsInterceptor(metrics), ErrorInterceptor(parts),
                    AuthInterceptor(TokenAuthority(database, config.admin_tokens)), RequestCheckInterceptor()]
    options = [("grpc.max_receive_message_length", config.max_request_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers), interceptors=interceptors,
                         options=options)
    simulator = Simulator(config.redis_url, config.redis_namespace)
    _servicers(server, database, config, simulator, metrics)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = _listen(server, config)
    except SystemExit:
        pool.close()
        simulator.close()
        raise
    if port == 0:
        pool.close()
        simulator.close()
        raise SystemExit(f"cannot listen on {config.listen}: address in use or invalid")
    try:
        metrics_server = _serve_metrics(config, pool, metrics)
    except SystemExit:
        pool.close()
        simulator.close()
        raise
    leadership = _lead(config, health_servicer)
    publisher = Publisher(config.dsn, config.redis_url, config.projection_interval_seconds, config.redis_namespace,
                          metrics, leadership)
    publisher.start()
    billing = BillingWorker(pool, config.dsn, config.redis_url, config.redis_namespace, billing_settings(config),
                            metrics, leadership)
    billing.start()
    notifier = Sender(pool, config.dsn, mail_settings(config), metrics)
    notifier.start()
    server.start()
    stop = threading.Event()
    threading.Thread(target=_watch_health, args=(pool, config.redis_url, health_servicer, stop), daemon=True).start()
    threading.Thread(target=_housekeeping, args=(pool, config, stop), name="housekeeping", daemon=True).start()
    return RunningServer(server, port, pool, publisher, billing, notifier, simulator, stop, metrics, leadership,
                         metrics_server)


def _serve_metrics(config: Config, pool: ConnectionPool, metrics: ControlMetrics) -> MetricsServer | None:
    """/metrics on metrics_listen (None when it is empty), with the queues read at each scrape."""
    if not config.metrics_listen:
        return None
    # Its own client with short timeouts: a scrape must not wait long on a Redis that does not answer.
    client = connect(config.redis_url, socket_timeout=2, socket_connect_timeout=2)
    metrics.watch(StateCollector(StateSources(pool, client, config.redis_namespace)))
    return serve(config.metrics_listen, metrics.registry, client)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tollgate gRPC control service")
    parser.add_argument("--config", help="TOML file (default: $TOLLGATE_CONFIG or /etc/tollgate/control.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    log.info("settings: %s", describe(config))
    running = create_server(config)
    transport = ("mutual TLS" if config.tls_client_ca_file else "TLS") if config.tls_cert_file else "PLAINTEXT"
    log.info("listening on %s (port %d, %s)", config.listen, running.port, transport)
    if running.metrics_server:
        log.info("metrics on http://%s/metrics", config.metrics_listen)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("stopping")
    running.stop()


if __name__ == "__main__":
    main()
