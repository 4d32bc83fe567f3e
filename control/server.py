"""The control service process: gRPC server with auth, reflection and health, on a PostgreSQL pool.

`create_server(config)` builds and starts a server and returns it with its port (port 0 picks a free
one, as tests do); `main()` only adds logging, migrations and waiting.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg_pool import ConnectionPool

from control import db
from control.auth import ApiInterceptor, TokenAuthority
from control.cdrs import CdrService
from control.config import Config, load_config
from control.config_servicers import DirectoryService, RateGroupService, TrunkService
from control.invoices import InvoiceService
from control.ledger import Ledger
from control.projection import Publisher
from control.servicers import AccountService, AuthService, CompanyService
from tollgate.v1 import (
    account_pb2,
    account_pb2_grpc,
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
    rating_pb2,
    rating_pb2_grpc,
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
)
_HEALTH_INTERVAL_SECONDS = 5.0


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    pool: ConnectionPool
    publisher: Publisher
    ledger: Ledger
    _stop_health: threading.Event

    def stop(self, grace: float = 2.0) -> None:
        self._stop_health.set()
        self.server.stop(grace).wait()
        self.publisher.close()
        self.ledger.stop()
        self.pool.close()


def _watch_health(pool: ConnectionPool, redis_url: str, servicer: health.HealthServicer,
                  stop: threading.Event) -> None:
    """SERVING while PostgreSQL and Redis answer; NOT_SERVING otherwise, so load balancers can route away."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
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


def create_server(config: Config) -> RunningServer:
    db.migrate(config.dsn)
    pool = db.open_pool(config.dsn, config.pool_max_size)
    interceptor = ApiInterceptor(TokenAuthority(pool, config.admin_tokens))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers), interceptors=[interceptor])
    account_pb2_grpc.add_AccountServiceServicer_to_server(AccountService(pool), server)
    company_pb2_grpc.add_CompanyServiceServicer_to_server(CompanyService(pool), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthService(pool, config.token_ttl_seconds), server)
    rating_pb2_grpc.add_RateGroupServiceServicer_to_server(RateGroupService(pool), server)
    trunks_pb2_grpc.add_TrunkServiceServicer_to_server(TrunkService(pool), server)
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(DirectoryService(pool), server)
    cdr_pb2_grpc.add_CdrServiceServicer_to_server(CdrService(pool), server)
    invoice_pb2_grpc.add_InvoiceServiceServicer_to_server(InvoiceService(pool), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError:  # grpc raises instead of returning 0 when it cannot bind
        port = 0
    if port == 0:
        pool.close()
        raise SystemExit(f"cannot listen on {config.listen}: address in use or invalid")
    publisher = Publisher(config.dsn, config.redis_url, config.projection_interval_seconds, config.redis_namespace)
    publisher.start()
    ledger = Ledger(config.dsn, config.redis_url, config.redis_namespace, config.ledger_interval_seconds,
                    config.reap_grace_seconds, config.max_ring_seconds)
    ledger.start()
    server.start()
    stop = threading.Event()
    threading.Thread(target=_watch_health, args=(pool, config.redis_url, health_servicer, stop), daemon=True).start()
    return RunningServer(server, port, pool, publisher, ledger, stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tollgate gRPC control service")
    parser.add_argument("--config", help="TOML file (default: $TOLLGATE_CONFIG or /etc/tollgate/control.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    if not config.admin_tokens:
        log.warning("no admin_tokens configured: only account tokens from Login will work")
    running = create_server(config)
    log.info("listening on %s (port %d)", config.listen, running.port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("stopping")
    running.stop()


if __name__ == "__main__":
    main()
