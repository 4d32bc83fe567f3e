"""Authentication: bearer tokens to principals, and passwords (Argon2, with bounded concurrency).

Three kinds of bearer token:
- break-glass admin tokens, listed in control.toml (`admin_tokens`): the admin role, named "break-glass";
- operator tokens (`tgo_…`, control/access/operators.py): the operator's role, until they expire or are revoked;
- account sessions (`tgs_…`, from Login): one account's own data, for `token_ttl_seconds`.
Issued tokens are stored only as SHA-256, so a database leak does not leak sessions. The token check looks
at the account's (or operator's) state on every call, so a deleted or disabled one stops at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from datetime import UTC, datetime, timedelta

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from control.access.principals import BREAK_GLASS, Principal, account, operator
from control.api import calls, errors

SESSION_TOKEN_PREFIX = "tgs_"
OPERATOR_TOKEN_PREFIX = "tgo_"
MAX_TOKEN_LENGTH = 512
MAX_PASSWORD_LENGTH = 1024
_WAIT_SECONDS = 5.0  # the longest a password check waits for its turn before the caller is told to retry


# ---------------------------------------------------------------------------------------------- passwords


class PasswordGate:
    """Argon2 hashing and checking, at most `concurrent` at once and `waiting` in line; more are refused.

    Each check takes about 0.1 s of a core and 64 MiB: unbounded, four login floods took both cores and made
    every other RPC wait. An unknown login is checked against a dummy hash, so that it costs the same work
    and time as a known one (no login oracle).
    """

    def __init__(self, concurrent: int = 1, waiting: int = 4):
        self._hasher = PasswordHasher()
        self._turns = threading.BoundedSemaphore(max(1, concurrent))
        self._line = threading.BoundedSemaphore(max(1, concurrent) + max(0, waiting))
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def _run(self, work, *args):
        if not self._line.acquire(blocking=False):
            raise errors.resource_exhausted("too many password checks in progress; retry shortly", retry_after=1.0)
        try:
            remaining = calls.current().time_remaining() if calls.current() else None
            wait = _WAIT_SECONDS if remaining is None else max(0.0, min(_WAIT_SECONDS, remaining))
            if not self._turns.acquire(timeout=wait):
                raise errors.resource_exhausted("password checks are busy; retry shortly", retry_after=1.0)
            try:
                return work(*args)
            finally:
                self._turns.release()
        finally:
            self._line.release()

    def hash(self, password: str) -> str:
        return self._run(self._hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; a missing hash is checked against the dummy and never matches."""
        return self._run(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


_default_gate: PasswordGate | None = None
_default_lock = threading.Lock()


def passwords() -> PasswordGate:
    """The gate of the server serving this call; outside a call (scripts, tests), one shared by the process."""
    call = calls.current()
    if call is not None:
        return call.server.passwords
    global _default_gate
    with _default_lock:
        if _default_gate is None:
            _default_gate = PasswordGate()
        return _default_gate


def hash_password(password: str) -> str:
    return passwords().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    return passwords().verify(password_hash, password)


# ---------------------------------------------------------------------------------------------- tokens


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token(prefix: str) -> tuple[str, bytes]:
    # A fixed prefix: a token never starts with "-" (which a command line would take for an option), a leaked
    # one is recognisable in logs and secret scanners, and the check knows which table to look in.
    token = prefix + secrets.token_urlsafe(32)
    return token, token_digest(token)


def issue_session(conn: psycopg.Connection, account_id: int, ttl_seconds: int) -> tuple[str, datetime]:
    token, digest = new_token(SESSION_TOKEN_PREFIX)
    expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    conn.execute("INSERT INTO api_tokens (token_sha256, account_id, expires_at) VALUES (%s, %s, %s)",
                 (digest, account_id, expires))
    return token, expires


def revoke_sessions(conn: psycopg.Connection, account_id: int, keep: bytes | None = None) -> int:
    """End the account's sessions (but `keep`); the number ended."""
    cursor = conn.execute("DELETE FROM api_tokens WHERE account_id = %s AND token_sha256 IS DISTINCT FROM %s",
                          (account_id, keep))
    return cursor.rowcount


_ACCOUNT_TOKEN = (
    "SELECT a.id, a.account_number FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
    " WHERE t.token_sha256 = %s AND t.expires_at > now() AND a.deleted_at IS NULL"
    " AND a.status = 'ACTIVE' AND (a.expire_at IS NULL OR a.expire_at > now())"
)
_OPERATOR_TOKEN = (
    "SELECT o.name, o.role FROM operator_tokens t JOIN operators o ON o.id = t.operator_id"
    " WHERE t.token_sha256 = %s AND t.expires_at > now() AND t.revoked_at IS NULL AND o.deleted_at IS NULL"
)


class TokenAuthority:
    def __init__(self, database, admin_tokens: tuple[str, ...]):
        self._db = database
        self._admin_tokens = tuple(t.encode() for t in admin_tokens)

    def principal_for(self, metadata: tuple) -> Principal:
        token = _bearer_token(metadata)
        encoded = token.encode()
        # Compare with every static token, whichever matches: the time taken does not say which is close.
        if any([hmac.compare_digest(encoded, admin) for admin in self._admin_tokens]):
            return operator(BREAK_GLASS, "admin")
        digest = token_digest(token)
        query = _OPERATOR_TOKEN if token.startswith(OPERATOR_TOKEN_PREFIX) else _ACCOUNT_TOKEN
        with self._db.connection() as conn:
            row = conn.execute(query, (digest,)).fetchone()
        if row is None:
            raise errors.unauthenticated("invalid or expired token")
        if token.startswith(OPERATOR_TOKEN_PREFIX):
            return operator(row["name"], row["role"], digest)
        return account(row["account_number"], row["id"], digest)


def _bearer_token(metadata: tuple) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token and len(token) <= MAX_TOKEN_LENGTH and token.isprintable():
                return token
            break
    raise errors.unauthenticated('missing "authorization: Bearer <token>" metadata')
