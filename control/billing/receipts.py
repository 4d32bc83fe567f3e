"""Receipts (SPEC §10): one for every payment and non-call charge, made by payments.post in the transaction that
posts it, numbered RCT_000001... in a series of their own.

- Numbers come from a one-row counter updated in the same transaction (like invoices): gapless, and a payment
  that rolls back gives its number back. The counter row is locked until the payment commits, so payments
  queue there for a moment; they are few and short.
- Every account type gets them: a prepaid account's only document of its money, a postpaid account's
  acknowledgement of a payment (its invoice lists the payments and charges again, as the period's).
- A receipt copies what it says from its payment, which never changes: amount (positive; the kind says
  whether it was received or charged), the balance it left, the note.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from control.access.principals import Principal
from control.accounts.accounts import NAME_PREFIX as ACCOUNT_PREFIX
from control.api import paging
from control.api.errors import invalid, not_found
from control.api.fields import timestamp
from control.api.listing import Column, parse_filter, require_own_number
from control.documents import parties
from tollgate.v1 import receipt_pb2

NAME_PREFIX = "receipts/"
PAYMENT_PREFIX = "payments/"

FIELDS = {
    "account": Column("r.account_number", "number", prefix=ACCOUNT_PREFIX),
    "number": Column("r.number", "text", prefix=NAME_PREFIX),
    "kind": Column("r.kind", "enum", ("PAYMENT", "CHARGE")),
    "amount": Column("r.amount", "money"),
    "create_time": Column("r.created_at", "time"),
}


def issue(conn: psycopg.Connection, payment: dict, account: dict) -> dict:
    """The payment's receipt, in the caller's transaction (the counter row stays locked until it ends)."""
    serial = conn.execute("UPDATE receipt_counter SET last_number = last_number + 1 WHERE id = 1 "
                          "RETURNING last_number").fetchone()["last_number"]
    kind = "PAYMENT" if payment["amount"] > 0 else "CHARGE"
    issuer, bill_to = parties.snapshot(conn, account)
    return conn.execute(
        "INSERT INTO receipts (number, payment_id, account_number, kind, amount, balance_after, note, created_at,"
        " issuer, bill_to) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
        (f"RCT_{serial:06d}", payment["id"], payment["account_number"], kind, abs(payment["amount"]),
         payment["balance_after"], payment["note"], payment["created_at"], issuer, bill_to)).fetchone()


def number_of_payment(conn: psycopg.Connection, payment_id: int) -> str:
    row = conn.execute("SELECT number FROM receipts WHERE payment_id = %s", (payment_id,)).fetchone()
    return row["number"] if row else ""


def to_message(row: dict) -> receipt_pb2.Receipt:
    return receipt_pb2.Receipt(
        name=NAME_PREFIX + row["number"], number=row["number"], account=ACCOUNT_PREFIX + row["account_number"],
        payment=f"{PAYMENT_PREFIX}{row['payment_id']}",
        kind=receipt_pb2.ReceiptKind.Value("RECEIPT_KIND_" + row["kind"]),
        amount=row["amount"], balance_after=row["balance_after"], note=row["note"],
        create_time=timestamp(row["created_at"]))


def fetch(conn: psycopg.Connection, principal: Principal, name: str) -> dict:
    """The receipt row. Another account's is NOT_FOUND to an account token, exactly like a missing one."""
    number = name.removeprefix(NAME_PREFIX)
    if not name.startswith(NAME_PREFIX) or not number:
        raise invalid("name", "must be a resource name like receipts/RCT_000001")
    query, params = "SELECT * FROM receipts WHERE number = %s", [number]
    if not principal.is_operator:
        query += " AND account_number = %s"
        params.append(principal.account_number)
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise not_found(f"receipt {number}")
    return row


def list_page(conn: psycopg.Connection, principal: Principal,
              request: receipt_pb2.ListReceiptsRequest) -> receipt_pb2.ListReceiptsResponse:
    paging.page_size(request.page_size)  # a bad size is refused before the filter is read
    terms = parse_filter(request.filter, FIELDS)
    conditions, params = [t[0] for t in terms], [t[1] for t in terms]
    if not principal.is_operator:
        require_own_number(request.filter, FIELDS, ("account",), principal.account_number)
        conditions.append(sql.SQL("r.account_number = %s"))
        params.append(principal.account_number)
    rows, token = paging.rows_by_id(conn, table="receipts", alias="r", family="receipts", filter_text=request.filter,
                                    page_token=request.page_token, requested_size=request.page_size,
                                    conditions=conditions, params=params)
    return receipt_pb2.ListReceiptsResponse(receipts=[to_message(r) for r in rows], next_page_token=token)
