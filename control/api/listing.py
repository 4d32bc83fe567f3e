"""The filter language shared by the list and export RPCs (accounts, CDRs, invoices, the audit log).

Filter language (AIP-160 subset): terms joined by AND, each `field OP value`, OP one of
= != < <= > >= and ':' (contains, case-insensitive). Values are bare words or "double quoted"; money in
currency units (`balance > 1.50`), exact to 6 decimals, whatever the company's display decimals.
Each caller describes its fields with a table of Column and passes it to parse_filter.

A filter is at most MAX_FILTER_LENGTH characters and MAX_TERMS terms, checked before anything parses it: a
60,000-term filter used to hold a core for 13 s, and 70,000 terms overflowed PostgreSQL's 65,535 parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation

from psycopg import sql

from control.api.errors import clip, invalid, permission_denied

MAX_FILTER_LENGTH = 4096
MAX_TERMS = 50

# The operator is read greedily and checked afterwards: `type == PROVIDER` must be refused for its operator,
# not read as `type = "=PROVIDER"` and refused for a value the caller never typed.
_TERM = re.compile(r'\s*([a-z_]+)\s*([=!<>:~]+)\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*')
_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", ":")
_AND = re.compile(r"AND\b", re.IGNORECASE)
_COMPARE = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# An account number, spelled in any case, as the stored spelling: account numbers are unique case-insensitively
# (accounts_number_key), so this is at most one row, and the caller's column keeps a plain, indexable equality.
# A number no account has is compared as given.
_STORED_NUMBER = (
    "(SELECT coalesce(n.account_number, p.v) FROM (SELECT %s::text AS v) p"
    " LEFT JOIN accounts n ON lower(n.account_number) = lower(p.v))"
)

Term = tuple[sql.Composable, object]  # a WHERE condition and its one parameter


@dataclass(frozen=True)
class Column:
    """A filterable field: its SQL expression and how its values compare."""

    expression: str  # SQL over the listed table's alias
    # text | enum | int | time | money (stored in micros, written in currency units: "1.50") | number (an
    # account number: = != compare it in any case, and :)
    kind: str
    choices: tuple[str, ...] = ()
    prefix: str = ""  # the resource-name prefix a value may carry ("rateGroups/"), dropped


# Wide enough that scaling any amount that fits int64 micros is exact; Inexact traps the rest.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])


def _micros(name: str, value: str) -> int:
    """A filter's amount in currency units ("1.50") as the micros the column stores. People read and type money
    in currency units everywhere else (CLI, decks, exports): `balance > 1` meaning one micro was a trap."""
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise invalid("filter", f"{name} takes an amount in currency units like 1.50, not {clip(value)}")
    try:
        micros = amount.scaleb(6, context=_EXACT)
    except (Inexact, InvalidOperation):
        micros = None
    if micros is None or micros.adjusted() > 18 or not -(2**63) <= micros < 2**63:
        raise invalid("filter", f"{name}: amount out of range: {clip(value)}")
    if micros != micros.to_integral_value():
        raise invalid("filter", f"{name} takes at most 6 decimals (micros), not {clip(value)}")
    return int(micros)
def _unquote(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def _value(name: str, column: Column, raw: str):
    value = _unquote(raw).removeprefix(column.prefix)
    if column.kind == "enum":
        if value.upper() not in column.choices:
            raise invalid("filter", f"{name} must be one of {', '.join(column.choices)}")
        return value.upper()
    if column.kind == "money":
        return _micros(name, value)
    if column.kind == "int":
        try:
            number = int(value)
        except ValueError:
            raise invalid("filter", f"{name} takes an integer, not {clip(value)}") from None
        if not -(2**63) <= number < 2**63:
            raise invalid("filter", f"{name} takes a 64-bit integer, not {clip(value)}")
        return number
    if column.kind == "time":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise invalid("filter", f"{name} takes an RFC 3339 time, not {clip(value)}") from None
    return value


def _term(fields: Mapping[str, Column], name: str, op: str, raw: str) -> Term:
    if op not in _OPERATORS:
        raise invalid("filter", f"unknown operator {clip(op)} in `{name} {op} …`; use one of {' '.join(_OPERATORS)}")
    column = fields.get(name)
    if column is None:
        raise invalid("filter", f"unknown field {clip(name)}; known: {', '.join(fields)}")
    value = _value(name, column, raw)
    expression = sql.SQL(column.expression)
    if op == ":":
        if column.kind not in ("text", "number"):
            raise invalid("filter", f"':' (contains) works on text fields, not {name}")
        escaped = re.sub(r"([\\%_])", r"\\\1", value)
        return sql.SQL("{} ILIKE %s").format(expression), f"%{escaped}%"
    if column.kind in ("text", "enum", "number") and op not in ("=", "!="):
        raise invalid("filter", f"{name} supports =, != and :")
    if column.kind == "number":
        return sql.SQL("{} {} {}").format(expression, sql.SQL(_COMPARE[op]), sql.SQL(_STORED_NUMBER)), value
    if column.kind == "text":
        expression = sql.SQL("lower({})").format(expression)
        value = value.lower()
    return sql.SQL("{} {} %s").format(expression, sql.SQL(_COMPARE[op])), value


def _split(text: str) -> list[tuple[str, str, str]]:
    """The (field, operator, raw value) of each term; a filter that does not read as terms is INVALID_ARGUMENT."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid("filter", f"is longer than {MAX_FILTER_LENGTH} characters")
    parts: list[tuple[str, str, str]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        if len(parts) == MAX_TERMS:
            raise invalid("filter", f"has more than {MAX_TERMS} terms")
        match = _TERM.match(text, pos)
        if not match:
            raise invalid("filter", f"expected `field OP value` at character {pos + 1}")
        parts.append(match.groups())
        pos = match.end()
        if pos < len(text):
            joiner = _AND.match(text, pos)
            if not joiner:
                raise invalid("filter", f"expected AND at character {pos + 1}")
            pos = joiner.end()
            if pos >= len(text):
                raise invalid("filter", "a term must follow AND")
    return parts


def parse_filter(text: str, fields: Mapping[str, Column]) -> list[Term]:
    """The terms of `text` over `fields`; a bad filter is INVALID_ARGUMENT on `filter`."""
    return [_term(fields, *parts) for parts in _split(text)]


def require_own_number(text: str, fields: Mapping[str, Column], names: tuple[str, ...], number: str) -> None:
    """An account token's filter may ask `account = N` (or `provider = N`) only for its own number: another
    number is PERMISSION_DENIED rather than an empty list, which read as "that account has no calls". The
    answer is the same whether N exists, so it tells a token nothing about other accounts."""
    for name, op, raw in _split(text):
        if name in names and op == "=":
            value = _unquote(raw).removeprefix(fields[name].prefix)
            if value.lower() != number.lower():
                raise permission_denied(f"an account token sees only its own account's data; the filter asks "
                                        f"for {name} {clip(value)}")
