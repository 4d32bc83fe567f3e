"""Rate deck import (SPEC §3): a streamed CSV becomes a deck in one transaction, or nothing changes.

Rows are checked in Python (line numbers in every error), then loaded with COPY, which is what makes a
1,000,000-row deck take seconds rather than minutes.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import psycopg
from psycopg import sql

from control import projection
from control.access import audit
from control.api.errors import clip, invalid, not_found
from control.api.fields import MAX_MONEY, MAX_SECONDS
from fastpath import snapshot_format as fmt
from tollgate.v1 import common_pb2

_MONEY = ("connect_fee", "rate_per_min")
_SECONDS = ("included_seconds", "initial_increment", "increment")
_MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class DeckKind:
    owner_collection: str  # "rateGroups" / "trunks"
    owner_table: str
    rate_table: str
    owner_column: str
    columns: tuple[str, ...]  # CSV/table columns besides the owner
    family: Callable[[str], str]  # owner id -> projection family


_COMMON = ("prefix", "description", "connect_fee", "included_seconds", "rate_per_min", "initial_increment",
           "increment", "priority")
ORIGINATION = DeckKind("rateGroups", "rate_groups", "origination_rates", "rate_group_id", _COMMON,
                       fmt.origination_deck)
TERMINATION = DeckKind("trunks", "trunks", "termination_rates", "trunk_id", (*_COMMON, "strip", "prepend"),
                       fmt.termination_deck)


@dataclass
class ImportResult:
    rows_imported: int
    rows_in_deck: int
    deck_sha256: str


def _money(text: str) -> int:
    """'0.0125' -> 12500 micros, exactly; more than six decimals is an error, not a rounding."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{clip(text)} is not a decimal amount") from None
    micros = value * 1_000_000
    if micros != micros.to_integral_value():
        raise ValueError(f"{clip(text)} has more than 6 decimals")
    if value < 0:
        raise ValueError(f"{clip(text)} is negative")
    if micros > MAX_MONEY:
        raise ValueError(f"{clip(text)} is above {MAX_MONEY // 1_000_000:,} per minute or call")
    return int(micros)


def _count(text: str, low: int = 0, high: int = _MAX_INT32) -> int:
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{clip(text)} is not a whole number from {low} to {high}")
    return int(text)


def _convert(column: str, text: str):
    text = text.strip()
    if column == "prefix":
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise ValueError(f"prefix {clip(text)} must be 1 to 18 digits")
        return text
    if column in _MONEY:
        return _money(text or "0")
    if column in _SECONDS:
        return _count(text or "0", 0, MAX_SECONDS)
    if column == "priority":
        return _count(text or "0", -_MAX_INT32, _MAX_INT32)
    if column == "strip":
        return _count(text or "0", 0, 32)
    if column == "prepend":
        if text and not (text.isdigit() and len(text) <= 32):
            raise ValueError(f"prepend {clip(text)} must be digits")
        return text
    if len(text) > 255:
        raise ValueError(f"description is {len(text)} characters; at most 255")
    return text


def parse_rows(kind: DeckKind, lines: Iterable[str]) -> Iterator[tuple]:
    """Checked rows in table column order; ValueError('line N: ...') on the first bad one."""
    reader = csv.reader(lines)
    try:
        yield from _checked_rows(kind, reader)
    except csv.Error as exc:  # e.g. a field over csv's limit of 131,072 characters: the caller's file, not a bug
        raise ValueError(f"line {reader.line_num}: {exc}") from None


def _checked_rows(kind: DeckKind, reader) -> Iterator[tuple]:
    header = [h.strip().lower() for h in next(reader, [])]
    unknown = [h for h in header if h not in kind.columns]
    if not header or unknown or "prefix" not in header or "rate_per_min" not in header:
        raise ValueError(f"line 1: the header needs prefix and rate_per_min and may hold {', '.join(kind.columns)}"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    positions = {c: header.index(c) for c in header}
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ValueError(f"line {line}: {len(cells)} cells where the header has {len(header)}")
        try:
            row = tuple(_convert(c, cells[positions[c]] if c in positions else "") for c in kind.columns)
        except ValueError as exc:
            raise ValueError(f"line {line}: {exc}") from None
        if row[0] in seen:
            raise ValueError(f"line {line}: prefix {row[0]} already on line {seen[row[0]]}")
        seen[row[0]] = line
        yield row


def _lock_owner(conn: psycopg.Connection, kind: DeckKind, parent: str) -> dict:
    """The deck owner's row (id, rate_count, deck_sha256), locked until the import commits."""
    collection, _, owner_id = parent.partition("/")
    if collection != kind.owner_collection or not owner_id:
        raise invalid("parent", f"must be a resource name like {kind.owner_collection}/{{id}}")
    found = conn.execute(
        sql.SQL("SELECT id, rate_count, deck_sha256 FROM {} WHERE id = %s FOR UPDATE").format(
            sql.Identifier(kind.owner_table)), (owner_id,)
    ).fetchone()
    if found is None:
        raise not_found(parent)
    return found


def import_deck(conn: psycopg.Connection, kind: DeckKind, parent: str, mode: int, data: bytes) -> ImportResult:
    """Replace (or merge into) the owner's deck; raise INVALID_ARGUMENT naming the line on a bad row."""
    owner = _lock_owner(conn, kind, parent)
    owner_id = owner["id"]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid("csv_data", f"not UTF-8 (byte {exc.start})") from None
    if "\x00" in text:  # PostgreSQL stores no NUL; say where it is rather than fail in COPY
        raise invalid("csv_data", f"line {text.count(chr(10), 0, text.index(chr(0))) + 1}: a NUL character")
    merge = mode == common_pb2.IMPORT_MODE_MERGE
    table = sql.Identifier(kind.rate_table)
    columns = sql.SQL(", ").join(map(sql.Identifier, (kind.owner_column, *kind.columns)))
    if merge:
        conn.execute(f"CREATE TEMP TABLE deck_upload (LIKE {kind.rate_table} INCLUDING DEFAULTS) ON COMMIT DROP")
        target = sql.Identifier("deck_upload")
    else:
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(table, sql.Identifier(kind.owner_column)),
                     (owner_id,))
        target = table
    imported = 0
    try:
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns)) as copy:
            for row in parse_rows(kind, io.StringIO(text, newline="")):
                copy.write_row((owner_id, *row))
                imported += 1
    except ValueError as exc:
        raise invalid("csv_data", str(exc)) from None
    if merge:
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in kind.columns)
        conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM deck_upload ON CONFLICT ({}, prefix) DO UPDATE SET {}")
                     .format(table, columns, columns, sql.Identifier(kind.owner_column), updates))
    sha = "" if merge else hashlib.sha256(data).hexdigest()
    total = conn.execute(
        sql.SQL("UPDATE {} SET rate_count = (SELECT count(*) FROM {} WHERE {} = %(o)s), deck_sha256 = %(s)s,"
                " updated_at = now() WHERE id = %(o)s RETURNING rate_count").format(
            sql.Identifier(kind.owner_table), table, sql.Identifier(kind.owner_column)),
        {"o": owner_id, "s": sha},
    ).fetchone()["rate_count"]
    projection.mark_dirty(conn, kind.family(owner_id))
    audit.record(conn, f"{kind.owner_collection}/{owner_id}", audit.diff(
        {"rate_count": owner["rate_count"], "deck_sha256": owner["deck_sha256"]},
        {"rate_count": total, "deck_sha256": sha}) | {"rows_imported": {"old": None, "new": imported},
                                                      "mode": {"old": None, "new": "MERGE" if merge else "REPLACE"}})
    return ImportResult(imported, total, sha)


def collect_upload(requests: Iterable, max_bytes: int) -> tuple[str, int, bytes]:
    """The parent and mode of the first message, and every message's CSV bytes joined (at most max_bytes)."""
    parent, mode, pieces, size = "", 0, [], 0
    for index, request in enumerate(requests):
        if index == 0:
            parent, mode = request.parent, request.mode
        elif request.parent and request.parent != parent:
            raise invalid("parent", "every message of one upload must name the same deck")
        size += len(request.csv_data)
        if size > max_bytes:
            raise invalid("csv_data", f"the upload is larger than {max_bytes:,} bytes (max_upload_bytes)")
        pieces.append(request.csv_data)
    if not parent:
        raise invalid("parent", "the first message must name the deck")
    if mode not in (0, common_pb2.IMPORT_MODE_REPLACE, common_pb2.IMPORT_MODE_MERGE):
        raise invalid("mode", f"unknown import mode {clip(mode)}")
    return parent, mode, b"".join(pieces)
