"""Control service configuration: a TOML file (TOLLGATE_CONFIG) with environment overrides.

Every key has an environment variable, TOLLGATE_ and the key in capitals (`statement_timeout_seconds` is
TOLLGATE_STATEMENT_TIMEOUT_SECONDS); a list is comma-separated there, a boolean is 1/0, true/false, yes/no.
config/control.example.toml documents each key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG_PATH = "/etc/tollgate/control.toml"
ENV_PREFIX = "TOLLGATE_"


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    # Prometheus /metrics (control/metrics.py), HTTP without TLS: keep it on loopback or a monitoring network.
    # Empty = no metrics.
    metrics_listen: str = "127.0.0.1:9464"
    dsn: str = "postgresql://postgres@127.0.0.1:5432/tollgate"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "tg"  # key prefix of the projection; distinct per stack sharing one Redis
    # Transport: TLS with this certificate and key; with a client CA, every client must show a certificate it
    # signed (mutual TLS). Without a certificate the service refuses to start unless plaintext is true.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    plaintext: bool = False
    # Break-glass bearer tokens with the admin role; named operators (OperatorService) are the everyday way.
    admin_tokens: tuple[str, ...] = field(default_factory=tuple)
    token_ttl_seconds: int = 28_800  # account sessions from Login
    operator_token_ttl_seconds: int = 7_776_000  # operator tokens, unless the request says otherwise (90 days)
    pool_max_size: int = 10
    workers: int = 16
    # Every database statement of an RPC stops after this long (or when the client gives up, if sooner);
    # exports, deck imports and invoice generation get the long limit.
    statement_timeout_seconds: float = 10.0
    long_statement_timeout_seconds: float = 600.0
    max_request_bytes: int = 4 * 1024 * 1024  # one gRPC message (a deck upload streams many)
    max_upload_bytes: int = 256 * 1024 * 1024  # one whole rate deck upload
    # Login throttling, per login name and per client address: after `free` failures each further failure
    # locks for 1, 2, 4 … seconds; at `max` failures the lock lasts login_lock_seconds.
    login_free_attempts: int = 5
    login_max_attempts: int = 10
    login_source_free_attempts: int = 20
    login_source_max_attempts: int = 100
    login_lock_seconds: int = 900
    # Argon2 checks (64 MiB, ~0.1 s each) running at once, and waiting: more are refused at once, so that a
    # login flood cannot take every worker or all the memory.
    password_checks: int = 1
    password_checks_waiting: int = 4
    # How often expired tokens and stale login failures are purged.
    housekeeping_interval_seconds: float = 300.0
    # How often the Redis projection is checked against PostgreSQL besides the change notifications.
    projection_interval_seconds: float = 2.0
    # How often the billing jobs run (control/billing/worker.py): restore, payments, reaping, CDRs, invoices.
    ledger_interval_seconds: float = 1.0
    # An open call is orphaned (its node died) this long after it must have ended: answered, its granted
    # seconds after the answer; unanswered, max_ring_seconds (>= Kamailio's fr_inv_timer) after its admission.
    reap_grace_seconds: int = 300
    max_ring_seconds: int = 120
    # A Kamailio node that sent no heartbeat (every 5 s) for this long is dead: its calls are settled at what
    # they cost up to its last heartbeat and their slots freed. A node restarting sooner keeps its calls.
    node_dead_seconds: int = 60
    # Several control services on one database: one leads (runs the billing jobs and the projection publisher),
    # the others try to take the lead this often; a killed leader's work moves within about this long.
    leader_poll_seconds: float = 1.0
    # E-mail notifications (control/notifications): the SMTP server they are sent through. Empty smtp_host = no
    # mail is sent; notifications wait in the outbox until one is configured.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"  # "starttls" (upgrade on the plain port), "tls" (implicit, port 465), "none"
    smtp_username: str = ""  # with a password: AUTH after STARTTLS / TLS
    smtp_password: str = ""
    smtp_from: str = ""  # the From address; required with smtp_host
    smtp_ca_file: str = ""  # the CA that signed the SMTP server's certificate; empty = the system's CAs
    smtp_timeout_seconds: float = 30.0
    # A message the server did not take is tried again after notification_retry_seconds, then twice as long
    # after each failure, at most notification_retry_max_seconds; the outbox is looked at every
    # notification_interval_seconds besides the notifications of new messages.
    notification_retry_seconds: float = 30.0
    notification_retry_max_seconds: float = 1800.0
    notification_interval_seconds: float = 5.0


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def _types() -> dict[str, type]:
    return typing.get_type_hints(Config)


def _from_env(key: str, text: str, kind) -> object:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no"):
            raise SystemExit(f"{env_name(key)}: {text!r} is not a boolean (1/0, true/false, yes/no)")
        return lowered in ("1", "true", "yes")
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            raise SystemExit(f"{env_name(key)}: {text!r} is not a number") from None
    if typing.get_origin(kind) is tuple:
        return [t.strip() for t in text.split(",") if t.strip()]
    return text


def _checked(source: str, key: str, value, kind) -> object:
    """A TOML value of the key's type (an int is fine for a float), or a SystemExit naming the key."""
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise SystemExit(f"{source}: {key} must be a list of strings")
        return tuple(value)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise SystemExit(f"{source}: {key} must be of type {kind.__name__}, not {value!r}")
    return value


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file when it exists, then apply TOLLGATE_* variables on top."""
    env = os.environ if environ is None else environ
    path = path or env.get("TOLLGATE_CONFIG", DEFAULT_CONFIG_PATH)
    values: dict = {}
    if Path(path).is_file():
        with open(path, "rb") as f:
            values = tomllib.load(f)
    types = _types()
    unknown = set(values) - set(types)
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)}")
    for key, kind in types.items():
        if env.get(env_name(key)):
            values[key] = _from_env(key, env[env_name(key)], kind)
    for key in list(values):
        values[key] = _checked(path, key, values[key], types[key])
    return Config(**values)


def describe(config: Config) -> dict[str, object]:
    """The settings as a dict, with secrets blanked: what may be logged."""
    shown = dataclasses.asdict(config)
    shown["admin_tokens"] = f"{len(config.admin_tokens)} token(s)"
    for key in ("dsn", "redis_url"):
        shown[key] = redact_url(str(shown[key]))
    if config.smtp_password:
        shown["smtp_password"] = "***"
    return shown


def redact_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (also password= in a key=value DSN)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        credentials, at, host = rest.rpartition("@")
        if at and ":" in credentials:
            user = credentials.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return url
    return " ".join("password=***" if part.startswith("password=") else part for part in url.split())
