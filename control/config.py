"""Control service configuration: a TOML file (TOLLGATE_CONFIG) with environment overrides."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG_PATH = "/etc/tollgate/control.toml"


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    dsn: str = "postgresql://postgres@127.0.0.1:5432/tollgate"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "tg"  # key prefix of the projection; distinct per stack sharing one Redis
    admin_tokens: tuple[str, ...] = field(default_factory=tuple)
    token_ttl_seconds: int = 86_400
    pool_max_size: int = 10
    workers: int = 16
    # How often the Redis projection is checked against PostgreSQL besides the change notifications.
    projection_interval_seconds: float = 2.0
    # How often CDRs are moved from Redis into PostgreSQL and orphaned calls are looked for (control/ledger.py).
    ledger_interval_seconds: float = 1.0
    # An open call is orphaned (its node died) this long after it must have ended: answered, its granted
    # seconds after the answer; unanswered, max_ring_seconds (>= Kamailio's fr_inv_timer) after its admission.
    reap_grace_seconds: int = 300
    max_ring_seconds: int = 120


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file when it exists, then apply TOLLGATE_* variables on top."""
    env = os.environ if environ is None else environ
    path = path or env.get("TOLLGATE_CONFIG", DEFAULT_CONFIG_PATH)
    values: dict = {}
    if Path(path).is_file():
        with open(path, "rb") as f:
            values = tomllib.load(f)
    unknown = set(values) - set(Config.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)}")
    for key, var in (("listen", "TOLLGATE_LISTEN"), ("dsn", "TOLLGATE_DSN"), ("redis_url", "TOLLGATE_REDIS_URL"),
                     ("redis_namespace", "TOLLGATE_REDIS_NAMESPACE")):
        if env.get(var):
            values[key] = env[var]
    if env.get("TOLLGATE_ADMIN_TOKENS"):
        values["admin_tokens"] = [t.strip() for t in env["TOLLGATE_ADMIN_TOKENS"].split(",") if t.strip()]
    values["admin_tokens"] = tuple(values.get("admin_tokens", ()))
    return Config(**values)
