"""Redis and PostgreSQL with credentials (issue 10 finding 9): the service runs as a Redis ACL user limited to
its namespace and as a PostgreSQL role with a password that owns only its database, and never logs either
password."""

from __future__ import annotations

import logging
import secrets
import time

import grpc
import psycopg
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from callstate.store import CallState
from control.config import Config, describe, redact_url
from control.server import create_server
from fastpath import snapshot_format as fmt
from tests.conftest import PG_SERVER_DSN, REDIS_URL
from tests.helpers import stubs_for, unique_email
from tollgate.v1 import account_pb2


@pytest.fixture
def redis_user(redis_client):
    """A Redis ACL user with a password, allowed only its own namespace's keys and no dangerous commands."""
    name, password = f"tgacl{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    namespace = f"acl{secrets.token_hex(4)}"
    redis_client.execute_command("ACL", "SETUSER", name, "on", f">{password}", "resetkeys", f"~{namespace}:*",
                                 "resetchannels", "-@all", "+@all", "-@dangerous", "+info")
    host_port_db = REDIS_URL.removeprefix("redis://")
    yield {"url": f"redis://{name}:{password}@{host_port_db}", "namespace": namespace, "name": name,
           "wrong": f"redis://{name}:not-the-password@{host_port_db}"}
    redis_client.execute_command("ACL", "DELUSER", name)
    for key in redis_client.scan_iter(f"{namespace}:*", count=1000):
        redis_client.delete(key)


@pytest.fixture
def postgres_role():
    """A login role with a password, owner of a database of its own and nothing else (no superuser)."""
    role, password, database = (f"tgrole{secrets.token_hex(4)}", secrets.token_urlsafe(16),
                                f"tollgate_cred_{secrets.token_hex(4)}")
    with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
            sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    info = psycopg.conninfo.conninfo_to_dict(PG_SERVER_DSN)
    dsn = f"postgresql://{role}:{password}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{database}"
    yield {"dsn": dsn, "password": password}
    with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def test_the_service_runs_on_a_redis_acl_user_and_a_postgresql_role(redis_user, postgres_role, caplog):
    caplog.set_level(logging.INFO)
    token = "tga_" + secrets.token_urlsafe(16)
    config = Config(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", dsn=postgres_role["dsn"],
                    redis_url=redis_user["url"],
                    redis_namespace=redis_user["namespace"], admin_tokens=(token,), plaintext=True, workers=4,
                    projection_interval_seconds=0.5)
    running = create_server(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert _wait(lambda: health.Check(health_pb2.HealthCheckRequest()).status ==
                         health_pb2.HealthCheckResponse.SERVING)
            stubs = stubs_for(channel, token)
            account = stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
                email=unique_email("acl"))), metadata=stubs.metadata)
            stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(account=account.name, amount=3_000_000),
                                       metadata=stubs.metadata)
            # The projection is published and the payment reaches the switch's live balance, through the ACL.
            as_user = redis.Redis.from_url(redis_user["url"])
            keys = fmt.Keys(redis_user["namespace"])
            assert _wait(lambda: as_user.hget(keys.pointer, "accounts") is not None)
            money = CallState(as_user, redis_user["namespace"])
            assert _wait(lambda: money.available(account.account_number, 0) == 3_000_000)
            as_user.close()
    finally:
        running.stop(grace=0)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert postgres_role["password"] not in logged and redis_user["url"].split(":")[2].split("@")[0] not in logged


def test_a_wrong_redis_password_is_refused(redis_user):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(redis_user["wrong"]).ping()
    outsider = redis.Redis.from_url(redis_user["url"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        outsider.set("somebody-elses-key", "x")  # outside its namespace
    outsider.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://tollgate:s3cret@db:5432/tollgate", "postgresql://tollgate:***@db:5432/tollgate"),
    ("redis://user:s3cret@127.0.0.1:6379/0", "redis://user:***@127.0.0.1:6379/0"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("host=db user=tollgate password=s3cret dbname=tollgate", "host=db user=tollgate password=*** dbname=tollgate"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_credentials_are_redacted_where_settings_are_logged(url, shown):
    assert redact_url(url) == shown
    assert "s3cret" not in str(describe(Config(dsn=url, redis_url=url, admin_tokens=("s3cret",))))
