"""Postpaid invoices (SPEC §10): made on each account's billing day, in its timezone, for the period since the
previous invoice (the first one: since the account was created).

- Period: [previous period_end or account creation, the latest billing day 00:00 local <= now). A CDR belongs
  to the period its call was set up in (setup_time; recorded_at for the rare CDR without one): the price was
  fixed at setup. A payment or charge belongs to the period it was posted in.
- Each CDR and payment is assigned to one invoice (its invoice_id) in the transaction that makes the invoice:
  every uninvoiced one of the account before period_end, so a CDR that reaches PostgreSQL after its period
  was invoiced lands on the next invoice instead of on none.
- Numbers come from a one-row counter updated in the same transaction: gapless, a rollback gives it back.
- total = usage + non-call charges + tax; tax = round-half-up((usage + charges) x company tax_percent / 100)
  to the micro, once per invoice. Payments are listed, not subtracted (the balance says what is owed).
- An invoice whose total is 0 is made only with generate_zero_invoice; without one, the next invoice covers
  the period since the last one that was made.
- Catching up: an account that missed billing days (the service was down) gets one invoice per missed period,
  oldest first, and the numbers of one run follow the periods across accounts. At most MAX_PERIODS_PER_RUN
  invoices per account per run; the next run goes on.
- Only what the account placed as a customer is invoiced. A provider's earnings (the provider_cost credited
  for calls it carried) are on no invoice yet.
"""

from __future__ import annotations

import heapq
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
from google.type import date_pb2
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from control.access import audit
from control.access.principals import Principal
from control.accounts import accounts, company
from control.accounts.accounts import NAME_PREFIX as ACCOUNT_PREFIX
from control.api import calls, paging
from control.api.errors import failed_precondition, invalid, not_found
from control.api.fields import timestamp
from control.api.listing import Column, parse_filter, require_own_number
from control.billing import cdrs
from control.documents import parties
from control.notifications import outbox
from tollgate.v1 import account_pb2, invoice_pb2

NAME_PREFIX = "invoices/"
DUE_DAYS = 15  # the due date: issue date + 15 days (net 15, usual for wholesale voice)
DIRECTIONS = ("outbound", "local", "inbound")
_MICROS_PER_PERCENT_UNIT = 100 * 10_000  # tax_percent is applied as an integer of 1/10,000 percent

FIELDS = {
    "account": Column("i.account_number", "number", prefix=ACCOUNT_PREFIX),
    "number": Column("i.number", "text", prefix=NAME_PREFIX),
    "issue_date": Column("i.issue_date", "time"),
    "due_date": Column("i.due_date", "time"),
    "period_start": Column("i.period_start", "time"),
    "period_end": Column("i.period_end", "time"),
    "total": Column("i.total", "money"),
}


class _NothingToInvoice(Exception):
    """Rolls back an invoice that must not be made (zero total), its number included."""


# ---------------------------------------------------------------------------------------------- periods


def period_end(now: datetime, timezone: str, billing_day: int) -> datetime:
    """The latest billing day 00:00 in the account's timezone that is not after `now`, in UTC."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    year, month = local.year, local.month
    boundary = datetime(year, month, billing_day, tzinfo=zone)
    if boundary > local:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        boundary = datetime(year, month, billing_day, tzinfo=zone)
    return boundary.astimezone(UTC)


def next_period_end(after: datetime, timezone: str, billing_day: int) -> datetime:
    """The first billing day 00:00 in the account's timezone that is after `after`, in UTC."""
    zone = ZoneInfo(timezone)
    latest = period_end(after, timezone, billing_day).astimezone(zone)
    year, month = (latest.year + 1, 1) if latest.month == 12 else (latest.year, latest.month + 1)
    return datetime(year, month, billing_day, tzinfo=zone).astimezone(UTC)


def tax_of(taxable: int, percent: Decimal) -> int:
    """round-half-up(taxable x percent / 100) in integer micros; taxable is never negative here."""
    return (taxable * int(percent * 10_000) + _MICROS_PER_PERCENT_UNIT // 2) // _MICROS_PER_PERCENT_UNIT


# ---------------------------------------------------------------------------------------------- generation


def _rows(conn: psycopg.Connection, query: str | sql.Composable, params: dict | tuple = ()) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchall()


def _scalar(conn: psycopg.Connection, query: str, params: tuple = ()):
    with conn.cursor(row_factory=tuple_row) as cursor:
        return cursor.execute(query, params).fetchone()[0]


_CANDIDATES = """
SELECT a.account_number, a.timezone, a.billing_day, a.generate_zero_invoice,
       coalesce((SELECT max(i.period_end) FROM invoices i WHERE i.account_number = a.account_number),
                a.created_at) AS period_start
FROM accounts a
WHERE a.account_type = 'POSTPAID' AND a.deleted_at IS NULL {account}
ORDER BY a.id
"""
MAX_PERIODS_PER_RUN = 120  # ten years of monthly invoices per account and run; the next run goes on


def candidates(conn: psycopg.Connection, account: str | None = None) -> list[dict]:
    """The live postpaid accounts (or the one named), with where their next invoice would start."""
    if account is None:
        return _rows(conn, _CANDIDATES.format(account=""))
    return _rows(conn, _CANDIDATES.format(account="AND a.account_number = %s"), (account,))


def generate_due(conn: psycopg.Connection, now: datetime, account: str | None = None) -> list[dict]:
    """Every invoice due at `now` (of every postpaid account, or of `account`), each in its own transaction (a
    savepoint when the caller holds one); the rows made, in order of number. Several missed periods of one
    account make several invoices; across accounts the oldest period goes first, so numbers follow the
    periods. Running it again makes nothing."""
    with conn.transaction():
        found = candidates(conn, account)
    queue: list[tuple[datetime, int]] = []
    for order, candidate in enumerate(found):
        end = _next_end(conn, candidate, candidate["period_start"], now)
        if end is not None:
            heapq.heappush(queue, (end, order))
    made, per_account = [], [0] * len(found)
    while queue:
        end, order = heapq.heappop(queue)
        try:
            with conn.transaction():
                row = _invoice_account(conn, found[order]["account_number"], end)
        except _NothingToInvoice:
            continue
        if row is None:  # another generator made it, or the account changed meanwhile
            continue
        made.append(row)
        per_account[order] += 1
        following = _next_end(conn, found[order], row["period_end"], now)
        if following is not None and per_account[order] < MAX_PERIODS_PER_RUN:
            heapq.heappush(queue, (following, order))
    return made


_EARLIEST_AMOUNT = """
SELECT least(
    (SELECT min(coalesce(setup_time, recorded_at)) FROM cdrs
     WHERE account_number = %(account)s AND invoice_id IS NULL AND customer_cost <> 0),
    (SELECT min(created_at) FROM payments WHERE account_number = %(account)s AND invoice_id IS NULL AND amount < 0)
) AS earliest
"""


def _next_end(conn: psycopg.Connection, account: dict, start: datetime, now: datetime) -> datetime | None:
    """The end of the account's next invoice from `start`, if it is due at `now`: the next billing day, or,
    without generate_zero_invoice, the billing day after the first amount not invoiced yet (empty periods
    join the next invoice that has something on it). None when nothing is due."""
    zone, day = account["timezone"], account["billing_day"]
    latest = period_end(now, zone, day)
    if latest <= start:
        return None
    if account["generate_zero_invoice"]:
        return next_period_end(start, zone, day)
    with conn.transaction():
        earliest = _rows(conn, _EARLIEST_AMOUNT, {"account": account["account_number"]})[0]["earliest"]
    if earliest is None:
        return None
    end = next_period_end(max(start, earliest), zone, day)
    return end if end <= latest else None


def _invoice_account(conn: psycopg.Connection, number: str, end: datetime) -> dict | None:
    """The account's invoice ending at `end`, under its row lock: a second generator waits here, then finds it
    made (its period starts at or after `end`). The period is read in a statement after the lock's: one
    statement's subquery keeps the snapshot from before its wait (read committed), so it missed the invoice
    the first generator had just made and the second failed on the unique period instead."""
    if not _rows(conn, "SELECT 1 FROM accounts WHERE account_number = %s FOR UPDATE", (number,)):
        return None
    locked = _rows(conn, _CANDIDATES.format(account="AND a.account_number = %s"), (number,))
    if not locked:  # deleted or made prepaid meanwhile
        return None
    account = _rows(conn, "SELECT * FROM accounts WHERE account_number = %s", (number,))[0]
    start = locked[0]["period_start"]
    if end <= start:
        return None
    invoice_id = _insert_header(conn, account, start, end)
    usage = _assign_cdrs(conn, invoice_id, number, end)
    payments, charges = _assign_payments(conn, invoice_id, number, end)
    percent = _scalar(conn, "SELECT tax_percent FROM company WHERE id = 1")
    taxable = sum(u["amount"] for u in usage.values()) + charges
    tax = tax_of(taxable, percent)
    if taxable + tax == 0 and not account["generate_zero_invoice"]:
        raise _NothingToInvoice
    totals = {f"{d}_{k}": usage[d][k] for d in DIRECTIONS for k in ("calls", "seconds", "amount")}
    totals |= {"charges": charges, "payments": payments, "tax_percent": percent, "tax_amount": tax,
               "total": taxable + tax, "id": invoice_id}
    assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k))
                                     for k in totals if k != "id")
    row = _rows(conn, sql.SQL("UPDATE invoices SET {} WHERE id = %(id)s RETURNING *").format(assignments), totals)[0]
    outbox.invoice_issued(conn, account, row)
    audit.record(conn, NAME_PREFIX + row["number"], audit.diff(None, {
        "account": row["account_number"], "period_start": row["period_start"], "period_end": row["period_end"],
        "total": row["total"]}), rpc=None if calls.current() else "ledger/GenerateInvoices")
    return row


def _insert_header(conn: psycopg.Connection, account: dict, start: datetime, end: datetime) -> int:
    """The invoice's number (the counter row stays locked until commit) and what it copies from the account."""
    serial = _scalar(conn, "UPDATE invoice_counter SET last_number = last_number + 1 WHERE id = 1 "
                           "RETURNING last_number")
    issue = end.astimezone(ZoneInfo(account["timezone"])).date()
    issuer, bill_to = parties.snapshot(conn, account)
    return _scalar(
        conn, "INSERT INTO invoices (number, account_number, period_start, period_end, issue_date, due_date, timezone,"
        " tax_number, invoice_note, invoice_with_cdr, issuer, bill_to)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (f"INV_{serial:06d}", account["account_number"], start, end, issue, issue + timedelta(days=DUE_DAYS),
         account["timezone"], account["tax_number"], account["invoice_note"], account["invoice_with_cdr"],
         issuer, bill_to))


_ASSIGN_CDRS = """
WITH moved AS (
    UPDATE cdrs SET invoice_id = %(id)s
    WHERE account_number = %(account)s AND invoice_id IS NULL AND coalesce(setup_time, recorded_at) < %(end)s
    RETURNING direction, billable_seconds, customer_cost, end_reason
)
SELECT CASE WHEN direction IN ('local', 'inbound') THEN direction ELSE 'outbound' END AS direction,
       count(*) FILTER (WHERE end_reason <> 'refused') AS calls, coalesce(sum(billable_seconds), 0)::bigint AS seconds,
       coalesce(sum(customer_cost), 0)::bigint AS amount
FROM moved GROUP BY 1
"""


def _assign_cdrs(conn: psycopg.Connection, invoice_id: int, account: str, end: datetime) -> dict[str, dict]:
    """Every uninvoiced CDR of the account set up before `end` goes on this invoice; the usage by direction
    (a CDR without a known direction counts as outbound, the default call type; refused attempts are on the
    invoice, as CDRs, but not counted as calls)."""
    usage = {d: {"calls": 0, "seconds": 0, "amount": 0} for d in DIRECTIONS}
    for row in _rows(conn, _ASSIGN_CDRS, {"id": invoice_id, "account": account, "end": end}):
        usage[row["direction"]] = {k: int(row[k]) for k in ("calls", "seconds", "amount")}
    return usage


_ASSIGN_PAYMENTS = """
WITH moved AS (
    UPDATE payments SET invoice_id = %(id)s
    WHERE account_number = %(account)s AND invoice_id IS NULL AND created_at < %(end)s
    RETURNING amount
)
SELECT coalesce(sum(amount) FILTER (WHERE amount > 0), 0)::bigint AS payments,
       coalesce(-sum(amount) FILTER (WHERE amount < 0), 0)::bigint AS charges
FROM moved
"""


def _assign_payments(conn: psycopg.Connection, invoice_id: int, account: str, end: datetime) -> tuple[int, int]:
    """(payments received, non-call charges owed), both >= 0, of the uninvoiced payments before `end`."""
    row = _rows(conn, _ASSIGN_PAYMENTS, {"id": invoice_id, "account": account, "end": end})[0]
    return row["payments"], row["charges"]


# ---------------------------------------------------------------------------------------------- the RPC

MAX_NOT_INVOICED = 100  # accounts a GenerateInvoices answer names as not invoiced (soonest first)


def generate(conn: psycopg.Connection, request: invoice_pb2.GenerateInvoicesRequest,
             now: datetime) -> invoice_pb2.GenerateInvoicesResponse:
    """GenerateInvoices: the invoices made, and the postpaid accounts left without one with their next billing
    day (so that "nothing happened" says why)."""
    number = _account_to_invoice(conn, request.account) if request.account else None
    made = generate_due(conn, now, number)
    invoiced = {row["account_number"] for row in made}
    with conn.transaction():
        waiting = [_not_invoiced(c, now) for c in candidates(conn, number) if c["account_number"] not in invoiced]
    waiting.sort(key=lambda w: (w.next_invoice_time.ToDatetime(), w.account))
    return invoice_pb2.GenerateInvoicesResponse(invoices=[to_message(r) for r in made],
                                                not_invoiced=waiting[:MAX_NOT_INVOICED],
                                                not_invoiced_count=len(waiting))


def _account_to_invoice(conn: psycopg.Connection, name: str) -> str:
    """The stored number of the postpaid account `name` (accounts/{number}, any case)."""
    number = accounts.number_from_name(name, "account")
    with conn.transaction():
        found = _rows(conn, "SELECT account_number, account_type, deleted_at FROM accounts"
                            " WHERE lower(account_number) = lower(%s)", (number,))
    if not found:
        raise not_found(f"account {number}")
    account = found[0]
    if account["deleted_at"] is not None:
        raise failed_precondition(f"account {account['account_number']} is deleted: it is invoiced no more")
    if account["account_type"] != "POSTPAID":
        raise failed_precondition(f"account {account['account_number']} is prepaid: it gets a receipt for each "
                                  "payment and charge, not invoices")
    return account["account_number"]


def _not_invoiced(candidate: dict, now: datetime) -> invoice_pb2.NotInvoiced:
    zone, day, start = candidate["timezone"], candidate["billing_day"], candidate["period_start"]
    due = period_end(now, zone, day) > start
    following = next_period_end(max(now, start), zone, day)
    reason = invoice_pb2.NotInvoiced.NOTHING_TO_INVOICE if due else invoice_pb2.NotInvoiced.NOT_DUE
    return invoice_pb2.NotInvoiced(
        account=ACCOUNT_PREFIX + candidate["account_number"], reason=reason, billing_day=day,
        next_invoice_time=timestamp(following), next_invoice_date=_date(following.astimezone(ZoneInfo(zone)).date()),
        timezone=zone)


# ---------------------------------------------------------------------------------------------- messages


def _date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def to_message(row: dict) -> invoice_pb2.Invoice:
    invoice = invoice_pb2.Invoice(
        name=NAME_PREFIX + row["number"], number=row["number"], account=ACCOUNT_PREFIX + row["account_number"],
        period_start=timestamp(row["period_start"]), period_end=timestamp(row["period_end"]),
        issue_date=_date(row["issue_date"]), due_date=_date(row["due_date"]),
        charges=row["charges"], payments=row["payments"], tax_percent=company.percent_text(row["tax_percent"]),
        tax_amount=row["tax_amount"], total=row["total"], tax_number=row["tax_number"],
        invoice_note=row["invoice_note"], timezone=row["timezone"], create_time=timestamp(row["created_at"]),
        invoice_with_cdr=account_pb2.InvoiceWithCdr.Value("INVOICE_WITH_CDR_" + row["invoice_with_cdr"]),
    )
    for direction in DIRECTIONS:
        getattr(invoice, direction).CopyFrom(invoice_pb2.Usage(
            calls=row[f"{direction}_calls"], billable_seconds=row[f"{direction}_seconds"],
            amount=row[f"{direction}_amount"]))
    return invoice


# ---------------------------------------------------------------------------------------------- reading


def fetch(conn: psycopg.Connection, principal: Principal, name: str) -> dict:
    """The invoice row. Another account's invoice is NOT_FOUND to an account token, exactly like a missing
    one: a different answer would let any customer count the invoices of the whole switch."""
    number = name.removeprefix(NAME_PREFIX)
    if not name.startswith(NAME_PREFIX) or not number:
        raise invalid("name", "must be a resource name like invoices/INV_000001")
    query, params = "SELECT * FROM invoices WHERE number = %s", [number]
    if not principal.is_operator:
        query += " AND account_number = %s"
        params.append(principal.account_number)
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise not_found(f"invoice {number}")
    return row


def cdr_query(principal: Principal, invoice_id: int) -> cdrs.CdrQuery:
    """The CDRs on the invoice, as CdrService shows them to `principal` (an account: its own side of each)."""
    on_invoice = sql.SQL("(c.sort_account, c.call_id) IN "
                         "(SELECT account_number, call_id FROM cdrs WHERE invoice_id = %s)")
    return cdrs.CdrQuery.build(principal, "").also(on_invoice, [invoice_id])


def list_page(conn: psycopg.Connection, principal: Principal,
              request: invoice_pb2.ListInvoicesRequest) -> invoice_pb2.ListInvoicesResponse:
    paging.page_size(request.page_size)  # a bad size is refused before the filter is read
    terms = parse_filter(request.filter, FIELDS)
    conditions, params = [t[0] for t in terms], [t[1] for t in terms]
    if not principal.is_operator:
        require_own_number(request.filter, FIELDS, ("account",), principal.account_number)
        conditions.append(sql.SQL("i.account_number = %s"))
        params.append(principal.account_number)
    rows, token = paging.rows_by_id(conn, table="invoices", alias="i", family="invoices", filter_text=request.filter,
                                    page_token=request.page_token, requested_size=request.page_size,
                                    conditions=conditions, params=params)
    return invoice_pb2.ListInvoicesResponse(invoices=[to_message(r) for r in rows], next_page_token=token)
