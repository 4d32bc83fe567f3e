"""Operators (SPEC §11): named people or systems with a role, and their bearer tokens.

An operator is `operators/{id}` with a role (admin, config, billing, readonly). Its tokens (`tgo_…`) are
shown once, when made, and stored as SHA-256, each with an expiry; revoking one, or deleting the operator,
stops it at its next call. Ids are never reused, deleted operators included: the audit log names them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg

from control.access import audit, throttle
from control.access.auth import OPERATOR_TOKEN_PREFIX, new_token
from control.access.principals import ROLES
from control.api import paging
from control.api.errors import already_exists, clip, failed_precondition, invalid, not_found
from control.api.fields import timestamp
from tollgate.v1 import operator_pb2

NAME_PREFIX = "operators/"
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_ROLE_PREFIX = "OPERATOR_ROLE_"
MAX_DESCRIPTION = 255
MAX_TTL_SECONDS = 10 * 366 * 86_400  # ten years: a typo of 10**12 must not overflow a timestamp


def _role(value: int, field: str = "operator.role") -> str:
    name = operator_pb2.OperatorRole.Name(value) if value in operator_pb2.OperatorRole.values() else ""
    role = name.removeprefix(_ROLE_PREFIX).lower()
    if role not in ROLES:
        raise invalid(field, f"must be one of {', '.join(r.upper() for r in ROLES)}")
    return role


def _description(text: str, field: str) -> str:
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise invalid(field, f"must be at most {MAX_DESCRIPTION} characters")
    return text


def _ttl(seconds: int, default: int, field: str) -> int:
    if seconds < 0 or seconds > MAX_TTL_SECONDS:
        raise invalid(field, f"must be 0 (the default) to {MAX_TTL_SECONDS} seconds")
    return seconds or default


def parse_name(name: str, field: str = "name") -> str:
    ident = name.removeprefix(NAME_PREFIX)
    if not name.startswith(NAME_PREFIX) or not ID_PATTERN.fullmatch(ident):
        raise invalid(field, "must be a resource name like operators/{operator_id}")
    return ident


def to_message(row: dict) -> operator_pb2.Operator:
    message = operator_pb2.Operator(name=NAME_PREFIX + row["name"], description=row["description"],
                                    role=operator_pb2.OperatorRole.Value(_ROLE_PREFIX + row["role"].upper()),
                                    create_time=timestamp(row["created_at"]), update_time=timestamp(row["updated_at"]))
    if row["deleted_at"] is not None:
        message.delete_time.CopyFrom(timestamp(row["deleted_at"]))
    return message


def token_message(row: dict, operator_name: str, secret: str = "") -> operator_pb2.OperatorToken:
    message = operator_pb2.OperatorToken(
        name=f"{NAME_PREFIX}{operator_name}/tokens/{row['id']}", description=row["description"], token=secret,
        create_time=timestamp(row["created_at"]), expire_time=timestamp(row["expires_at"]))
    if row["revoked_at"] is not None:
        message.revoke_time.CopyFrom(timestamp(row["revoked_at"]))
    return message


def _fetch(conn: psycopg.Connection, name: str, field: str = "name", lock: bool = False, live: bool = False) -> dict:
    ident = parse_name(name, field)
    row = conn.execute("SELECT * FROM operators WHERE lower(name) = lower(%s)" + (" FOR UPDATE" if lock else ""),
                       (ident,)).fetchone()
    if row is None:
        raise not_found(f"operator {ident}")
    if live and row["deleted_at"] is not None:
        raise failed_precondition(f"operator {row['name']} is deleted")
    return row


# ---------------------------------------------------------------------------------------------- changes


def create(conn: psycopg.Connection, request: operator_pb2.CreateOperatorRequest,
           default_ttl: int) -> operator_pb2.CreateOperatorResponse:
    if not ID_PATTERN.fullmatch(request.operator_id):
        raise invalid("operator_id", "must be 1 to 63 of a-z 0-9 . _ - starting with a letter or digit")
    role = _role(request.operator.role)
    description = _description(request.operator.description, "operator.description")
    ttl = _ttl(request.token_ttl_seconds, default_ttl, "token_ttl_seconds")
    token_description = _description(request.token_description, "token_description")
    if conn.execute("SELECT 1 FROM operators WHERE lower(name) = lower(%s)", (request.operator_id,)).fetchone():
        raise already_exists("operator_id", f"operator {request.operator_id} exists or existed (ids are never reused)")
    row = conn.execute("INSERT INTO operators (name, role, description) VALUES (%s, %s, %s) RETURNING *",
                       (request.operator_id, role, description)).fetchone()
    audit.record(conn, NAME_PREFIX + row["name"], audit.diff(None, row))
    token = _issue(conn, row, ttl, token_description)
    return operator_pb2.CreateOperatorResponse(operator=to_message(row), token=token)


def _issue(conn: psycopg.Connection, operator: dict, ttl: int, description: str) -> operator_pb2.OperatorToken:
    secret, digest = new_token(OPERATOR_TOKEN_PREFIX)
    row = conn.execute(
        "INSERT INTO operator_tokens (token_sha256, operator_id, description, expires_at) VALUES (%s, %s, %s, %s)"
        " RETURNING *", (digest, operator["id"], description, datetime.now(UTC) + timedelta(seconds=ttl))).fetchone()
    message = token_message(row, operator["name"], secret)
    audit.record(conn, message.name, audit.diff(None, {"description": description, "expire_time": row["expires_at"],
                                                       "token": digest}))
    return message


def update(conn: psycopg.Connection, request: operator_pb2.UpdateOperatorRequest) -> operator_pb2.Operator:
    row = _fetch(conn, request.operator.name, "operator.name", lock=True, live=True)
    paths = list(request.update_mask.paths) or [p for p in ("role", "description") if _is_set(request.operator, p)]
    if not paths:
        raise invalid("update_mask", "nothing to update: set role or description")
    changes = {}
    for path in paths:
        if path == "role":
            changes["role"] = _role(request.operator.role)
        elif path == "description":
            changes["description"] = _description(request.operator.description, "operator.description")
        else:
            raise invalid("update_mask", f"unknown or immutable field {clip(path)}")
    updated = conn.execute("UPDATE operators SET role = %(role)s, description = %(description)s, updated_at = now()"
                           " WHERE id = %(id)s RETURNING *", {**row, **changes}).fetchone()
    audit.record(conn, NAME_PREFIX + row["name"], audit.diff(row, updated))
    return to_message(updated)


def _is_set(operator: operator_pb2.Operator, path: str) -> bool:
    return bool(getattr(operator, path))


def delete(conn: psycopg.Connection, name: str) -> operator_pb2.Operator:
    row = _fetch(conn, name, lock=True, live=True)
    deleted = conn.execute("UPDATE operators SET deleted_at = now(), updated_at = now() WHERE id = %s RETURNING *",
                           (row["id"],)).fetchone()
    revoked = conn.execute("UPDATE operator_tokens SET revoked_at = now() WHERE operator_id = %s"
                           " AND revoked_at IS NULL", (row["id"],)).rowcount
    audit.record(conn, NAME_PREFIX + row["name"], {**audit.diff(row, deleted),
                                                   "tokens_revoked": {"old": None, "new": revoked}})
    return to_message(deleted)


def create_token(conn: psycopg.Connection, request: operator_pb2.CreateOperatorTokenRequest,
                 default_ttl: int) -> operator_pb2.OperatorToken:
    operator = _fetch(conn, request.parent, "parent", lock=True, live=True)
    return _issue(conn, operator, _ttl(request.ttl_seconds, default_ttl, "ttl_seconds"),
                  _description(request.description, "description"))


def _token_name(name: str) -> tuple[str, int]:
    operator_name, sep, token_id = name.rpartition("/tokens/")
    if not sep or not token_id.isascii() or not token_id.isdigit() or len(token_id) > 18:
        raise invalid("name", "must be a resource name like operators/{operator_id}/tokens/{id}")
    return operator_name, int(token_id)


def revoke_token(conn: psycopg.Connection, name: str) -> operator_pb2.OperatorToken:
    operator_name, token_id = _token_name(name)
    operator = _fetch(conn, operator_name, "name")
    row = conn.execute("SELECT * FROM operator_tokens WHERE id = %s AND operator_id = %s FOR UPDATE",
                       (token_id, operator["id"])).fetchone()
    if row is None:
        raise not_found(f"token {name}")
    if row["revoked_at"] is None:
        revoked = conn.execute("UPDATE operator_tokens SET revoked_at = now() WHERE id = %s RETURNING *",
                               (token_id,)).fetchone()
        audit.record(conn, name, audit.diff(row, revoked))
        row = revoked
    return token_message(row, operator["name"])


# ---------------------------------------------------------------------------------------------- reading


def get(conn: psycopg.Connection, name: str) -> operator_pb2.Operator:
    return to_message(_fetch(conn, name))


def list_page(conn: psycopg.Connection, request: operator_pb2.ListOperatorsRequest
              ) -> operator_pb2.ListOperatorsResponse:
    size = paging.page_size(request.page_size, default=100)
    fingerprint = paging.fingerprint("operators", request.show_deleted)
    after = paging.decode_token(request.page_token, fingerprint) or 0
    rows = conn.execute("SELECT * FROM operators WHERE id > %s AND (%s OR deleted_at IS NULL) ORDER BY id LIMIT %s",
                        (after, request.show_deleted, size + 1)).fetchall()
    response = operator_pb2.ListOperatorsResponse(operators=[to_message(r) for r in rows[:size]])
    if len(rows) > size:
        response.next_page_token = paging.encode_token(rows[size - 1]["id"], fingerprint)
    return response


def list_tokens(conn: psycopg.Connection, request: operator_pb2.ListOperatorTokensRequest
                ) -> operator_pb2.ListOperatorTokensResponse:
    operator = _fetch(conn, request.parent, "parent")
    size = paging.page_size(request.page_size, default=100)
    fingerprint = paging.fingerprint("operator_tokens", operator["id"])
    after = paging.decode_token(request.page_token, fingerprint) or 0
    rows = conn.execute("SELECT * FROM operator_tokens WHERE operator_id = %s AND id > %s ORDER BY id LIMIT %s",
                        (operator["id"], after, size + 1)).fetchall()
    response = operator_pb2.ListOperatorTokensResponse(tokens=[token_message(r, operator["name"]) for r in rows[:size]])
    if len(rows) > size:
        response.next_page_token = paging.encode_token(rows[size - 1]["id"], fingerprint)
    return response


# ---------------------------------------------------------------------------------------------- login locks


def lock_message(row: dict) -> operator_pb2.LoginLock:
    lock = operator_pb2.LoginLock(kind=row["kind"], key=row["key"], failures=row["failures"],
                                  last_failure_time=timestamp(row["last_failure_at"]))
    if row["locked_until"] is not None:
        lock.locked_until.CopyFrom(timestamp(row["locked_until"]))
    return lock


def list_locks(conn: psycopg.Connection, request: operator_pb2.ListLoginLocksRequest
               ) -> operator_pb2.ListLoginLocksResponse:
    """Most recent failure first; the page token holds the (time, kind, key) to continue after."""
    size = paging.page_size(request.page_size, default=100)
    fingerprint = paging.fingerprint("login_locks", request.locked_only)
    after = paging.decode_token(request.page_token, fingerprint)
    rows = conn.execute(
        "SELECT * FROM login_throttle WHERE (NOT %(locked)s OR locked_until > now())"
        " AND (%(after)s::text IS NULL OR (last_failure_at, kind, key) < (%(t)s::timestamptz, %(k)s, %(key)s))"
        " ORDER BY last_failure_at DESC, kind DESC, key DESC LIMIT %(n)s",
        {"locked": request.locked_only, "after": after and after[0], "t": after and after[0],
         "k": after and after[1], "key": after and after[2], "n": size + 1}).fetchall()
    response = operator_pb2.ListLoginLocksResponse(locks=[lock_message(r) for r in rows[:size]])
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = paging.encode_token(
            [last["last_failure_at"].isoformat(), last["kind"], last["key"]], fingerprint)
    return response


def clear_lock(conn: psycopg.Connection, limiter: throttle.LoginThrottle, kind: str, key: str) -> None:
    row = throttle.clear(conn, kind, key)
    if row is not None:
        limiter.forget(kind, row["key"])
    if row is None:
        raise not_found(f"failed logins of {kind} {clip(key)}")
    audit.record(conn, f"loginLocks/{kind}/{row['key']}", audit.diff(
        {"failures": row["failures"], "locked_until": row["locked_until"]}, {"failures": 0, "locked_until": None}))
