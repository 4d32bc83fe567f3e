"""The e-mail of each kind of notification, built when it is sent: plain text, with the invoice's or receipt's
PDF attached (rendered from the document's own copy, so it is the document that was issued), and an invoice's
CDR detail as CSV when that is its invoice_with_cdr (up to MAX_ATTACHMENT_BYTES; a larger detail is left out
and the message says where to get it)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import psycopg
from psycopg.rows import dict_row

from control.access.principals import account as account_principal
from control.billing import cdrs, invoices, receipts
from control.documents import render
from control.documents.pdf import money_text

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
Attachment = tuple[str, str, bytes]  # file name, MIME type, content


def message(conn: psycopg.Connection, row: dict, sender: str) -> EmailMessage:
    """The whole message of the outbox row `row`, in the caller's transaction."""
    company = _one(conn, "SELECT * FROM company WHERE id = 1")
    body, files = _BODIES[row["kind"]](conn, row, company)
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = row["recipient"]
    mail["Subject"] = row["subject"]
    mail["Date"] = formatdate(row["created_at"].timestamp())
    mail["Message-ID"] = make_msgid(f"tollgate.{row['id']}", domain=sender.rpartition("@")[2] or None)
    mail["X-Tollgate-Notification"] = f"notifications/{row['id']}"
    signature = "\n".join(part for part in (company["name"], company["email"]) if part)
    mail.set_content(f"{body}\n\n-- \n{signature}\n")
    for name, mime, data in files:
        maintype, subtype = mime.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return mail


def _one(conn: psycopg.Connection, query: str, params: tuple = ()) -> dict:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchone()


def _money(micros: int, company: dict) -> str:
    return f"{money_text(micros, company['decimals'])} {company['currency']}"


def _account_created(conn: psycopg.Connection, row: dict, company: dict) -> tuple[str, list[Attachment]]:
    account = _one(conn, "SELECT * FROM accounts WHERE account_number = %s", (row["account_number"],))
    devices = [d["username"] for d in conn.execute("SELECT username FROM sip_devices WHERE account = %s "
                                                   "ORDER BY username", (row["account_number"],))]
    billing = "prepaid" if account["account_type"] == "PREPAID" else \
        f"postpaid, credit limit {_money(account['credit_limit'], company)}, invoiced on day {account['billing_day']}"
    lines = [f"Welcome to {company['name']}.", "", f"Your account {account['account_number']} is ready:", "",
             f"  Account number: {account['account_number']}",
             f"  Type:           {account['type'].lower()}",
             f"  Billing:        {billing}",
             f"  Login:          {account['email']} (or the account number)"]
    if devices:
        lines.append(f"  SIP devices:    {', '.join(devices)}")
    lines += ["", "Passwords are never sent by e-mail: we give them to you another way."]
    return "\n".join(lines), []


def _receipt(conn: psycopg.Connection, row: dict, company: dict) -> tuple[str, list[Attachment]]:
    receipt = _one(conn, "SELECT * FROM receipts WHERE number = %s", (row["resource"].removeprefix(
        receipts.NAME_PREFIX),))
    what = "Payment received" if receipt["kind"] == "PAYMENT" else "Charge"
    lines = [f"{what}: {_money(receipt['amount'], company)} on account {receipt['account_number']}.",
             *([f"Reference: {receipt['note']}"] if receipt["note"] else []),
             f"Balance after it: {_money(receipt['balance_after'], company)}.", "",
             f"Receipt {receipt['number']} is attached."]
    return "\n".join(lines), [(f"{receipt['number']}.pdf", "application/pdf", render.receipt_pdf(conn, receipt))]


def _invoice(conn: psycopg.Connection, row: dict, company: dict) -> tuple[str, list[Attachment]]:
    invoice = _one(conn, "SELECT * FROM invoices WHERE number = %s", (row["resource"].removeprefix(
        invoices.NAME_PREFIX),))
    files = [(f"{invoice['number']}.pdf", "application/pdf", render.invoice_pdf(conn, invoice))]
    lines = [f"Invoice {invoice['number']} for account {invoice['account_number']} is attached.", "",
             f"  Total:    {_money(invoice['total'], company)}",
             f"  Due date: {invoice['due_date']}", ""]
    if invoice["invoice_with_cdr"] == "CSV":
        detail = _detail_csv(conn, invoice)
        if detail is None:
            lines.append("Its call detail is too large to attach; ask us for it, or export it with the API "
                         f"(InvoiceService.ExportInvoiceCdrsCsv, invoices/{invoice['number']}).")
        else:
            files.append((f"{invoice['number']}-cdrs.csv", "text/csv", detail))
            lines.append("Its call detail is attached as CSV.")
    return "\n".join(lines), files


def _detail_csv(conn: psycopg.Connection, invoice: dict) -> bytes | None:
    """The invoice's CDRs as the account itself would export them (its side of each call), or None when too big."""
    account = _one(conn, "SELECT id FROM accounts WHERE account_number = %s", (invoice["account_number"],))
    principal = account_principal(invoice["account_number"], account["id"], b"")
    data = bytearray()
    for chunk in cdrs.csv_chunks(conn, invoices.cdr_query(principal, invoice["id"])):
        data += chunk.data
        if len(data) > MAX_ATTACHMENT_BYTES:
            return None
    return bytes(data)


def _low_balance(conn: psycopg.Connection, row: dict, company: dict) -> tuple[str, list[Attachment]]:
    data = row["data"]
    left = data["balance"] + data["credit_limit"]
    lines = [f"The money left on account {row['account_number']} is {_money(left, company)}, below the "
             f"{_money(data['threshold'], company)} you asked to be told about.", ""]
    if data["credit_limit"]:
        lines.append(f"(Balance {_money(data['balance'], company)}, credit limit "
                     f"{_money(data['credit_limit'], company)}.)")
    lines.append("Calls are refused once nothing is left: please top up the account in time.")
    return "\n".join(lines), []


_BODIES = {"ACCOUNT_CREATED": _account_created, "RECEIPT": _receipt, "INVOICE_ISSUED": _invoice,
           "LOW_BALANCE": _low_balance}
