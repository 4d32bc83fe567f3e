"""Payments and non-call charges (SPEC §2, §10): the balance moves in PostgreSQL at once; control/billing/ledger.py
then moves the switch's live balance in Redis by the same amount, exactly once."""

from __future__ import annotations

import psycopg

from control.access import audit
from control.access.principals import Principal
from control.accounts import accounts
from control.api.errors import failed_precondition, invalid
from control.api.fields import MAX_MONEY, timestamp
from control.billing import receipts
from control.notifications import outbox
from tollgate.v1 import account_pb2

NAME_PREFIX = "payments/"
MAX_NOTE_LENGTH = 500
PAYMENTS_CHANNEL = "tollgate_payments"  # NOTIFY: control/billing/ledger.py wakes up and pushes
MAX_REQUEST_ID_LENGTH = 100


def post(conn: psycopg.Connection, principal: Principal,
         request: account_pb2.PostPaymentRequest) -> account_pb2.Payment:
    """Insert the payment and move accounts.balance, in the caller's transaction; a known request_id returns
    the payment it made (after checking it was for the same account and amount)."""
    _validate(request)
    request_id = request.request_id or None
    if request_id is not None:
        # Retries of one request_id queue here until the first commits, then each finds its payment: without the
        # lock, concurrent retries all missed it and all but one failed on the unique index.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("payment:" + request_id,))
        earlier = conn.execute("SELECT * FROM payments WHERE request_id = %s", (request_id,)).fetchone()
        if earlier is not None:
            return _same_request(earlier, request, receipts.number_of_payment(conn, earlier["id"]))
    account = accounts.fetch_for_update(conn, principal, request.account, "account")
    if account["deleted_at"] is not None:
        raise failed_precondition(f"account {account['account_number']} is deleted: it takes no more payments")
    balance_after = account["balance"] + request.amount
    if abs(balance_after) > MAX_MONEY:
        raise invalid("amount", f"the balance would leave ±{MAX_MONEY} micros")
    conn.execute("UPDATE accounts SET balance = %s, updated_at = now() WHERE id = %s", (balance_after, account["id"]))
    row = conn.execute(
        "INSERT INTO payments (account_number, amount, note, request_id, balance_after, posted_by)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (account["account_number"], request.amount, request.note, request_id, balance_after, principal.label),
    ).fetchone()
    audit.record(conn, f"{NAME_PREFIX}{row['id']}", audit.diff(None, {
        "account": row["account_number"], "amount": row["amount"], "note": row["note"],
        "request_id": row["request_id"], "balance_after": row["balance_after"]}))
    receipt = receipts.issue(conn, row, account)
    outbox.receipt_made(conn, account, receipt)
    conn.execute(f"NOTIFY {PAYMENTS_CHANNEL}")  # the ledger pushes it into Redis now rather than at its next tick
    return to_message(row, receipt["number"])


def _validate(request: account_pb2.PostPaymentRequest) -> None:
    if not request.account:
        raise invalid("account", "is required: accounts/{account_number}")
    if request.amount == 0:
        raise invalid("amount", "must not be 0: micros, > 0 for a payment, < 0 for a charge")
    if abs(request.amount) > MAX_MONEY:
        raise invalid("amount", f"must be within ±{MAX_MONEY} micros")
    if len(request.note) > MAX_NOTE_LENGTH:
        raise invalid("note", f"at most {MAX_NOTE_LENGTH} characters")
    if len(request.request_id) > MAX_REQUEST_ID_LENGTH:
        raise invalid("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")


def _same_request(earlier: dict, request: account_pb2.PostPaymentRequest, receipt: str) -> account_pb2.Payment:
    number = accounts.number_from_name(request.account, "account")
    if earlier["account_number"].lower() != number.lower() or earlier["amount"] != request.amount:
        raise invalid("request_id", "was used for a different payment")
    return to_message(earlier, receipt)


def to_message(row: dict, receipt: str) -> account_pb2.Payment:
    """`receipt`: the number of the payment's receipt ("" for a payment from before receipts)."""
    return account_pb2.Payment(
        name=f"{NAME_PREFIX}{row['id']}", account=accounts.NAME_PREFIX + row["account_number"], amount=row["amount"],
        note=row["note"], request_id=row["request_id"] or "", create_time=timestamp(row["created_at"]),
        balance_after=row["balance_after"], posted_by=row["posted_by"],
        receipt=receipts.NAME_PREFIX + receipt if receipt else "",
    )


def push_pending(conn: psycopg.Connection, state) -> int:
    """Every payment PostgreSQL has and the switch's live balance (Redis) may not: applied there once (Redis
    remembers the payment ids it applied), then marked pushed. A crash in between only applies nothing the
    next time. `state`: a callstate.store.CallState."""
    pushed = 0
    while rows := conn.execute("SELECT id, account_number, amount FROM payments WHERE pushed_at IS NULL "
                               "ORDER BY id LIMIT 500").fetchall():
        for row in rows:
            state.apply_payment(row["account_number"], row["id"], row["amount"])
        conn.execute("UPDATE payments SET pushed_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],))
        conn.commit()
        pushed += len(rows)
    return pushed
