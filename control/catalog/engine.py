"""A generic engine for the configuration resources: create, get, update (field mask), list, delete.

Each resource describes itself once (a Resource: table, message, name pattern, fields and hooks, see
control/catalog/resources.py); this module does the SQL, AIP naming and paging, names the API field behind each of
the table's constraints (errors.register_constraints: the error interceptor maps a violation with it),
writes the audit event of each change and marks the projection families the change touches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import psycopg.errors
from psycopg import sql

from control import projection
from control.access import audit
from control.api import errors, paging
from control.api.errors import clip, failed_precondition, invalid, not_found
from control.api.fields import ID_PATTERNS, Field, is_set, read, set_from_column, timestamp, to_column

Hook = Callable[[psycopg.Connection, dict], None]


@dataclass(frozen=True)
class Resource:
    label: str  # "trunk", in messages
    table: str
    message: type
    collection: str  # the name segment before the id: "trunks", "rates", "callerIds"
    id_column: str
    fields: tuple[Field, ...]
    id_path: str | None = None  # a message field that may carry the id at create ("prefix")
    parent_collection: str | None = None  # "rateGroups" for rateGroups/{id}/rates/{prefix}
    parent_table: str | None = None
    parent_column: str | None = None
    immutable: frozenset[str] = frozenset()  # settable at create only
    required: frozenset[str] = frozenset()  # must be set at create
    extra_paths: frozenset[str] = frozenset()  # handled by before_write (e.g. a password)
    outputs: tuple[tuple[str, str], ...] = ()  # output-only (path, column)
    families: Callable[[dict], tuple[str, ...]] = lambda row: ()
    # before_write(conn, id, changes, message, paths) -> changes: derive columns (a password's HA1).
    before_write: Callable[[psycopg.Connection, str, dict, object, set[str]], dict] | None = None
    check: Hook | None = None  # validate the row as stored, inside the transaction
    after_write: Hook | None = None
    before_delete: Hook | None = None
    list_filters: dict[str, str] = field(default_factory=dict)  # request field -> column
    by_path: dict[str, Field] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_path", {f.path: f for f in self.fields})
        errors.register_constraints(self._constraints())

    def _constraints(self) -> dict[str, tuple[str, str]]:
        """PostgreSQL's default constraint names for this table ({table}_{column}_fkey, …) -> the API path."""
        named = {f"{self.table}_pkey": ("name", self.label),
                 f"{self.table}_{self.id_column}_check": (self.id_path or "name", self.label)}
        for f in self.fields:
            for suffix in ("fkey", "check", "key"):
                named[f"{self.table}_{f.column}_{suffix}"] = (f.path, self.label)
        return named

    @property
    def audit_names(self) -> dict[str, str]:
        return {f.column: f.path for f in self.fields}

    # ------------------------------------------------------------------ names
    def name_of(self, row: dict) -> str:
        own = f"{self.collection}/{row[self.id_column]}"
        if self.parent_collection:
            return f"{self.parent_collection}/{row[self.parent_column]}/{own}"
        return own

    def parse_name(self, name: str, path: str = "name") -> tuple[str | None, str]:
        """'rateGroups/gold/rates/44' -> ('gold', '44')."""
        parts = name.split("/")
        expected = 4 if self.parent_collection else 2
        ok = len(parts) == expected and parts[-2] == self.collection and ID_PATTERNS[self.collection].fullmatch(
            parts[-1]
        )
        if ok and self.parent_collection:
            ok = parts[0] == self.parent_collection and bool(ID_PATTERNS[self.parent_collection].fullmatch(parts[1]))
        if not ok:
            pattern = f"{self.collection}/{{id}}"
            if self.parent_collection:
                pattern = f"{self.parent_collection}/{{parent}}/{pattern}"
            raise invalid(path, f"must be a resource name like {pattern}")
        return (parts[1] if self.parent_collection else None), parts[-1]

    def parse_parent(self, parent: str) -> str:
        parts = parent.split("/")
        if len(parts) != 2 or parts[0] != self.parent_collection or not ID_PATTERNS[parts[0]].fullmatch(parts[1]):
            raise invalid("parent", f"must be a resource name like {self.parent_collection}/{{id}}")
        return parts[1]

    def to_message(self, row: dict):
        message = self.message(name=self.name_of(row))
        for f in self.fields:
            set_from_column(message, f, row[f.column])
        for path, column in self.outputs:
            value = row[column]
            if hasattr(value, "tzinfo"):
                getattr(message, path).CopyFrom(timestamp(value))
            else:
                setattr(message, path, value)
        return message

    @property
    def updatable(self) -> frozenset[str]:
        return frozenset(self.by_path) - self.immutable | self.extra_paths


# ---------------------------------------------------------------------------------------------- writes


def _key(resource: Resource, parent_id: str | None, ident: str) -> tuple[sql.Composable, list]:
    clause = sql.SQL("{} = %s").format(sql.Identifier(resource.id_column))
    params: list = [ident]
    if resource.parent_column:
        clause = sql.SQL("{} = %s AND {}").format(sql.Identifier(resource.parent_column), clause)
        params.insert(0, parent_id)
    return clause, params


def _write(conn: psycopg.Connection, query: sql.Composable, params: list) -> dict:
    """A constraint violation propagates: the error interceptor names its field (errors.register_constraints)."""
    return conn.execute(query, params).fetchone()


def _finish(conn: psycopg.Connection, resource: Resource, before: dict | None, row: dict) -> None:
    if resource.after_write:
        resource.after_write(conn, row)
    if resource.check:
        resource.check(conn, row)
    projection.mark_dirty(conn, *resource.families(row))
    audit.record(conn, resource.name_of(row), audit.diff(before, row, resource.audit_names))


def create(conn: psycopg.Connection, resource: Resource, message, resource_id: str = "", parent: str = "",
           id_field: str = ""):
    parent_id = resource.parse_parent(parent) if resource.parent_collection else None
    if parent_id is not None:
        parent_id = _require_parent(conn, resource, parent_id, parent)
    ident = resource_id or (read(message, resource.id_path) if resource.id_path else "")
    id_field = id_field or resource.id_path or "name"
    if not ident:
        raise invalid(id_field, "is required")
    if not ID_PATTERNS[resource.collection].fullmatch(ident):
        raise invalid(id_field, f"{clip(ident)} is not a valid id")
    for path in sorted(resource.required):
        if not is_set(message, path):
            raise invalid(path, "is required")
    paths = {f.path for f in resource.fields if is_set(message, f.path)} | {
        p for p in resource.extra_paths if is_set(message, p)
    }
    values = {}
    for path in paths - resource.extra_paths:
        f = resource.by_path[path]
        value = to_column(f, read(message, path))
        if value is not None:
            values[f.column] = value
    values = _canonical_accounts(conn, resource, values)
    if resource.before_write:
        values = resource.before_write(conn, ident, values, message, paths)
    values[resource.id_column] = ident
    if resource.parent_column:
        values[resource.parent_column] = parent_id
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(resource.table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() for _ in values),
    )
    row = _write(conn, query, list(values.values()))
    _finish(conn, resource, None, row)
    return resource.to_message(row)


def _canonical_accounts(conn: psycopg.Connection, resource: Resource, values: dict) -> dict:
    """Account numbers are case-insensitive for people ("ab12" is "AB12"); store the account's own spelling."""
    for f in resource.fields:
        number = values.get(f.column)
        if f.collection == "accounts" and number:
            row = conn.execute("SELECT account_number FROM accounts WHERE lower(account_number) = lower(%s)",
                               (number,)).fetchone()
            if row is not None:
                values[f.column] = row["account_number"]
    return values


def _require_parent(conn: psycopg.Connection, resource: Resource, parent_id: str, parent: str) -> str:
    key = "account_number" if resource.parent_table == "accounts" else "id"
    found = conn.execute(
        sql.SQL("SELECT {} AS id FROM {} WHERE lower({}) = lower(%s)").format(
            sql.Identifier(key), sql.Identifier(resource.parent_table), sql.Identifier(key)),
        (parent_id,),
    ).fetchone()
    if found is None:
        raise not_found(parent)
    return found["id"]


def get(conn: psycopg.Connection, resource: Resource, name: str, lock: bool = False) -> dict:
    parent_id, ident = resource.parse_name(name)
    clause, params = _key(resource, parent_id, ident)
    query = sql.SQL("SELECT * FROM {} WHERE {}").format(sql.Identifier(resource.table), clause)
    if lock:
        query = sql.SQL("{} FOR UPDATE").format(query)
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise not_found(f"{resource.label} {name}")
    return row


def update_paths(resource: Resource, message, mask_paths: list[str]) -> set[str]:
    """AIP-134: no mask = the populated fields; "*" = every updatable field; else exactly the mask."""
    if mask_paths == ["*"]:
        return set(resource.updatable)
    if not mask_paths:
        paths = {p for p in resource.updatable if is_set(message, p)}
        if not paths:
            raise invalid("update_mask", "nothing to update: set a field or give an update_mask")
        return paths
    for path in mask_paths:
        if path in resource.immutable or path == "name" or any(path == p for p, _ in resource.outputs):
            raise invalid("update_mask", f"{clip(path)} cannot be changed")
        if path not in resource.updatable:
            raise invalid("update_mask", f"unknown field {clip(path)}")
    return set(mask_paths)


def update(conn: psycopg.Connection, resource: Resource, message, mask_paths: list[str]):
    paths = update_paths(resource, message, mask_paths)
    current = before = get(conn, resource, message.name, lock=True)
    changes = {}
    for path in paths - resource.extra_paths:
        f = resource.by_path[path]
        value = to_column(f, read(message, path))
        if value is None and f.kind == "enum":
            raise invalid(path, "must be set")
        changes[f.column] = value
    parent_id, ident = resource.parse_name(message.name)
    changes = _canonical_accounts(conn, resource, changes)
    if resource.before_write:
        changes = resource.before_write(conn, ident, changes, message, paths)
    if changes:
        clause, params = _key(resource, parent_id, ident)
        stamp = sql.SQL(", updated_at = now()") if "updated_at" in current else sql.SQL("")
        query = sql.SQL("UPDATE {} SET {}{} WHERE {} RETURNING *").format(
            sql.Identifier(resource.table),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in changes),
            stamp,
            clause,
        )
        current = _write(conn, query, [*changes.values(), *params])
    _finish(conn, resource, before, current)
    return resource.to_message(current)


def delete(conn: psycopg.Connection, resource: Resource, name: str) -> None:
    row = get(conn, resource, name, lock=True)
    if resource.before_delete:
        resource.before_delete(conn, row)
    parent_id, ident = resource.parse_name(name)
    clause, params = _key(resource, parent_id, ident)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(resource.table), clause), params)
    except psycopg.errors.ForeignKeyViolation:
        raise failed_precondition(f"{resource.label} {name} is still in use") from None
    if resource.after_write:
        resource.after_write(conn, row)
    projection.mark_dirty(conn, *resource.families(row))
    audit.record(conn, resource.name_of(row), audit.diff(row, None, resource.audit_names))


# ---------------------------------------------------------------------------------------------- listing


def list_page(conn: psycopg.Connection, resource: Resource, *, parent: str = "", page_size: int = 0,
              page_token: str = "", filters: dict[str, str] | None = None) -> tuple[list, str]:
    """One page in id order, and the token of the next page ("" at the end)."""
    size = paging.page_size(page_size, default=100)
    clauses, params = [sql.SQL("true")], []
    if resource.parent_collection:
        parent_id = resource.parse_parent(parent)
        clauses.append(sql.SQL("{} = %s").format(sql.Identifier(resource.parent_column)))
        params.append(parent_id)
    for request_field, value in sorted((filters or {}).items()):
        if value:
            column = resource.list_filters[request_field]  # account references: case-insensitive
            clauses.append(sql.SQL("lower({}) = lower(%s)").format(sql.Identifier(column)))
            params.append(value.removeprefix("accounts/"))
    issued_for = paging.fingerprint(resource.table, parent, sorted((filters or {}).items()))
    after = paging.decode_token(page_token, issued_for)
    if after is not None:
        clauses.append(sql.SQL("{} > %s").format(sql.Identifier(resource.id_column)))
        params.append(after)
    query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
        sql.Identifier(resource.table), sql.SQL(" AND ").join(clauses), sql.Identifier(resource.id_column)
    )
    rows = conn.execute(query, [*params, size + 1]).fetchall()
    token = paging.encode_token(rows[size - 1][resource.id_column], issued_for) if len(rows) > size else ""
    return [resource.to_message(r) for r in rows[:size]], token
