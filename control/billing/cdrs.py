"""CDRs for operators (SPEC §9, §11): ListCdrs and ExportCdrsCsv over the `cdrs` table the ledger writes.

The filter language is control/api/listing.py's, over the CDR fields below. Rows come in order of setup_time,
then account number and call id: the table's key, so the order is total and a page token can continue after
any row. An admin sees every CDR. An account token sees the calls it placed (the customer) or carried (the
provider), and of each only its own side: the other side's price, tariff and route read as empty (its money as
NULL: unset in messages, an empty CSV cell, matched by no comparison), in rows, exports and filters alike, so
that a carrier cannot learn the operator's retail price (nor its margin) and a customer cannot learn which
carrier it was routed over at what cost. A provider's view of a call it
carried is its leg only: not the customer's account number, nor the caller id as received or the destination
as dialled (the presented caller id and the destination sent are what reached the carrier anyway).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg
from psycopg import sql

from control.access.principals import Principal
from control.accounts import company
from control.accounts.accounts import NAME_PREFIX
from control.accounts.export import money, neutralise
from control.api import paging
from control.api.fields import timestamp
from control.api.listing import Column, parse_filter, require_own_number
from tollgate.v1 import account_pb2, cdr_pb2

_EXPORT_ROWS_PER_CHUNK = 500

FIELDS = {
    "account": Column("c.account_number", "number", prefix=NAME_PREFIX),
    "provider": Column("c.provider", "number", prefix=NAME_PREFIX),
    "call_id": Column("c.call_id", "text"),
    "direction": Column("c.direction", "text"),
    "caller_id_received": Column("c.caller_id_received", "text"),
    "caller_id_presented": Column("c.caller_id_presented", "text"),
    "destination_dialled": Column("c.destination_dialled", "text"),
    "destination_sent": Column("c.destination_sent", "text"),
    "rate_group": Column("c.rate_group", "text", prefix="rateGroups/"),
    "prefix": Column("c.prefix", "text"),
    "trunk": Column("c.trunk", "text", prefix="trunks/"),
    "gateway": Column("c.gateway", "text"),
    "end_reason": Column("c.end_reason", "text"),
    "sip_reason": Column("c.sip_reason", "text"),
    "stage": Column("c.stage", "text"),
    "sip_code": Column("c.sip_code", "int"),
    "billable_seconds": Column("c.billable_seconds", "int"),
    "rate_per_min": Column("c.rate_per_min", "money"),
    "customer_cost": Column("c.customer_cost", "money"),
    "provider_cost": Column("c.provider_cost", "money"),
    "setup_time": Column("c.setup_time", "time"),
    "answer_time": Column("c.answer_time", "time"),
    "end_time": Column("c.end_time", "time"),
}

# Every column of the table, in the order of the CSV (account_number and provider as bare numbers there).
_COLUMNS = (
    "call_id", "account_number", "direction", "caller_id_received", "caller_id_presented", "destination_dialled",
    "destination_sent", "rate_group", "prefix", "rate_per_min", "trunk", "provider", "gateway", "setup_time",
    "answer_time", "end_time", "billable_seconds", "sip_code", "sip_reason", "stage", "customer_cost",
    "provider_cost", "recorded", "end_reason", "recorded_at",
)
# What an account token sees only on its own side of a call, and what it reads instead. Money reads as NULL, not
# 0: a hidden cost shown as 0.00 looked like a free call.
_CUSTOMER_SIDE = {"customer_cost": "NULL", "rate_group": "''", "prefix": "''", "rate_per_min": "NULL",
                  "account_number": "''", "caller_id_received": "''", "destination_dialled": "''"}
_PROVIDER_SIDE = {"provider_cost": "NULL", "provider": "''", "trunk": "''", "gateway": "''"}
_MONEY = {"customer_cost", "provider_cost"}
# Copied to the message as they are.
_PLAIN = (
    "call_id", "direction", "caller_id_received", "caller_id_presented", "destination_dialled", "destination_sent",
    "prefix", "gateway", "billable_seconds", "sip_code", "sip_reason", "stage", "recorded", "end_reason",
)
# Copied when the caller may see them; NULL (another side's money) leaves the optional field unset.
_HIDEABLE = ("rate_per_min", "customer_cost", "provider_cost")
_TIMES = {"setup_time": "setup_time", "answer_time": "answer_time", "end_time": "end_time",
          "recorded_at": "create_time"}  # column -> message field
_CSV_NAMES = {"recorded_at": "create_time"}  # the API's names where the table's differ
# setup_time is nullable in the table; as -infinity a NULL still sorts (first) and compares in a page token.
# sort_account is the calling account whoever looks: the order stays total where account_number reads ''.
_ORDER_KEY = sql.SQL("coalesce(c.setup_time, '-infinity'), c.sort_account, c.call_id")
# The operators' view: every column as stored (the planner flattens it, so cdrs' indexes serve the ORDER BY).
_EVERYTHING = sql.SQL("(SELECT c.*, c.account_number AS sort_account FROM cdrs c) c")
_AFTER = sql.SQL("({}) > (coalesce(%s::timestamptz, '-infinity'), %s, %s)").format(_ORDER_KEY)


# ---------------------------------------------------------------------------------------------- query


def _visible_to(number: str) -> sql.Composable:
    """The CDRs of one account, its side of each, as a relation aliased c (the planner flattens it, so the
    (account_number, …) and (provider, …) indexes still serve the WHERE)."""
    me = sql.Literal(number)

    def column(name: str) -> sql.Composable:
        for side, owner in ((_CUSTOMER_SIDE, "account_number"), (_PROVIDER_SIDE, "provider")):
            if name in side:
                return sql.SQL("CASE WHEN c.{} = {} THEN c.{} ELSE {} END AS {}").format(
                    sql.Identifier(owner), me, sql.Identifier(name), sql.SQL(side[name]), sql.Identifier(name))
        return sql.SQL("c.{}").format(sql.Identifier(name))

    columns = [column(name) for name in _COLUMNS] + [sql.SQL("c.account_number AS sort_account")]
    return sql.SQL("(SELECT {} FROM cdrs c WHERE c.account_number = {} OR c.provider = {}) c").format(
        sql.SQL(", ").join(columns), me, me)


@dataclass(frozen=True)
class CdrQuery:
    """FROM and WHERE for one caller's filter."""

    source: sql.Composable  # the CDRs the caller may see, aliased c
    where: sql.Composable
    params: list
    fingerprint: str  # ties a page token to the query that made it

    @classmethod
    def build(cls, principal: Principal, filter_text: str) -> CdrQuery:
        terms = parse_filter(filter_text, FIELDS)
        if not principal.is_operator:
            require_own_number(filter_text, FIELDS, ("account", "provider"), principal.account_number)
        source = _EVERYTHING if principal.is_operator else _visible_to(principal.account_number)
        where = sql.SQL(" AND ").join(t[0] for t in terms) if terms else sql.SQL("true")
        return cls(source, where, [t[1] for t in terms], paging.fingerprint("cdrs", filter_text))

    def also(self, condition: sql.Composable, params: list) -> CdrQuery:
        """This query narrowed by one more condition over c (e.g. the CDRs of one invoice)."""
        return replace(self, where=sql.SQL("{} AND {}").format(self.where, condition), params=self.params + params)

    def select(self, after: list | None = None, limit: int | None = None) -> tuple[sql.Composable, list]:
        """The matching rows in order, those after `after` (a page token's position) and at most `limit`."""
        where, params = self.where, list(self.params)
        if after is not None:
            where = sql.SQL("{} AND {}").format(where, _AFTER)
            params += after
        query = sql.SQL("SELECT c.* FROM {} WHERE {} ORDER BY {}").format(self.source, where, _ORDER_KEY)
        if limit is not None:
            query = sql.SQL("{} LIMIT %s").format(query)
            params.append(limit)
        return query, params


def _position(row: dict) -> list:
    """Where a page ended, for its token (sealed: a provider cannot read the customer's number in it)."""
    setup = row["setup_time"]
    return [setup.isoformat() if setup else None, row["sort_account"], row["call_id"]]


# ---------------------------------------------------------------------------------------------- messages


def _name(collection: str, ident: str) -> str:
    return f"{collection}{ident}" if ident else ""


def to_message(row: dict) -> cdr_pb2.Cdr:
    cdr = cdr_pb2.Cdr(
        account=_name(NAME_PREFIX, row["account_number"]),
        provider=_name(NAME_PREFIX, row["provider"]),
        trunk=_name("trunks/", row["trunk"]),
        rate_group=_name("rateGroups/", row["rate_group"]),
        **{key: row[key] for key in _PLAIN},
        **{key: row[key] for key in _HIDEABLE if row[key] is not None},
    )
    for column, field in _TIMES.items():
        if row[column] is not None:  # an unanswered call has no answer_time
            getattr(cdr, field).CopyFrom(timestamp(row[column]))
    return cdr


# ---------------------------------------------------------------------------------------------- CSV


def csv_header() -> str:
    return _lines([[_CSV_NAMES.get(c, c) for c in _COLUMNS]])


def _cell(column: str, value, decimals: int) -> str:
    if value is None:
        return ""
    if column in _MONEY:
        return money(value, decimals)  # numbers we format ourselves, never a formula
    if column == "rate_per_min":
        # A per-minute rate is a price, not an amount: the company's 2 decimals would show 0.0042 as 0.00.
        return money(value, 6)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    # Everything else the caller's equipment or the operator typed (call id, caller id, numbers, ids).
    return neutralise(str(value))


def csv_rows(rows: Iterable[dict], decimals: int) -> str:
    return _lines([_cell(c, row[c], decimals) for c in _COLUMNS] for row in rows)


def csv_chunks(conn: psycopg.Connection, query: CdrQuery) -> Iterator[account_pb2.CsvChunk]:
    """The header, then the query's rows in chunks, with the company's decimals; inside the caller's transaction."""
    decimals = company.load(conn)["decimals"]
    yield account_pb2.CsvChunk(data=csv_header().encode())
    # A server-side cursor: millions of CDRs stream without being held in memory.
    with conn.cursor(name="cdr_export") as cursor:
        cursor.execute(*query.select())
        while batch := cursor.fetchmany(_EXPORT_ROWS_PER_CHUNK):
            yield account_pb2.CsvChunk(data=csv_rows(batch, decimals).encode())


def _lines(records: Iterable[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(records)
    return buffer.getvalue()


def list_page(conn: psycopg.Connection, principal: Principal, request: cdr_pb2.ListCdrsRequest
              ) -> cdr_pb2.ListCdrsResponse:
    """One page, in order. One row more than the page says whether there is a next one. No total_size:
    counting a table of millions of calls on every page would cost more than the page itself."""
    size = paging.page_size(request.page_size)
    query = CdrQuery.build(principal, request.filter)
    after = paging.decode_token(request.page_token, query.fingerprint)
    rows = conn.execute(*query.select(after, size + 1)).fetchall()
    response = cdr_pb2.ListCdrsResponse(cdrs=[to_message(row) for row in rows[:size]])
    if len(rows) > size:
        response.next_page_token = paging.encode_token(_position(rows[size - 1]), query.fingerprint)
    return response
