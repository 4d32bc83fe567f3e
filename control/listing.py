"""The account filter shared by ListAccounts and ExportAccountsCsv, and opaque page tokens.

Filter language (AIP-160 subset): terms joined by AND, each `field OP value`, OP one of
= != < <= > >= and ':' (contains, case-insensitive). Values are bare words or "double quoted".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from control import paging
from control.auth import Principal
from control.errors import invalid

_TERM = re.compile(r'\s*([a-z_]+)\s*(<=|>=|!=|=|<|>|:)\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*')
_AND = re.compile(r"AND\b", re.IGNORECASE)
_COMPARE = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class _Column:
    expression: str  # SQL over the accounts table, aliased a
    kind: str  # text | enum | int | time
    choices: tuple[str, ...] = ()


_FIELDS = {
    "account_number": _Column("a.account_number", "text"),
    "name": _Column("(a.first_name || ' ' || a.last_name)", "text"),
    "company": _Column("a.company", "text"),
    "email": _Column("a.email", "text"),
    "type": _Column("a.type", "enum", ("CUSTOMER", "PROVIDER")),
    "account_type": _Column("a.account_type", "enum", ("PREPAID", "POSTPAID")),
    "status": _Column("a.status", "enum", ("ACTIVE", "INACTIVE")),
    "rate_group": _Column("a.rate_group_id", "text"),
    "balance": _Column("a.balance", "int"),
    "create_time": _Column("a.created_at", "time"),
}


def _unquote(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _value(name: str, column: _Column, raw: str):
    value = _unquote(raw)
    if name == "rate_group":
        return value.removeprefix("rateGroups/")
    if column.kind == "enum":
        if value.upper() not in column.choices:
            raise invalid("filter", f"{name} must be one of {', '.join(column.choices)}")
        return value.upper()
    if column.kind == "int":
        try:
            return int(value)
        except ValueError:
            raise invalid("filter", f"{name} takes an integer (micros), not {value!r}") from None
    if column.kind == "time":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise invalid("filter", f"{name} takes an RFC 3339 time, not {value!r}") from None
    return value


def _term(name: str, op: str, raw: str) -> tuple[sql.Composable, object]:
    column = _FIELDS.get(name)
    if column is None:
        raise invalid("filter", f"unknown field {name!r}; known: {', '.join(_FIELDS)}")
    value = _value(name, column, raw)
    expression = sql.SQL(column.expression)
    if op == ":":
        if column.kind != "text":
            raise invalid("filter", f"':' (contains) works on text fields, not {name}")
        escaped = re.sub(r"([\\%_])", r"\\\1", value)
        return sql.SQL("{} ILIKE %s").format(expression), f"%{escaped}%"
    if column.kind in ("text", "enum") and op not in ("=", "!="):
        raise invalid("filter", f"{name} supports =, != and :")
    if column.kind == "text":
        expression = sql.SQL("lower({})").format(expression)
        value = value.lower()
    return sql.SQL("{} {} %s").format(expression, sql.SQL(_COMPARE[op])), value


def parse_filter(text: str) -> list[tuple[sql.Composable, object]]:
    terms, pos, text = [], 0, text.strip()
    while pos < len(text):
        match = _TERM.match(text, pos)
        if not match:
            raise invalid("filter", f"expected `field OP value` at character {pos + 1}")
        terms.append(_term(*match.groups()))
        pos = match.end()
        if pos < len(text):
            joiner = _AND.match(text, pos)
            if not joiner:
                raise invalid("filter", f"expected AND at character {pos + 1}")
            pos = joiner.end()
            if pos >= len(text):
                raise invalid("filter", "a term must follow AND")
    return terms


@dataclass(frozen=True)
class AccountQuery:
    """WHERE clause and parameters for one caller's filter."""

    where: sql.Composable
    params: list
    fingerprint: str  # ties a page token to the query that made it

    @classmethod
    def build(cls, principal: Principal, filter_text: str, show_deleted: bool) -> AccountQuery:
        terms = parse_filter(filter_text)
        clauses = [t[0] for t in terms]
        params = [t[1] for t in terms]
        if not show_deleted:
            clauses.append(sql.SQL("a.deleted_at IS NULL"))
        if not principal.is_admin:
            clauses.append(sql.SQL("a.id = %s"))
            params.append(principal.account_id)
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
        return cls(where, params, paging.fingerprint("accounts", filter_text, show_deleted, str(principal)))
