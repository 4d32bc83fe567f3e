"""AIP-158 paging: page sizes and opaque page tokens bound to the request and the caller that got them.

A token is the position to continue after, sealed with Fernet (AES-CBC, then HMAC-SHA256) under a key the
service keeps in PostgreSQL (`server_secrets`, shared by every control service of the database): the
caller can neither read it (a provider's CDR position holds a customer's number) nor forge it, so
decoding trusts what it finds, and an odd or tampered token is INVALID_ARGUMENT before anything parses it.
Tokens expire after a day.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import psycopg
from cryptography.fernet import Fernet, InvalidToken
from psycopg import sql

from control.api import calls
from control.api.errors import invalid

TOKEN_TTL_SECONDS = 86_400
MAX_TOKEN_LENGTH = 2048
_SECRET_NAME = "page_tokens"


def page_size(requested: int, default: int = 50, maximum: int = 1000) -> int:
    if requested < 0:
        raise invalid("page_size", "must not be negative")
    return min(requested or default, maximum)


def load_key(conn: psycopg.Connection) -> bytes:
    """The database's page-token key, made on first use (a racing second service keeps the first one's)."""
    conn.execute("INSERT INTO server_secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                 (_SECRET_NAME, secrets.token_bytes(32)))
    return bytes(conn.execute("SELECT value FROM server_secrets WHERE name = %s", (_SECRET_NAME,)).fetchone()["value"])


class PageTokens:
    def __init__(self, key: bytes):
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, after, issued_for: str) -> str:
        payload = json.dumps({"after": after, "q": issued_for}, separators=(",", ":")).encode()
        return self._fernet.encrypt(payload).decode()

    def open(self, token: str, issued_for: str):
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise invalid("page_token", "is not a token this service issued")
        try:
            payload = json.loads(self._fernet.decrypt(token, ttl=TOKEN_TTL_SECONDS))
        except (InvalidToken, ValueError, TypeError):
            raise invalid("page_token", "is not a token this service issued, or it expired") from None
        if payload["q"] != issued_for:
            raise invalid("page_token", "was issued for another request")
        return payload["after"]


def fingerprint(*parts) -> str:
    """Ties a token to the filter/parent it was issued for, and to the caller; reusing it elsewhere is an
    error."""
    call = calls.current()
    who = call.principal.label if call is not None and call.principal is not None else ""
    return hashlib.sha256(json.dumps([who, *parts], default=str).encode()).hexdigest()[:16]


def _tokens() -> PageTokens:
    call = calls.current()
    if call is None:
        raise RuntimeError("page tokens exist only inside an RPC")
    return call.server.page_tokens


def encode_token(after, issued_for: str) -> str:
    return _tokens().seal(after, issued_for)


def decode_token(token: str, issued_for: str):
    """The key to continue after (as it was sealed), or None for the first page."""
    if not token:
        return None
    return _tokens().open(token, issued_for)


def rows_by_id(conn: psycopg.Connection, *, table: str, alias: str, family: str, filter_text: str,
               page_token: str, requested_size: int, conditions: list, params: list,
               newest_first: bool = False) -> tuple[list, str]:
    """One page of `table`'s rows in id order with `conditions` ANDed (the caller's parsed filter and scope):
    keyset paging, the token holding the last id returned, sealed and bound to `family` and the filter text.
    (the rows, the next page's token or "")."""
    size = page_size(requested_size)
    issued_for = fingerprint(family, filter_text)
    after = decode_token(page_token, issued_for)
    conditions, params = list(conditions), list(params)
    column = sql.SQL("{}.id").format(sql.Identifier(alias))
    if after is not None:
        conditions.append(sql.SQL("{} {} %s").format(column, sql.SQL("<" if newest_first else ">")))
        params.append(after)
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
    query = sql.SQL("SELECT {alias}.* FROM {table} {alias} WHERE {where} ORDER BY {column} {order} LIMIT %s").format(
        alias=sql.Identifier(alias), table=sql.Identifier(table), where=where, column=column,
        order=sql.SQL("DESC" if newest_first else "ASC"))
    rows = conn.execute(query, [*params, size + 1]).fetchall()
    token = encode_token(rows[size - 1]["id"], issued_for) if len(rows) > size else ""
    return rows[:size], token
