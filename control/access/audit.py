"""The audit log (SPEC §11): every change made through the API, in the change's own transaction.

An event says when, who (the principal of the call, "operator:alice" or "account:T123"; "system:ledger" for
the service's own work), which RPC, which resource, the call's request id and client address, and the
fields changed as {field: {"old": …, "new": …}}. Secrets (password hashes, HA1 digests, PINs, tokens) are
never written, only that they changed ("***"). Because the event is inserted in the transaction that makes
the change, a change that rolls back leaves no event, and a committed change always has one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal

import psycopg
from google.protobuf import struct_pb2
from psycopg.types.json import Jsonb

from control.access.principals import system
from control.api import calls, paging
from control.api.fields import timestamp
from control.api.listing import Column, parse_filter
from tollgate.v1 import audit_pb2

NAME_PREFIX = "auditEvents/"
MASK = "***"
SECRET_COLUMNS = frozenset({"password_hash", "ha1", "ha1_sha256", "pin", "token_sha256", "token", "password"})
_NOT_CHANGES = frozenset({"updated_at", "created_at", "id"})

FIELDS = {
    "principal": Column("e.principal", "text"),
    "role": Column("e.role", "text"),
    "rpc": Column("e.rpc", "text"),
    "resource": Column("e.resource", "text"),
    "request_id": Column("e.request_id", "text"),
    "source": Column("e.source", "text"),
    "create_time": Column("e.created_at", "time"),
}


def _plain(value):
    """A database or API value as JSON."""
    if isinstance(value, Jsonb):
        value = value.obj
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, bytes | memoryview):
        return MASK
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network | ipaddress.IPv4Address |
                  ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def diff(old: Mapping | None, new: Mapping | None, names: Mapping[str, str] | None = None) -> dict:
    """{field: {"old", "new"}} of the columns that differ; `names` maps columns to API paths."""
    old, new, names = old or {}, new or {}, names or {}
    changes = {}
    for column in sorted((set(old) | set(new)) - _NOT_CHANGES):
        before, after = old.get(column), new.get(column)
        if _plain(before) == _plain(after):
            continue
        if column in SECRET_COLUMNS:
            before = MASK if before is not None else None
            after = MASK if after is not None else None
        changes[names.get(column, column)] = {"old": _plain(before), "new": _plain(after)}
    return changes


def record(conn: psycopg.Connection, resource: str, changes: Mapping, rpc: str | None = None) -> None:
    """One event for the current call, in `conn`'s transaction. Outside a call the service works on its own
    (the ledger's hourly invoicing): the principal is "system:ledger"."""
    call = calls.current()
    principal = call.principal if call is not None and call.principal is not None else system("ledger")
    conn.execute(
        "INSERT INTO audit_events (principal, role, rpc, resource, request_id, source, changes)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (principal.label, principal.role, rpc or (call.rpc if call else "ledger"), resource,
         call.request_id if call else "", call.source if call else "", Jsonb(_plain(dict(changes)))),
    )


# ---------------------------------------------------------------------------------------------- reading


def to_message(row: dict) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        name=f"{NAME_PREFIX}{row['id']}", create_time=timestamp(row["created_at"]), principal=row["principal"],
        role=row["role"], rpc=row["rpc"], resource=row["resource"], request_id=row["request_id"],
        source=row["source"], changes=_struct(row["changes"]))
    return event


def _struct(changes: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(changes)
    return message


def list_page(conn: psycopg.Connection, request: audit_pb2.ListAuditEventsRequest
              ) -> audit_pb2.ListAuditEventsResponse:
    """Newest first; the page token holds the id to continue below."""
    paging.page_size(request.page_size)  # a bad size is refused before the filter is read
    terms = parse_filter(request.filter, FIELDS)
    rows, token = paging.rows_by_id(conn, table="audit_events", alias="e", family="audit", filter_text=request.filter,
                                    page_token=request.page_token, requested_size=request.page_size,
                                    conditions=[t[0] for t in terms], params=[t[1] for t in terms], newest_first=True)
    return audit_pb2.ListAuditEventsResponse(audit_events=[to_message(r) for r in rows], next_page_token=token)

