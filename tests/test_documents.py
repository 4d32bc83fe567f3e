"""PDF invoices and receipts (SPEC §10): GetInvoicePdf and GetReceiptPdf read back with pypdf, the numbers and
totals checked against the invoice; the issuer's and the account's details as they were at issue; the CDR detail
as pages (invoice_with_cdr PDF) or as CSV; pages rendered to PNG (pdftoppm) in the artifact directory.

The tests run on a control service of their own: they set the company's name, address, logo and tax.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image, ImageDraw
from pypdf import PdfReader

from tests.helpers import clean_env, failure, insert_cdrs, ok, run_cli, unique_email, unique_number
from tollgate.v1 import account_pb2, auth_pb2, company_pb2, invoice_pb2, receipt_pb2

EUR = 1_000_000
PASSWORD = "document-reader-pass"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def logo_png(colour: str = "#1f3864", size: tuple[int, int] = (360, 120)) -> bytes:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((4, 4, size[1] - 4, size[1] - 4), radius=18, fill=colour)
    draw.ellipse((30, 30, size[1] - 30, size[1] - 30), fill="white")
    draw.rectangle((size[1] + 12, 40, size[0] - 10, 80), fill=colour)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def set_company(stubs, **fields) -> company_pb2.Company:
    return stubs.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
        company=company_pb2.Company(**fields), update_mask=field_mask_pb2.FieldMask(paths=list(fields))),
        metadata=stubs.metadata)


@pytest.fixture(scope="module")
def server(server_factory, connect):
    started = server_factory()
    stubs = connect(started)
    set_company(stubs, name="Northwind Voice Ltd", currency="EUR", decimals=4, tax_percent="19",
                address="Unit 4, Harbour Exchange\n10 Quay Street\nDublin D02 XY45\nIreland",
                tax_number="IE9876543W", email="billing@northwind.example", logo=logo_png())
    return {"server": started, "stubs": stubs}


def postpaid(server, created: str = "2031-01-10T00:00:00", **billing) -> account_pb2.Account:
    stubs = server["stubs"]
    account = account_pb2.Account(
        account_number=unique_number(), email=unique_email("doc"), password=PASSWORD,
        profile=account_pb2.Profile(company="Müller Telekom GmbH", first_name="Jörg", last_name="Müller",
                                    address1="Friedrichstraße 123", address2="Aufgang B", city="Berlin",
                                    zip="10117", country="DE", timezone="Europe/Berlin"),
        billing=account_pb2.Billing(account_type=account_pb2.POSTPAID, credit_limit=500 * EUR, **billing))
    made = stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account), metadata=stubs.metadata)
    with psycopg.connect(server["server"].dsn) as conn:
        conn.execute("UPDATE accounts SET created_at = %s WHERE account_number = %s",
                     (utc(created), made.account_number))
    return made


def call(account: account_pb2.Account, call_id: str, setup: datetime, seconds: int = 60, cost: int = 12_000,
         **more) -> dict:
    row = dict(call_id=call_id, account_number=account.account_number, direction="outbound",
               caller_id_received="4930111222", destination_dialled="004940123456", setup_time=setup,
               answer_time=setup + timedelta(seconds=4), end_time=setup + timedelta(seconds=4 + seconds),
               billable_seconds=seconds, sip_code=200, customer_cost=cost, end_reason="hangup")
    return row | more


def generate(stubs, as_of: str) -> list[invoice_pb2.Invoice]:
    stamp = Timestamp()
    stamp.FromDatetime(utc(as_of))
    return list(stubs.invoices.GenerateInvoices(invoice_pb2.GenerateInvoicesRequest(as_of=stamp),
                                                metadata=stubs.metadata).invoices)


def invoice_pdf(stubs, name: str, metadata: tuple | None = None) -> bytes:
    chunks = list(stubs.invoices.GetInvoicePdf(invoice_pb2.GetInvoicePdfRequest(name=name),
                                               metadata=metadata or stubs.metadata))
    assert chunks[0].content_type == "application/pdf"
    return b"".join(c.data for c in chunks)


def receipt_pdf(stubs, name: str, metadata: tuple | None = None) -> bytes:
    chunks = list(stubs.receipts.GetReceiptPdf(receipt_pb2.GetReceiptPdfRequest(name=name),
                                               metadata=metadata or stubs.metadata))
    assert chunks[0].content_type == "application/pdf"
    return b"".join(c.data for c in chunks)


def text_of(data: bytes) -> list[str]:
    """Each page's text, whitespace runs as single spaces."""
    assert data.startswith(b"%PDF-")
    return [re.sub(r"\s+", " ", page.extract_text()) for page in PdfReader(io.BytesIO(data)).pages]


def render_png(data: bytes, target: Path, page: int = 1) -> Path:
    """Page `page` of the PDF as a PNG (poppler's pdftoppm), for a person to look at."""
    pdf = target.with_suffix(".pdf")
    pdf.write_bytes(data)
    subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", str(page), "-l", str(page), "-singlefile", str(pdf),
                    str(target.with_suffix(""))], check=True, timeout=60)
    return target.with_suffix(".png")


@pytest.fixture(scope="module")
def issued(server) -> dict:
    """One invoice with everything on it: three call types, a charge, a payment, tax, a note and PDF detail."""
    stubs = server["stubs"]
    account = postpaid(server, tax_number="DE811907980", invoice_note="Payable by SEPA transfer to "
                       "IE29 AIBK 9311 5212 3456 78, quoting the invoice number. Thank you for your business.",
                       invoice_with_cdr=account_pb2.INVOICE_WITH_CDR_PDF)
    start = utc("2031-01-12T08:00:00")
    rows = [call(account, f"out-{i}", start + timedelta(minutes=7 * i), seconds=30 + i % 300,
                 cost=10_000 + 37 * i) for i in range(240)]
    rows += [call(account, "local-1", start, seconds=95, cost=300_000, direction="local",
                  destination_dialled="alice-desk"),
             call(account, "in-1", start, seconds=0, cost=0, direction="inbound", sip_code=486),
             call(account, "refused-1", start, seconds=0, cost=0, sip_code=402, end_reason="refused")]
    insert_cdrs(server["server"].dsn, rows)
    charge = stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(
        account=account.name, amount=-15 * EUR, note="Number porting fee"), metadata=stubs.metadata)
    payment = stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(
        account=account.name, amount=40 * EUR, note="SEPA ref 2031-0117"), metadata=stubs.metadata)
    (invoice,) = [i for i in generate(stubs, "2031-02-01T12:00:00") if i.account == account.name]
    return {"account": account, "invoice": invoice, "rows": rows, "charge": charge, "payment": payment}


def test_the_invoice_pdf_says_what_the_invoice_says(server, issued, artifacts):
    invoice = issued["invoice"]
    data = invoice_pdf(server["stubs"], invoice.name)
    png = render_png(data, artifacts / "invoice-page-1.png")  # first: there to look at when a check fails
    first = text_of(data)[0]
    usage = sum(r["customer_cost"] for r in issued["rows"])
    assert (invoice.outbound.calls, invoice.local.calls, invoice.inbound.calls) == (240, 1, 1)
    assert invoice.total == usage + 15 * EUR + invoice.tax_amount and invoice.tax_percent == "19"
    for expected in ("INVOICE", invoice.number, "Issue date 2031-02-01", "Due date 2031-02-16",
                     "Period 2031-01-10 to 2031-01-31", f"Account {issued['account'].account_number}",
                     "Northwind Voice Ltd", "10 Quay Street", "Tax number: IE9876543W", "billing@northwind.example",
                     "Müller Telekom GmbH", "Jörg Müller", "Friedrichstraße 123", "10117 Berlin", "Germany",
                     "Tax number: DE811907980", "Amount (EUR)",
                     f"Outbound calls 240 {hms(sum(r['billable_seconds'] for r in issued['rows'][:240]))} "
                     f"{eur(invoice.outbound.amount)}",
                     "Local calls 1 0:01:35 0.3000", "Inbound calls 1 0:00:00 0.0000",
                     ": Number porting fee 15.0000",
                     f"Subtotal {eur(usage + 15 * EUR)}", f"Tax (19 %) {eur(invoice.tax_amount)}",
                     f"Total EUR {eur(invoice.total)}", f"Please pay {eur(invoice.total)} EUR by 2031-02-16",
                     "SEPA ref 2031-0117 40.0000", "IE29 AIBK 9311 5212 3456 78",
                     "The detail of the 242 calls on this invoice follows"):
        assert expected in first, expected
    reader = PdfReader(io.BytesIO(data))
    assert reader.metadata.title == f"Invoice {invoice.number}" and reader.metadata.author == "Northwind Voice Ltd"
    assert len(reader.pages[0].images) == 1  # the logo
    assert "Page 1 of" in first
    assert _ink(png, (0.6, 0.0, 1.0, 0.12)) > 0.02  # the title and facts, top right, are there
    assert _ink(png, (0.0, 0.0, 0.35, 0.1)) > 0.05  # the logo, top left


def hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def eur(micros: int) -> str:
    return f"{micros / EUR:,.4f}"


def _ink(png: Path, box: tuple[float, float, float, float]) -> float:
    """The share of non-white pixels in a part of the page (fractions of its width and height)."""
    with Image.open(png) as image:
        width, height = image.size
        part = image.convert("L").crop((int(box[0] * width), int(box[1] * height), int(box[2] * width),
                                        int(box[3] * height)))
        histogram = part.histogram()
    return 1 - sum(histogram[240:]) / sum(histogram)


def test_pdf_detail_lists_every_call_in_order_and_sums_to_the_usage(server, issued, artifacts):
    invoice, rows = issued["invoice"], issued["rows"]
    pages = text_of(invoice_pdf(server["stubs"], invoice.name))
    detail = " ".join(pages[1:])
    assert len(pages) >= 5 and all(f"Call detail: invoice {invoice.number}" in p for p in pages[1:])
    assert "(times in Europe/Berlin)" in pages[1]
    # 08:00 UTC in January is 09:00 in Berlin; the local call and the refused inbound one share that minute.
    assert "2031-01-12 09:00:00 4930111222 004940123456 outbound 30 200 0.0100" in detail
    assert "alice-desk local 95 200 0.3000" in detail and "inbound 0 486 0.0000" in detail
    assert detail.count(" outbound ") == 240 and " 402 " not in detail  # a refused attempt is no call
    total_seconds = sum(r["billable_seconds"] for r in rows)
    usage = invoice.outbound.amount + invoice.local.amount + invoice.inbound.amount
    assert f"242 calls, {total_seconds:,} billable seconds, {eur(usage)} EUR" in pages[-1]
    render_png(invoice_pdf(server["stubs"], invoice.name), artifacts / "invoice-detail-page-2.png", page=2)
    # The CSV of a PDF-detail invoice is there too (an operator may want the rows in a spreadsheet).
    csv_chunks = server["stubs"].invoices.ExportInvoiceCdrsCsv(
        invoice_pb2.ExportInvoiceCdrsCsvRequest(name=invoice.name), metadata=server["stubs"].metadata)
    assert len(list(csv.DictReader(io.StringIO(b"".join(c.data for c in csv_chunks).decode())))) == 243


def test_receipts_print_the_payment_or_charge_and_the_balance_it_left(server, issued, artifacts):
    stubs = server["stubs"]
    payment = stubs.receipts.GetReceipt(receipt_pb2.GetReceiptRequest(name=issued["payment"].receipt),
                                        metadata=stubs.metadata)
    data = receipt_pdf(stubs, payment.name)
    render_png(data, artifacts / "receipt-payment.png")
    (page,) = text_of(data)
    for expected in ("RECEIPT", f"Receipt number {payment.number}", f"Payment {issued['payment'].name}",
                     "RECEIVED FROM", "Müller Telekom GmbH", "Payment received", "SEPA ref 2031-0117 40.0000",
                     "Received 40.0000 EUR", f"after this payment: {eur(payment.balance_after)} EUR",
                     "Northwind Voice Ltd", "Thank you for your payment"):
        assert expected in page, expected
    (charge_page,) = text_of(receipt_pdf(stubs, issued["charge"].receipt))
    assert "CHARGED TO" in charge_page and "Number porting fee 15.0000" in charge_page
    assert "Charged 15.0000 EUR" in charge_page and "Thank you" not in charge_page


def test_a_document_keeps_what_it_was_issued_with_and_renders_the_same_bytes(server, issued):
    stubs, invoice = server["stubs"], issued["invoice"]
    before = invoice_pdf(stubs, invoice.name)
    receipt_before = receipt_pdf(stubs, issued["payment"].receipt)
    set_company(stubs, name="Renamed Holdings plc", logo=logo_png("#aa2222"))
    stubs.accounts.UpdateAccount(account_pb2.UpdateAccountRequest(account=account_pb2.Account(
        name=issued["account"].name, profile=account_pb2.Profile(company="Someone Else AG"))),
        metadata=stubs.metadata)
    try:
        assert invoice_pdf(stubs, invoice.name) == before
        assert receipt_pdf(stubs, issued["payment"].receipt) == receipt_before
    finally:
        set_company(stubs, name="Northwind Voice Ltd", logo=logo_png())


def test_an_account_token_gets_its_own_documents_only(server, issued):
    stubs = server["stubs"]
    token = stubs.auth.Login(auth_pb2.LoginRequest(login=issued["account"].email, password=PASSWORD)).token
    mine = (("authorization", f"Bearer {token}"),)
    assert invoice_pdf(stubs, issued["invoice"].name, mine) == invoice_pdf(stubs, issued["invoice"].name)
    assert receipt_pdf(stubs, issued["payment"].receipt, mine).startswith(b"%PDF-")
    other = postpaid(server)
    paid = stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(account=other.name, amount=EUR),
                                      metadata=stubs.metadata)
    for rpc, name, what in ((invoice_pdf, "invoices/INV_999999", "invoice INV_999999"),
                            (receipt_pdf, paid.receipt, f"receipt {paid.receipt.removeprefix('receipts/')}")):
        result = failure(lambda r=rpc, n=name: r(stubs, n, mine))
        assert (result.code, result.message) == (grpc.StatusCode.NOT_FOUND, f"{what} not found")
    bad = failure(lambda: invoice_pdf(stubs, "INV_000001"))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["name"])


def test_names_in_any_script_and_hostile_text_render(server):
    stubs = server["stubs"]
    account = postpaid(server, generate_zero_invoice=True, invoice_note="‮reversed‬ \x7f ok " + "x" * 3000)
    stubs.accounts.UpdateAccount(account_pb2.UpdateAccountRequest(account=account_pb2.Account(
        name=account.name, profile=account_pb2.Profile(company="ООО «Телеком» Ελληνικά 😀", city="Zürich " * 30))),
        metadata=stubs.metadata)
    paid = stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(
        account=account.name, amount=EUR, note="Überweisung № 5 — ☎"), metadata=stubs.metadata)
    (page,) = text_of(receipt_pdf(stubs, paid.receipt))
    assert "ООО «Телеком» Ελληνικά" in page and "Überweisung № 5" in page
    (invoice,) = [i for i in generate(stubs, "2031-02-02T00:00:00") if i.account == account.name]
    pages = text_of(invoice_pdf(stubs, invoice.name))
    assert "reversed" in pages[0] and len(pages) >= 1


def test_the_logo_must_be_a_real_image_of_bounded_size(server):
    stubs = server["stubs"]
    for bad in (b"GIF89a not really", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, logo_png(size=(2400, 100)),
                b"\xff" * (600 * 1024)):
        result = failure(lambda b=bad: set_company(stubs, logo=b))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["company.logo"])
    for bad_field, value in (("email", "not an address"), ("address", "\n".join(["line"] * 9)),
                             ("tax_number", "x" * 65)):
        result = failure(lambda f=bad_field, v=value: set_company(stubs, **{f: v}))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [f"company.{bad_field}"])
    shown = set_company(stubs, logo=logo_png())
    assert len(shown.logo_sha256) == 64 and not shown.logo
    assert set_company(stubs, logo=b"").logo_sha256 == ""
    set_company(stubs, logo=logo_png())


def test_cli_writes_invoice_and_receipt_pdfs(server, issued, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home) | {"TOLLGATE_ADDRESS": server["server"].address,
                             "TOLLGATE_TOKEN": server["server"].admin_token}
    number = issued["invoice"].number
    target = tmp_path / "invoice.pdf"
    said = ok(run_cli(["invoices", "pdf", number, "-o", str(target)], env))
    assert said.startswith(str(target)) and "bytes" in said
    assert target.read_bytes() == invoice_pdf(server["stubs"], issued["invoice"].name)
    receipt = issued["payment"].receipt.removeprefix("receipts/")
    ok(run_cli(["receipts", "pdf", receipt, "-o", str(tmp_path / "r.pdf")], env))
    assert f"Receipt number {receipt}" in text_of((tmp_path / "r.pdf").read_bytes())[0]
    logo = tmp_path / "logo.png"
    logo.write_bytes(logo_png())
    shown = ok(run_cli(["company", "update", "--logo", str(logo), "--postal-address", "1 Main Street\\nCork",
                        "--tax-number", "IE1234567T"], env))
    assert "1 Main Street" in shown and "IE1234567T" in shown and "logo_sha256" in shown
    missing = run_cli(["invoices", "pdf", "INV_999999", "-o", str(tmp_path / "none.pdf")], env)
    assert missing.returncode == 4 and not (tmp_path / "none.pdf").exists()


def test_rendering_time_per_invoice(server, record_property):
    """A figure, not a limit: how long an invoice with 2,000 calls of PDF detail takes to render and send."""
    stubs = server["stubs"]
    account = postpaid(server, "2032-03-03T00:00:00", invoice_with_cdr=account_pb2.INVOICE_WITH_CDR_PDF)
    start = utc("2032-03-04T00:00:00")
    insert_cdrs(server["server"].dsn, [call(account, f"c{i}", start + timedelta(seconds=30 * i))
                                       for i in range(2_000)])
    (invoice,) = [i for i in generate(stubs, "2032-04-01T12:00:00") if i.account == account.name]
    began = time.perf_counter()
    data = invoice_pdf(stubs, invoice.name)
    seconds = time.perf_counter() - began
    record_property("invoice_pdf_2000_cdrs_seconds", round(seconds, 3))
    print(f"\ninvoice PDF with 2,000 CDRs: {seconds:.2f} s, {len(data):,} bytes, "
          f"{len(PdfReader(io.BytesIO(data)).pages)} pages")
    assert "2,000 calls" in text_of(data)[-1]
