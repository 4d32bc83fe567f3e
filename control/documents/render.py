"""Invoices and receipts as PDF (SPEC §10): what the documents say, laid out on control/documents/pdf.py's page.

An invoice prints the issuer, the account billed, the period, the usage per call type, each non-call charge,
tax and total, the due date and the invoice note, then the payments received in the period (for the record:
they are not deducted; the balance says what is owed). With invoice_with_cdr PDF its calls follow on pages of
their own, at most MAX_DETAIL_ROWS of them (the CSV export has them all). Refused attempts are on the invoice
as CDRs (and in its CSV) but, like its call counts, the PDF detail leaves them out. A receipt prints one payment
or charge and the balance it left. Times are the account's (the invoice's timezone, the receipt's copy of it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pycountry

from control.documents import images, parties
from control.documents.pdf import LEFT, Column, Document, Issuer, address_lines, duration_text

MAX_DETAIL_ROWS = 100_000
CHUNK_BYTES = 256 * 1024  # a streamed document's pieces
_DIRECTIONS = (("outbound", "Outbound calls"), ("local", "Local calls"), ("inbound", "Inbound calls"))
_SUMMARY = [Column("Description", 88), Column("Calls", 20, True), Column("Billable time", 30, True),
            Column("Amount", 36, True)]
_PAYMENTS = [Column("Date", 30), Column("Reference", 108, chars=70), Column("Amount", 36, True)]
_DETAIL = [Column("Set up", 31), Column("Caller ID", 30, chars=20), Column("Destination", 34, chars=24),
           Column("Type", 18, chars=10), Column("Seconds", 17, True), Column("SIP", 10, True),
           Column("Amount", 34, True)]
_TYPED = {1, 2, 3}  # the detail's columns holding text a caller or the switch passed on (caller id, destination)
_DETAIL_ROW = 3.9  # mm
_PAGE_BOTTOM = 270.0


def _country(code: str) -> str:
    found = pycountry.countries.get(alpha_2=code) if code else None
    return found.name if found else code


def _local(moment: datetime, zone: str) -> datetime:
    try:
        return moment.astimezone(ZoneInfo(zone or "UTC"))
    except (KeyError, ValueError):  # a zone the system no longer knows: UTC rather than no document
        return moment.astimezone(ZoneInfo("UTC"))


def _issuer(conn: psycopg.Connection, snapshot: dict) -> Issuer:
    return Issuer.of(snapshot, images.load(conn, snapshot.get("logo_sha256")))


def chunks(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


# ---------------------------------------------------------------------------------------------- invoices


def invoice_pdf(conn: psycopg.Connection, invoice: dict) -> bytes:
    issuer_snapshot, bill_to = parties.of_document(conn, invoice)
    issuer = _issuer(conn, issuer_snapshot)
    zone = invoice["timezone"]
    doc = Document(issuer, f"Invoice {invoice['number']}", invoice["created_at"])
    last_day = (_local(invoice["period_end"], zone) - timedelta(seconds=1)).date()
    period = f"{_local(invoice['period_start'], zone).date()} to {last_day}"
    doc.letterhead("INVOICE", [("Invoice number", invoice["number"]), ("Issue date", str(invoice["issue_date"])),
                               ("Due date", str(invoice["due_date"])), ("Period", period),
                               ("Account", invoice["account_number"])])
    lines = address_lines(bill_to, _country(bill_to.get("country", "")))
    if invoice["tax_number"]:
        lines.append(f"Tax number: {invoice['tax_number']}")
    doc.addressee("Bill to", lines)
    moves = conn.execute("SELECT created_at, amount, note FROM payments WHERE invoice_id = %s ORDER BY id",
                         (invoice["id"],)).fetchall()
    _summary(doc, invoice, [m for m in moves if m["amount"] < 0], zone)
    _payments(doc, [m for m in moves if m["amount"] > 0], zone)
    if invoice["invoice_note"]:
        doc.boxed("Note", invoice["invoice_note"])
    calls = sum(invoice[f"{d}_calls"] for d, _ in _DIRECTIONS)
    if invoice["invoice_with_cdr"] == "CSV":
        doc.paragraph(f"The detail of the {calls:,} calls on this invoice comes as a CSV file.", 8.5, (90, 90, 90))
    elif invoice["invoice_with_cdr"] == "PDF":
        doc.paragraph(f"The detail of the {calls:,} calls on this invoice follows on the next pages.", 8.5,
                      (90, 90, 90))
        _detail(doc, conn, invoice)
    return doc.render()


def _summary(doc: Document, invoice: dict, charges: list[dict], zone: str) -> None:
    currency = doc.issuer.currency
    columns = [*_SUMMARY[:3], Column(f"Amount ({currency})", 36, True)]
    doc.heading("Summary")
    doc.table_header(columns)
    for direction, label in _DIRECTIONS:
        doc.table_row(columns, [label, f"{invoice[direction + '_calls']:,}",
                                duration_text(invoice[direction + "_seconds"]),
                                doc.money(invoice[direction + "_amount"])])
    for charge in charges:
        when = _local(charge["created_at"], zone).date()
        doc.table_row(columns, [f"Charge {when}: {charge['note'] or 'non-call charge'}"[:70], "", "",
                                doc.money(-charge["amount"])])
    usage = sum(invoice[f"{d}_amount"] for d, _ in _DIRECTIONS)
    doc.totals([("Subtotal", doc.money(usage + invoice["charges"])),
                (f"Tax ({invoice['tax_percent'].normalize():f} %)", doc.money(invoice["tax_amount"]))],
               (f"Total {currency}", doc.money(invoice["total"])))
    doc.font(9.5, bold=True)
    doc.line_of(f"Please pay {doc.money(invoice['total'])} {currency} by {invoice['due_date']}.", 6)
    doc.ln(4)


def _payments(doc: Document, payments: list[dict], zone: str) -> None:
    if not payments:
        return
    columns = [*_PAYMENTS[:2], Column(f"Amount ({doc.issuer.currency})", 36, True)]
    doc.heading("Payments received in this period")
    doc.table_header(columns)
    for payment in payments:
        doc.table_row(columns, [str(_local(payment["created_at"], zone).date()), payment["note"][:70] or "payment",
                                doc.money(payment["amount"])])
    doc.paragraph("Listed for your records: they are not deducted above (your account balance includes them).",
                  8, (100, 100, 100))
    doc.ln(4)


def _detail(doc: Document, conn: psycopg.Connection, invoice: dict) -> None:
    """The invoice's calls, one line each, in order of setup: text() per cell, no cell objects (100,000 rows
    take seconds, not minutes)."""
    zone = ZoneInfo(invoice["timezone"] or "UTC")
    columns = [*_DETAIL[:6], Column(f"Amount ({doc.issuer.currency})", 34, True)]
    doc.set_auto_page_break(False)
    shown = seconds = amount = 0
    with conn.cursor(name=f"invoice_detail_{invoice['id']}") as cursor:
        cursor.itersize = 2000
        cursor.execute("SELECT setup_time, recorded_at, caller_id_received, destination_dialled, direction,"
                       " billable_seconds, sip_code, customer_cost FROM cdrs"
                       " WHERE invoice_id = %s AND end_reason <> 'refused'"
                       " ORDER BY coalesce(setup_time, recorded_at), call_id LIMIT %s",
                       (invoice["id"], MAX_DETAIL_ROWS))
        y = _PAGE_BOTTOM
        for cdr in cursor:
            if y >= _PAGE_BOTTOM:
                y = _detail_page(doc, invoice, columns)
            when = (cdr["setup_time"] or cdr["recorded_at"]).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
            _detail_line(doc, columns, y, [when, cdr["caller_id_received"], cdr["destination_dialled"],
                                           cdr["direction"] or "outbound", str(cdr["billable_seconds"]),
                                           str(cdr["sip_code"]), doc.money(cdr["customer_cost"])])
            y += _DETAIL_ROW
            shown += 1
            seconds += cdr["billable_seconds"]
            amount += cdr["customer_cost"]
    calls = sum(invoice[f"{d}_calls"] for d, _ in _DIRECTIONS)
    doc.set_auto_page_break(True, margin=22)
    doc.set_xy(LEFT, y + 2)
    doc.font(8.5, bold=True)
    doc.line_of(f"{shown:,} calls, {seconds:,} billable seconds, {doc.money(amount)} {doc.issuer.currency}")
    if shown < calls:
        doc.paragraph(f"The first {shown:,} of {calls:,} calls are shown; the CSV export of this invoice has "
                      "them all.", 8.5)


def _detail_page(doc: Document, invoice: dict, columns: list[Column]) -> float:
    doc.add_page()
    doc.font(10.5, bold=True, color=(31, 56, 100))
    doc.line_of(f"Call detail: invoice {invoice['number']} (times in {invoice['timezone']})", 6)
    doc.ln(1)
    doc.table_header(columns, height=5.5, size=7.5)
    doc.font(7.2)
    return doc.get_y() + 3.5


def _detail_line(doc: Document, columns: list[Column], y: float, values: list[str]) -> None:
    """One call. Only the texts callers typed are cleaned (times, numbers and money are ours); right-aligned
    widths come from the document's cache."""
    x = LEFT
    for index, (column, value) in enumerate(zip(columns, values, strict=True)):
        text = value if len(value) <= column.chars else value[:column.chars - 1] + "…"
        if index in _TYPED:
            text = doc.clean(text)
        doc.text(x + column.width - doc.width_of(text) - 1 if column.right else x + 1, y, text)
        x += column.width


# ---------------------------------------------------------------------------------------------- receipts


def receipt_pdf(conn: psycopg.Connection, receipt: dict) -> bytes:
    issuer_snapshot, bill_to = parties.of_document(conn, receipt)
    doc = Document(_issuer(conn, issuer_snapshot), f"Receipt {receipt['number']}", receipt["created_at"])
    zone = bill_to.get("timezone", "UTC")
    payment = receipt["kind"] == "PAYMENT"
    when = _local(receipt["created_at"], zone)
    doc.letterhead("RECEIPT", [("Receipt number", receipt["number"]), ("Date", when.strftime("%Y-%m-%d %H:%M %Z")),
                               ("Account", receipt["account_number"]),
                               ("Payment", f"payments/{receipt['payment_id']}")])
    lines = address_lines(bill_to, _country(bill_to.get("country", "")))
    if bill_to.get("tax_number"):
        lines.append(f"Tax number: {bill_to['tax_number']}")
    doc.addressee("Received from" if payment else "Charged to", lines)
    currency = doc.issuer.currency
    columns = [Column("Description", 138, chars=80), Column(f"Amount ({currency})", 36, True)]
    doc.heading("Payment received" if payment else "Non-call charge")
    doc.table_header(columns)
    description = receipt["note"] or ("Payment" if payment else "Non-call charge")
    doc.table_row(columns, [description[:80], doc.money(receipt["amount"])])
    doc.totals([], ("Received" if payment else "Charged", f"{doc.money(receipt['amount'])} {currency}"))
    doc.font(9.5)
    doc.line_of(f"Balance of account {receipt['account_number']} after this "
                f"{'payment' if payment else 'charge'}: {doc.money(receipt['balance_after'])} {currency}", 6)
    if payment:
        doc.ln(2)
        doc.line_of("Thank you for your payment.", 6)
    return doc.render()
