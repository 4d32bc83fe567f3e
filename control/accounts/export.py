"""CSV export of accounts: RFC 4180, a header row, formula-injection-safe text cells, streamed in chunks."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from decimal import Decimal

import psycopg
from psycopg import sql

from control.accounts import company
from control.accounts.accounts import AccountQuery
from tollgate.v1 import account_pb2

# Text typed by users that a spreadsheet would run as a formula. Tab and CR too (OWASP).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

COLUMNS = (
    "account_number", "type", "first_name", "last_name", "company", "email", "phone", "notification_email",
    "address1", "address2", "city", "province", "zip", "country", "timezone", "account_type", "balance",
    "credit_limit", "rate_group", "non_cli_rate_group", "cli_pool", "max_concurrent_calls", "cps",
    "allow_local_calls", "allow_loss_less_routing", "allow_recording", "billing_day", "invoice_with_cdr",
    "tax_number", "reference", "status", "expire_time", "create_time", "delete_time",
)
_MONEY = {"balance", "credit_limit"}
_ROWS_PER_CHUNK = 500
_SOURCE = {"rate_group": "rate_group_id", "non_cli_rate_group": "non_cli_rate_group_id",
           "expire_time": "expire_at", "create_time": "created_at", "delete_time": "deleted_at"}


def neutralise(cell: str) -> str:
    """Prefix a quote so spreadsheets show the text instead of evaluating it."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def money(micros: int, decimals: int) -> str:
    """Micros as a decimal amount with the company's digits (display only; stored values stay exact)."""
    return str((Decimal(micros) / 1_000_000).quantize(Decimal(1).scaleb(-decimals)))


def _cell(column: str, value, decimals: int) -> str:
    if value is None:
        return ""
    if column in _MONEY:
        return money(value, decimals)  # numbers we format ourselves, never a formula
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return neutralise(str(value))


def _line(cells: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


def header() -> str:
    return _line(COLUMNS)


def rows(accounts: Iterable[dict], decimals: int) -> Iterator[str]:
    for row in accounts:
        yield _line(_cell(c, row[_SOURCE.get(c, c)], decimals) for c in COLUMNS)


def csv_chunks(conn: psycopg.Connection, query: AccountQuery) -> Iterator[account_pb2.CsvChunk]:
    """The header, then the query's accounts in chunks, with the company's decimals; in the caller's transaction.
    A server-side cursor: a million accounts stream without being held in memory."""
    decimals = company.load(conn)["decimals"]
    yield account_pb2.CsvChunk(data=header().encode())
    with conn.cursor(name="account_export") as cursor:
        cursor.execute(sql.SQL("SELECT a.* FROM accounts a WHERE {} ORDER BY a.id").format(query.where), query.params)
        while batch := cursor.fetchmany(_ROWS_PER_CHUNK):
            yield account_pb2.CsvChunk(data="".join(rows(batch, decimals)).encode())
