"""Account operations (SPEC §2): plain functions on a connection inside the RPC's transaction.

Servicers call these; nothing here knows about gRPC beyond raising ApiError.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

import psycopg
import psycopg.errors
from psycopg import sql

from control import projection
from control.access import audit, auth
from control.access.principals import Principal
from control.accounts import company, digest
from control.accounts.account_fields import BY_PATH, FIELDS, IMMUTABLE_PATHS, SELF_SERVICE_PATHS, UPDATABLE_PATHS
from control.api import paging, validation
from control.api.errors import clip, failed_precondition, invalid, not_found, permission_denied
from control.api.fields import is_set, read, set_from_column, timestamp, to_column
from control.api.listing import Column, parse_filter
from control.notifications import outbox
from tollgate.v1 import account_pb2

NAME_PREFIX = "accounts/"
_GENERATION_ATTEMPTS = 8
# CLI pool options that fall back to the non-CLI rate group (SPEC §6 rows 3-5).
_NEEDS_NON_CLI_GROUP = {3, 4, 5}
# Audit events name API paths rather than columns.
_AUDIT_NAMES = {f.column: f.path for f in FIELDS} | {"password_hash": "password"}


def number_from_name(name: str, field: str = "name") -> str:
    number = name.removeprefix(NAME_PREFIX)
    if not name.startswith(NAME_PREFIX) or not number:
        raise invalid(field, "must be a resource name like accounts/{account_number}")
    return number


# ---------------------------------------------------------------------------------------------- reading


def to_message(row: dict, devices: list[str]) -> account_pb2.Account:
    account = account_pb2.Account(
        name=NAME_PREFIX + row["account_number"],
        account_number=row["account_number"],
        type=account_pb2.AccountType.Value(row["type"]),
        balance=row["balance"],
        sip_devices=devices,
    )
    for field in FIELDS:
        set_from_column(account, field, row[field.column])
    account.create_time.CopyFrom(timestamp(row["created_at"]))
    account.update_time.CopyFrom(timestamp(row["updated_at"]))
    if row["deleted_at"] is not None:
        account.delete_time.CopyFrom(timestamp(row["deleted_at"]))
    return account


def devices_by_account(conn: psycopg.Connection, numbers: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {n: [] for n in numbers}
    rows = conn.execute(
        "SELECT account, username FROM sip_devices WHERE account = ANY(%s) ORDER BY username", (numbers,)
    )
    for row in rows:
        found[row["account"]].append(row["username"])
    return found


def messages(conn: psycopg.Connection, rows: list[dict]) -> list[account_pb2.Account]:
    devices = devices_by_account(conn, [r["account_number"] for r in rows])
    return [to_message(r, devices[r["account_number"]]) for r in rows]


def fetch_for_update(conn: psycopg.Connection, principal: Principal, name: str, field: str = "name") -> dict:
    """The account row, locked until the transaction ends; `field` names the request field in errors."""
    return _fetch(conn, principal, name, lock=True, field=field)


def _fetch(conn: psycopg.Connection, principal: Principal, name: str, lock: bool = False,
           field: str = "name") -> dict:
    """The account row. Another account's is NOT_FOUND to an account token, exactly like a missing one
    (SPEC §11): a different answer would let a token probe which numbers exist."""
    number = number_from_name(name, field)
    query = "SELECT * FROM accounts WHERE lower(account_number) = lower(%s)"
    params: list = [number]
    if not principal.is_operator:
        query += " AND id = %s"
        params.append(principal.account_id)
    row = conn.execute(query + (" FOR UPDATE" if lock else ""), params).fetchone()
    if row is None:
        raise not_found(f"account {number}")
    return row


def get(conn: psycopg.Connection, principal: Principal, name: str) -> account_pb2.Account:
    return messages(conn, [_fetch(conn, principal, name)])[0]


# -------------------------------------------------------------------------------------------- validation


def _check(state: dict, changed: set[str], settings: dict) -> None:
    """Validate the account as it will be stored; `changed` holds the API paths being written."""
    if not state.get("email"):
        raise invalid("email", "is required")
    state["email"] = validation.email("email", state["email"])
    if state["notification_email"]:
        state["notification_email"] = validation.email("profile.notification_email", state["notification_email"])
    if "pin" in changed:
        validation.pin("pin", state["pin"], settings["pin_length"])
    state["timezone"] = validation.timezone("profile.timezone", state["timezone"])
    state["country"] = validation.country("profile.country", state["country"])
    for path in ("settings.max_concurrent_calls", "settings.cps", "settings.lc_charge_per_min",
                 "billing.credit_limit", "billing.low_balance_threshold"):
        validation.non_negative(path, state[BY_PATH[path].column])
    validation.in_range("billing.billing_day", state["billing_day"], 1, 28)
    validation.in_range("billing.cli_pool", state["cli_pool"], 0, 8)
    if state["default_caller_id"] and not validation.is_ascii_digits(state["default_caller_id"]):
        raise invalid("settings.default_caller_id", "must be digits (0-9), at most 18")
    if state["account_type"] == "PREPAID" and state["credit_limit"] != 0:
        raise invalid("billing.credit_limit", "only postpaid accounts have a credit limit (use 0 for prepaid)")
    if state["cli_pool"] in _NEEDS_NON_CLI_GROUP and not state["non_cli_rate_group_id"]:
        raise invalid("billing.non_cli_rate_group", f"is required by cli_pool {state['cli_pool']}")


def _defaults(settings: dict) -> dict:
    state = {
        f.column: None if f.kind in ("ref", "time") else "" if f.kind == "str" else 0 if f.kind == "int" else False
        for f in FIELDS
        if f.kind != "enum"
    }
    state |= {"account_type": "PREPAID", "status": "ACTIVE", "billing_day": 1,
              "invoice_with_cdr": settings["invoice_with_cdr"], "timezone": settings["timezone"]}
    return state


# ---------------------------------------------------------------------------------------------- create


def _generated_number() -> str:
    return str(10**9 + secrets.randbelow(9 * 10**9))  # 10 digits, first not 0


def _generated_pin(length: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(length))


def create(conn: psycopg.Connection, request: account_pb2.Account) -> account_pb2.Account:
    settings = company.load(conn)
    state = _defaults(settings)
    changed = {f.path for f in FIELDS if is_set(request, f.path)}
    for path in changed:
        value = to_column(BY_PATH[path], read(request, path))
        if value is not None:
            state[BY_PATH[path].column] = value
    state["type"] = _account_type(request.type)
    _check(state, changed, settings)
    if request.password:
        state["password_hash"] = auth.hash_password(validation.password("password", request.password))
    given_number = request.account_number
    if given_number:
        validation.custom_account_number("account_number", given_number)
    row = _insert_with_generated_ids(conn, state, given_number, settings["pin_length"])
    sip_password = _create_sip_device(conn, row, settings["sip_realm"]) if request.create_sip_device else ""
    projection.mark_dirty(conn, *_ACCOUNT_FAMILIES, *(("devices",) if sip_password else ()))
    audit.record(conn, NAME_PREFIX + row["account_number"],
                 audit.diff(None, row, _AUDIT_NAMES) | ({"sip_device": {"old": None, "new": row["account_number"]}}
                                                        if sip_password else {}))
    outbox.account_created(conn, row)
    account = messages(conn, [row])[0]
    account.sip_device_password = sip_password
    return account


def _account_type(value: int) -> str:
    if value == account_pb2.PROVIDER:
        return "PROVIDER"
    if value in (account_pb2.CUSTOMER, account_pb2.ACCOUNT_TYPE_UNSPECIFIED):
        return "CUSTOMER"
    raise invalid("type", f"unknown account type {clip(value)}")


def _insert_with_generated_ids(conn: psycopg.Connection, state: dict, number: str, pin_length: int) -> dict:
    """Insert; a generated number or PIN that collides is drawn again, a given one is ALREADY_EXISTS."""
    for _ in range(_GENERATION_ATTEMPTS):
        values = state | {"account_number": number or _generated_number(),
                          "pin": state["pin"] or _generated_pin(pin_length)}
        try:
            with conn.transaction():  # a savepoint: a collision does not abort the RPC's transaction
                return _insert(conn, values)
        except psycopg.errors.UniqueViolation as exc:
            constraint = exc.diag.constraint_name
            retry = (constraint == "accounts_number_key" and not number) or (
                constraint == "accounts_pin_live_key" and not state["pin"]
            )
            if not retry:
                raise
    raise failed_precondition("could not draw a free account number or PIN; retry")


def _insert(conn: psycopg.Connection, values: dict) -> dict:
    columns = list(values)
    query = sql.SQL("INSERT INTO accounts ({}) VALUES ({}) RETURNING *").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(map(sql.Placeholder, columns)),
    )
    return conn.execute(query, values).fetchone()


def _create_sip_device(conn: psycopg.Connection, account: dict, realm: str) -> str:
    """A device named after the account number; returns its password (the only time it is seen)."""
    username = account["account_number"]
    password = digest.generated_password()
    ha1, ha1_sha256 = digest.ha1_pair(username, realm, password)
    conn.execute(
        "INSERT INTO sip_devices (account, username, ha1, ha1_sha256, realm) VALUES (%s, %s, %s, %s, %s)",
        (username, username, ha1, ha1_sha256, realm),
    )
    return password


# ---------------------------------------------------------------------------------------------- update


def update_paths(request: account_pb2.Account, mask_paths: list[str]) -> list[str]:
    """AIP-134: no mask = the populated fields; "*" = every updatable field; else exactly the mask."""
    if not mask_paths:
        paths = [p for p in sorted(UPDATABLE_PATHS) if _populated(request, p)]
        if not paths:
            raise invalid("update_mask", "nothing to update: set a field or give an update_mask")
        return paths
    if mask_paths == ["*"]:
        return sorted(UPDATABLE_PATHS - ({"password"} if not request.password else set()))
    for path in mask_paths:
        if path in IMMUTABLE_PATHS:
            raise invalid("update_mask", f"{path} cannot be changed")
        if path not in UPDATABLE_PATHS:
            raise invalid("update_mask", f"unknown field {clip(path)}")
    return sorted(set(mask_paths))


def _populated(request: account_pb2.Account, path: str) -> bool:
    return bool(request.password) if path == "password" else is_set(request, path)


def update(conn: psycopg.Connection, principal: Principal, request: account_pb2.Account,
           mask_paths: list[str]) -> account_pb2.Account:
    paths = update_paths(request, mask_paths)
    if not principal.is_operator and "password" in paths:
        raise permission_denied("an account changes its password with AuthService.ChangePassword, "
                                "which needs the current one")
    if not principal.is_operator and not set(paths) <= SELF_SERVICE_PATHS:
        raise permission_denied(f"an account token may change only {sorted(SELF_SERVICE_PATHS)}")
    row = _fetch(conn, principal, request.name, lock=True)
    if row["deleted_at"] is not None:
        raise failed_precondition(f"account {row['account_number']} is deleted")
    settings = company.load(conn)
    changes: dict = {}
    for path in paths:
        if path == "password":
            changes["password_hash"] = auth.hash_password(validation.password("password", request.password))
            continue
        field = BY_PATH[path]
        value = to_column(field, read(request, path))
        if value is None and field.kind == "enum":
            raise invalid(path, "must be set")
        changes[field.column] = value
    state = row | changes
    _check(state, set(paths), settings)
    changes = {column: state[column] for column in changes}
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in changes
    )
    updated = conn.execute(
        sql.SQL("UPDATE accounts SET {}, updated_at = now() WHERE id = %(id)s RETURNING *").format(assignments),
        changes | {"id": row["id"]},
    ).fetchone()
    projection.mark_dirty(conn, *_ACCOUNT_FAMILIES)
    changed = audit.diff(row, updated, _AUDIT_NAMES)
    if "password_hash" in changes:  # an operator set the password: every session of the account ends
        changed["sessions_ended"] = {"old": None, "new": auth.revoke_sessions(conn, row["id"])}
    audit.record(conn, NAME_PREFIX + row["account_number"], changed)
    return messages(conn, [updated])[0]


# ---------------------------------------------------------------------------------------------- delete

# What a soft delete removes besides marking the row (SPEC §2): devices, caller ids and IP maps go,
# DIDs are released, a provider's trunks are disabled; CDRs, invoices and payments stay.
_DELETE_CASCADE = (
    "DELETE FROM sip_devices WHERE account = ANY(%(numbers)s)",
    "DELETE FROM caller_ids WHERE account = ANY(%(numbers)s)",
    "DELETE FROM ip_maps WHERE account = ANY(%(numbers)s)",
    "UPDATE dids SET account = NULL WHERE account = ANY(%(numbers)s)",
    "UPDATE trunks SET status = 'INACTIVE', updated_at = now() WHERE provider = ANY(%(numbers)s)",
    "DELETE FROM api_tokens WHERE account_id = ANY(%(ids)s)",
)
# Families whose projection an account change can alter (a provider's state shows on its trunks).
_ACCOUNT_FAMILIES = ("accounts", "trunks")


def delete_many(conn: psycopg.Connection, names: list[str]) -> list[account_pb2.Account]:
    """Soft-delete every named account or none: one unknown or already deleted name fails the batch."""
    if not names:
        raise invalid("names", "give at least one account")
    typed: dict[str, str] = {}  # lower-cased -> as the caller spelled it, for the error
    for index, name in enumerate(names):
        number = number_from_name(name, f"names[{index}]")
        typed.setdefault(number.lower(), number)
    numbers = list(typed)
    rows = conn.execute(
        "SELECT id, account_number, deleted_at FROM accounts WHERE lower(account_number) = ANY(%s)"
        " ORDER BY id FOR UPDATE",
        (numbers,),
    ).fetchall()
    live = {r["account_number"].lower(): r for r in rows if r["deleted_at"] is None}
    missing = [typed[n] for n in numbers if n not in live]
    if missing:
        noun = "account" if len(missing) == 1 else "accounts"
        raise not_found(f"{noun} {', '.join(missing)}", "nothing was deleted")
    keys = {"ids": [r["id"] for r in live.values()], "numbers": [r["account_number"] for r in live.values()]}
    for statement in _DELETE_CASCADE:
        conn.execute(statement, keys)
    deleted = conn.execute(
        "UPDATE accounts SET deleted_at = now(), updated_at = now() WHERE id = ANY(%(ids)s) RETURNING *", keys
    ).fetchall()
    projection.mark_dirty(conn, *_ACCOUNT_FAMILIES, "devices", "callerids", "ipmaps", "dids")
    for row in deleted:
        audit.record(conn, NAME_PREFIX + row["account_number"], audit.diff(
            {"deleted_at": None}, {"deleted_at": row["deleted_at"]}, {"deleted_at": "delete_time"}))
    return messages(conn, sorted(deleted, key=lambda r: r["id"]))


# ---------------------------------------------------------------------------------------------- listing


def list_page(conn: psycopg.Connection, principal: Principal,
              request: account_pb2.ListAccountsRequest) -> account_pb2.ListAccountsResponse:
    """One page in id order, with the total count of the filter's matches."""
    query = AccountQuery.build(principal, request.filter, request.show_deleted)
    size = paging.page_size(request.page_size)
    after = paging.decode_token(request.page_token, query.fingerprint) or 0
    rows = conn.execute(
        sql.SQL("SELECT a.* FROM accounts a WHERE {} AND a.id > %s ORDER BY a.id LIMIT %s").format(query.where),
        [*query.params, after, size + 1],
    ).fetchall()
    total = conn.execute(sql.SQL("SELECT count(*) AS n FROM accounts a WHERE {}").format(query.where),
                         query.params).fetchone()["n"]
    response = account_pb2.ListAccountsResponse(accounts=messages(conn, rows[:size]), total_size=total)
    if len(rows) > size:
        response.next_page_token = paging.encode_token(rows[size - 1]["id"], query.fingerprint)
    return response


# The fields of the account filter (ListAccounts and ExportAccountsCsv).
FILTER_FIELDS = {
    "account_number": Column("a.account_number", "text"),
    "name": Column("(a.first_name || ' ' || a.last_name)", "text"),
    "company": Column("a.company", "text"),
    "email": Column("a.email", "text"),
    "type": Column("a.type", "enum", ("CUSTOMER", "PROVIDER")),
    "account_type": Column("a.account_type", "enum", ("PREPAID", "POSTPAID")),
    "status": Column("a.status", "enum", ("ACTIVE", "INACTIVE")),
    "rate_group": Column("a.rate_group_id", "text", prefix="rateGroups/"),
    "balance": Column("a.balance", "money"),
    "create_time": Column("a.created_at", "time"),
}


@dataclass(frozen=True)
class AccountQuery:
    """WHERE clause and parameters for one caller's filter."""

    where: sql.Composable
    params: list
    fingerprint: str  # ties a page token to the query that made it

    @classmethod
    def build(cls, principal: Principal, filter_text: str, show_deleted: bool) -> AccountQuery:
        terms = parse_filter(filter_text, FILTER_FIELDS)
        clauses = [t[0] for t in terms]
        params = [t[1] for t in terms]
        if not show_deleted:
            clauses.append(sql.SQL("a.deleted_at IS NULL"))
        if not principal.is_operator:
            clauses.append(sql.SQL("a.id = %s"))
            params.append(principal.account_id)
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
        return cls(where, params, paging.fingerprint("accounts", filter_text, show_deleted))
