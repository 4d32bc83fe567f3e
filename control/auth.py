"""Who is calling: bearer tokens, checked by one server interceptor so servicers never read metadata.

Admin tokens come from the configuration and see everything. Account tokens come from Login and see only
their own account. The interceptor also turns ApiError (and caller-caused database errors) into rich
statuses, so every RPC reports errors the same way.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from psycopg_pool import ConnectionPool

from control import errors

log = logging.getLogger(__name__)

# RPCs reachable without a token: logging in, and the standard health and reflection services.
PUBLIC_METHOD_PREFIXES = (
    "/tollgate.v1.AuthService/Login",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)

_password_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """The caller of the current RPC: an admin, or one account (by database id)."""

    account_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.account_id is None


ADMIN = Principal()
_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:  # a public RPC asked; a bug, not the caller's doing
        raise RuntimeError("no principal for this RPC")
    return principal


def require_admin() -> None:
    if not current_principal().is_admin:
        raise errors.permission_denied("needs an admin token")


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


SESSION_TOKEN_PREFIX = "tgs_"


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def issue_token(conn: psycopg.Connection, account_id: int, ttl_seconds: int) -> tuple[str, datetime]:
    # A fixed prefix: a token never starts with "-" (which a command line would take for an option), and
    # a leaked one is recognisable in logs and secret scanners.
    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    conn.execute(
        "INSERT INTO api_tokens (token_sha256, account_id, expires_at) VALUES (%s, %s, %s)",
        (_token_digest(token), account_id, expires),
    )
    return token, expires


class TokenAuthority:
    def __init__(self, pool: ConnectionPool, admin_tokens: tuple[str, ...]):
        self._pool = pool
        self._admin_tokens = tuple(t.encode() for t in admin_tokens)

    def principal_for(self, metadata: tuple) -> Principal:
        token = _bearer_token(metadata)
        if any(hmac.compare_digest(token.encode(), admin) for admin in self._admin_tokens):
            return ADMIN
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT t.account_id FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
                " WHERE t.token_sha256 = %s AND t.expires_at > now() AND a.deleted_at IS NULL"
                " AND a.status = 'ACTIVE' AND (a.expire_at IS NULL OR a.expire_at > now())",
                (_token_digest(token),),
            ).fetchone()
        if row is None:
            raise errors.unauthenticated("invalid or expired token")
        return Principal(account_id=row["account_id"])


def _bearer_token(metadata: tuple) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise errors.unauthenticated('missing "authorization: Bearer <token>" metadata')


class ApiInterceptor(grpc.ServerInterceptor):
    """Authenticates each RPC, publishes the principal, and maps errors to rich statuses."""

    def __init__(self, authority: TokenAuthority):
        self._authority = authority

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        public = handler_call_details.method.startswith(PUBLIC_METHOD_PREFIXES)
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, public))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, public))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, public))
        if public:  # server reflection is the only bidirectional stream, and it needs no token
            return handler
        raise RuntimeError(f"{handler_call_details.method}: bidirectional streaming is not wrapped")

    def _authenticate(self, context: grpc.ServicerContext, public: bool) -> Principal | None:
        return None if public else self._authority.principal_for(context.invocation_metadata())

    def _wrap_unary(self, behavior: Callable, public: bool) -> Callable:
        def wrapped(request, context):
            with _api_errors(context):
                token = _current.set(self._authenticate(context, public))
                try:
                    return behavior(request, context)
                finally:
                    _current.reset(token)

        return wrapped

    def _wrap_stream(self, behavior: Callable, public: bool) -> Callable:
        def wrapped(request, context) -> Iterator:
            with _api_errors(context):
                token = _current.set(self._authenticate(context, public))
                try:
                    yield from behavior(request, context)
                finally:
                    _current.reset(token)

        return wrapped


class _api_errors:
    def __init__(self, context: grpc.ServicerContext):
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, psycopg.Error):
            mapped = errors.from_database(exc)
            if mapped is None:
                log.exception("database error", exc_info=exc)
                return False
            exc = mapped
        if isinstance(exc, errors.ApiError):
            self._context.abort_with_status(exc.to_status())
        return False
