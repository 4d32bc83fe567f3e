"""The company profile: a single row of defaults (currency, decimals, PIN length, ...)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

import psycopg
from psycopg import sql

from control import projection
from control.access import audit
from control.api import validation
from control.api.errors import clip, invalid
from control.documents import images
from tollgate.v1 import account_pb2, company_pb2

_INVOICE_PREFIX = "INVOICE_WITH_CDR_"
_FALLBACK_PREFIX = "CALLER_ID_FALLBACK_"
_SCALARS = ("name", "currency", "decimals", "pin_length", "max_call_seconds", "timezone", "sip_realm",
            "max_destination_digits", "min_destination_digits", "address", "tax_number", "email")
MUTABLE_PATHS = frozenset((*_SCALARS, "invoice_with_cdr", "tax_percent", "caller_id_fallback", "logo"))
MAX_ADDRESS_LINES = 8
MAX_DESTINATION_DIGITS = 18  # the deck's longest prefix; the fast path keys numbers as uint64


def load(conn: psycopg.Connection) -> dict:
    return conn.execute("SELECT * FROM company WHERE id = 1").fetchone()


def to_message(row: dict) -> company_pb2.Company:
    company = company_pb2.Company(**{key: row[key] for key in _SCALARS})
    company.invoice_with_cdr = account_pb2.InvoiceWithCdr.Value(_INVOICE_PREFIX + row["invoice_with_cdr"])
    company.tax_percent = percent_text(row["tax_percent"])
    company.caller_id_fallback = company_pb2.CallerIdFallback.Value(_FALLBACK_PREFIX + row["caller_id_fallback"])
    company.logo_sha256 = row["logo_sha256"] or ""
    return company


def percent_text(value: Decimal) -> str:
    """19.5000 -> "19.5": the stored numeric without its padding (and never in exponent notation)."""
    return format(value.normalize(), "f")


def _checked(path: str, value):
    field = f"company.{path}"
    checks = {
        "name": lambda v: validation.max_length(field, v.strip(), 255),
        "currency": lambda v: validation.currency(field, v),
        "decimals": lambda v: validation.in_range(field, v, 0, 6),
        "pin_length": lambda v: validation.in_range(field, v, 4, 12),
        "max_call_seconds": lambda v: validation.in_range(field, v, 1, 86_400),
        "timezone": lambda v: validation.timezone(field, v),
        "sip_realm": _realm,
        "invoice_with_cdr": _invoice_with_cdr,
        "tax_percent": _tax_percent,
        "max_destination_digits": lambda v: validation.in_range(field, v, 1, MAX_DESTINATION_DIGITS),
        "min_destination_digits": lambda v: validation.in_range(field, v, 1, MAX_DESTINATION_DIGITS),
        "caller_id_fallback": _caller_id_fallback,
        "address": _address,
        "tax_number": lambda v: validation.max_length(field, v.strip(), 64),
        "email": lambda v: validation.email(field, v.strip()) if v.strip() else "",
        "logo": lambda v: images.logo(field, v),
    }
    return checks[path](value)


def _address(value: str) -> str:
    lines = [line.strip() for line in value.strip().splitlines()]
    if len(lines) > MAX_ADDRESS_LINES:
        raise invalid("company.address", f"at most {MAX_ADDRESS_LINES} lines")
    return validation.max_length("company.address", "\n".join(lines), 500)


def _realm(value: str) -> str:
    if not value or len(value) > 253 or any(c.isspace() or c in ':"@' for c in value):
        raise invalid("company.sip_realm", "must be a non-empty realm without spaces, quotes, ':' or '@'")
    return value


def _invoice_with_cdr(value: int) -> str:
    if value == 0 or value not in account_pb2.InvoiceWithCdr.values():
        raise invalid("company.invoice_with_cdr", "must be NONE, PDF or CSV")
    return account_pb2.InvoiceWithCdr.Name(value).removeprefix(_INVOICE_PREFIX)


def _caller_id_fallback(value: int) -> str:
    if value == 0 or value not in company_pb2.CallerIdFallback.values():
        raise invalid("company.caller_id_fallback", "must be DEFAULT_CALLER_ID or ANONYMOUS")
    return company_pb2.CallerIdFallback.Name(value).removeprefix(_FALLBACK_PREFIX)


def _tax_percent(value: str) -> Decimal:
    """A decimal text, exact: more than 4 decimals is refused rather than rounded (the column's scale)."""
    try:
        percent = Decimal(value.strip() or "0")
    except InvalidOperation:
        raise invalid("company.tax_percent", f"not a decimal percent: {clip(value)}") from None
    if not percent.is_finite() or not 0 <= percent <= 100:
        raise invalid("company.tax_percent", "must be a percent from 0 to 100")
    if percent != percent.quantize(Decimal("0.0001"), rounding=ROUND_DOWN):
        raise invalid("company.tax_percent", "at most 4 decimal places")
    return percent


def update(conn: psycopg.Connection, company: company_pb2.Company, paths: list[str]) -> company_pb2.Company:
    unknown = [p for p in paths if p not in MUTABLE_PATHS]
    if unknown:
        raise invalid("update_mask", f"unknown company field {clip(unknown[0])}")
    changes = {path: _checked(path, getattr(company, path)) for path in paths}
    if "logo" in changes:  # stored by content; the company names the one in use
        changes["logo_sha256"] = images.store(conn, changes.pop("logo"))
    current = load(conn)
    shortest = changes.get("min_destination_digits", current["min_destination_digits"])
    if shortest > changes.get("max_destination_digits", current["max_destination_digits"]):
        raise invalid("company.min_destination_digits", "must not be above max_destination_digits")
    if changes:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
        )
        conn.execute(sql.SQL("UPDATE company SET {} WHERE id = 1").format(assignments), changes)
        projection.mark_dirty(conn, "company")
        audit.record(conn, "company", audit.diff(current, load(conn)))
    return to_message(load(conn))


def implied_paths(company: company_pb2.Company) -> list[str]:
    """AIP-134: without an update_mask, the populated fields are the ones to change."""
    return [path for path in sorted(MUTABLE_PATHS) if getattr(company, path)]
