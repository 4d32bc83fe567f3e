"""The outbox: a notification is a row written in the transaction of the event that causes it (so it exists
exactly when its event committed), for an account whose settings.notifications is on, addressed to its
notification_email, else its email. control/notifications/sender.py sends it; low balance is written by the
database itself (migration 0022's trigger), where every balance move is seen.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from control.api import paging
from control.api.fields import timestamp
from control.api.listing import Column, parse_filter
from tollgate.v1 import notification_pb2

ACCOUNT_PREFIX = "accounts/"  # (control.accounts.accounts.NAME_PREFIX; accounts writes here, so no import)
CHANNEL = "tollgate_notifications"  # NOTIFY at commit: the sender wakes at once
NAME_PREFIX = "notifications/"
KINDS = ("ACCOUNT_CREATED", "INVOICE_ISSUED", "RECEIPT", "LOW_BALANCE")
STATES = ("PENDING", "SENT", "FAILED")

FIELDS = {
    "account": Column("n.account_number", "number", prefix=ACCOUNT_PREFIX),
    "kind": Column("n.kind", "enum", KINDS),
    "state": Column("n.status", "enum", STATES),
    "recipient": Column("n.recipient", "text"),
    "resource": Column("n.resource", "text"),
    "attempts": Column("n.attempts", "int"),
    "create_time": Column("n.created_at", "time"),
}


def recipient(account: dict) -> str:
    return account["notification_email"] or account["email"]


def queue(conn: psycopg.Connection, kind: str, account: dict, subject: str, resource: str = "",
          data: dict | None = None) -> int | None:
    """Write the notification in the caller's transaction when the account wants mail; its id, else None."""
    if not account["notifications"] or account.get("deleted_at") is not None:
        return None
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "INSERT INTO notifications (kind, account_number, recipient, subject, resource, data)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (kind, account["account_number"], recipient(account), subject, resource, Jsonb(data or {}))).fetchone()
        cursor.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(CHANNEL)))
    return row["id"]


def company_name(conn: psycopg.Connection) -> str:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute("SELECT name FROM company WHERE id = 1").fetchone()["name"]


def account_created(conn: psycopg.Connection, account: dict) -> None:
    queue(conn, "ACCOUNT_CREATED", account,
          f"{company_name(conn)}: your account {account['account_number']} is ready")


def receipt_made(conn: psycopg.Connection, account: dict, receipt: dict) -> None:
    what = "your payment" if receipt["kind"] == "PAYMENT" else "a charge"
    queue(conn, "RECEIPT", account, f"{company_name(conn)}: receipt {receipt['number']} for {what}",
          f"receipts/{receipt['number']}")


def invoice_issued(conn: psycopg.Connection, account: dict, invoice: dict) -> None:
    queue(conn, "INVOICE_ISSUED", account,
          f"{company_name(conn)}: invoice {invoice['number']}, due {invoice['due_date']}",
          f"invoices/{invoice['number']}")


# ---------------------------------------------------------------------------------------------- reading


def to_message(row: dict) -> notification_pb2.Notification:
    message = notification_pb2.Notification(
        name=f"{NAME_PREFIX}{row['id']}", kind=notification_pb2.Notification.Kind.Value(row["kind"]),
        account=ACCOUNT_PREFIX + row["account_number"], recipient=row["recipient"], subject=row["subject"],
        resource=row["resource"], state=notification_pb2.Notification.State.Value(row["status"]),
        attempts=row["attempts"], last_error=row["last_error"], create_time=timestamp(row["created_at"]))
    if row["status"] == "PENDING":
        message.next_attempt_time.CopyFrom(timestamp(row["next_attempt_at"]))
    if row["sent_at"] is not None:
        message.send_time.CopyFrom(timestamp(row["sent_at"]))
    return message


def list_page(conn: psycopg.Connection, request: notification_pb2.ListNotificationsRequest
              ) -> notification_pb2.ListNotificationsResponse:
    """Newest first; the page token holds the id to continue below."""
    paging.page_size(request.page_size)  # a bad size is refused before the filter is read
    terms = parse_filter(request.filter, FIELDS)
    rows, token = paging.rows_by_id(conn, table="notifications", alias="n", family="notifications",
                                    filter_text=request.filter, page_token=request.page_token,
                                    requested_size=request.page_size, conditions=[t[0] for t in terms],
                                    params=[t[1] for t in terms], newest_first=True)
    return notification_pb2.ListNotificationsResponse(notifications=[to_message(r) for r in rows],
                                                      next_page_token=token)
