"""Postpaid invoices (SPEC §10): InvoiceService and `tollgate-admin invoices`, against the real services.

Accounts are created through the API, then their created_at is moved to 2031 (the first period starts there),
so that the control service's own hourly run (which uses the real clock) never invoices them. CDRs are inserted
straight into `cdrs`, as the ledger writes them. GenerateInvoices invoices every account of the shared database
that is due, so each test looks at its own accounts' invoices only.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from control import db
from control.billing import invoices
from control.billing.worker import BillingWorker, Settings
from tests.helpers import clean_env, failure, ok, ok_json, run_cli, unique_email, unique_number
from tests.test_cdrs import cdr, insert
from tollgate.v1 import account_pb2, auth_pb2, company_pb2, invoice_pb2

PASSWORD = "invoice-reader-pass"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def postpaid(admin, dsn: str, created: str = "2031-01-10T00:00:00", *, timezone: str = "UTC",
             billing_day: int = 1, prepaid: bool = False, **billing) -> account_pb2.Account:
    mode = account_pb2.PREPAID if prepaid else account_pb2.POSTPAID
    account = account_pb2.Account(
        account_number=unique_number(), email=unique_email("inv"), password=PASSWORD,
        profile=account_pb2.Profile(timezone=timezone),
        billing=account_pb2.Billing(account_type=mode, billing_day=billing_day, **billing))
    made = admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account), metadata=admin.metadata)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE accounts SET created_at = %s WHERE account_number = %s",
                     (utc(created), made.account_number))
    return made


def generate(admin, as_of: str, metadata: tuple | None = None) -> list[invoice_pb2.Invoice]:
    stamp = Timestamp()
    stamp.FromDatetime(utc(as_of))
    return list(admin.invoices.GenerateInvoices(invoice_pb2.GenerateInvoicesRequest(as_of=stamp),
                                                metadata=metadata or admin.metadata).invoices)


def of(made: list[invoice_pb2.Invoice], account: account_pb2.Account) -> list[invoice_pb2.Invoice]:
    return [i for i in made if i.account == account.name]


def call(account: account_pb2.Account, call_id: str, setup: str, **overrides) -> dict:
    when = utc(setup)
    return cdr(account.account_number, call_id, 0, setup_time=when, answer_time=when,
               end_time=when + timedelta(seconds=60), **overrides)


def export_ids(admin, invoice: invoice_pb2.Invoice, metadata: tuple | None = None) -> list[dict]:
    chunks = admin.invoices.ExportInvoiceCdrsCsv(invoice_pb2.ExportInvoiceCdrsCsvRequest(name=invoice.name),
                                                 metadata=metadata or admin.metadata)
    return list(csv.DictReader(io.StringIO(b"".join(c.data for c in chunks).decode(), newline="")))


def number_of(invoice: invoice_pb2.Invoice) -> int:
    assert invoice.number.startswith("INV_") and len(invoice.number) == 10
    return int(invoice.number[4:])


# --------------------------------------------------------------------------------------------- periods


@pytest.mark.parametrize(("now", "zone", "day", "expected"), [
    ("2031-02-01T09:00:00", "America/Los_Angeles", 1, "2031-02-01T08:00:00"),  # PST, UTC-8
    ("2031-02-01T07:59:59", "America/Los_Angeles", 1, "2031-01-01T08:00:00"),  # not yet midnight there
    ("2031-02-01T09:00:00", "Pacific/Auckland", 1, "2031-01-31T11:00:00"),  # NZDT, UTC+13
    ("2031-07-15T00:00:00", "Pacific/Auckland", 15, "2031-07-14T12:00:00"),  # NZST, UTC+12
    ("2031-01-04T23:00:00", "UTC", 5, "2030-12-05T00:00:00"),  # across the year
])
def test_period_end_is_the_billing_day_midnight_in_the_accounts_zone(now, zone, day, expected):
    assert invoices.period_end(utc(now), zone, day) == utc(expected)


@pytest.mark.parametrize(("taxable", "percent", "tax"), [
    (7_291_000, "7.25", 528_598),  # 528,597.5 rounds half up
    (1, "50", 1), (1, "49.9999", 0), (10**12, "100", 10**12), (123, "0", 0),
])
def test_tax_is_rounded_once_half_up_to_the_micro(taxable, percent, tax):
    assert invoices.tax_of(taxable, Decimal(percent)) == tax


def test_timezones_decide_the_period_and_generating_twice_makes_nothing(admin, control_server):
    dsn = control_server.dsn
    auckland = postpaid(admin, dsn, "2031-01-15T00:00:00", timezone="Pacific/Auckland")
    los_angeles = postpaid(admin, dsn, "2031-01-15T00:00:00", timezone="America/Los_Angeles")
    for account in (auckland, los_angeles):
        insert(dsn, [call(account, "before", "2031-01-31T10:30:00"), call(account, "after", "2031-01-31T11:30:00")])

    assert of(generate(admin, "2031-01-31T10:59:00"), auckland) == []  # midnight in Auckland is 11:00Z
    made = generate(admin, "2031-02-01T09:00:00")
    (nz,), (la,) = of(made, auckland), of(made, los_angeles)
    assert nz.period_end.ToDatetime(tzinfo=UTC) == utc("2031-01-31T11:00:00")
    assert la.period_end.ToDatetime(tzinfo=UTC) == utc("2031-02-01T08:00:00")
    assert nz.period_start.ToDatetime(tzinfo=UTC) == utc("2031-01-15T00:00:00")  # the account's creation
    assert (nz.outbound.calls, la.outbound.calls) == (1, 2)
    assert [r["call_id"] for r in export_ids(admin, nz)] == ["before"]
    for invoice in (nz, la):
        assert (invoice.issue_date.year, invoice.issue_date.month, invoice.issue_date.day) == (2031, 2, 1)
        assert (invoice.due_date.month, invoice.due_date.day) == (2, 16)
        assert invoice.timezone in ("Pacific/Auckland", "America/Los_Angeles")
    assert generate(admin, "2031-02-01T09:00:00") == []  # idempotent: nothing new for anyone
    (nz_next,) = of(generate(admin, "2031-03-01T00:00:00"), auckland)  # 11:00Z on Feb 28 in Auckland
    assert [r["call_id"] for r in export_ids(admin, nz_next)] == ["after"]
    assert nz_next.period_start == nz.period_end


# --------------------------------------------------------------------------------------------- numbering


def test_numbers_are_sequential_without_gaps_and_a_rollback_gives_them_back(admin, control_server):
    dsn = control_server.dsn
    accounts = [postpaid(admin, dsn, "2032-01-03T00:00:00", generate_zero_invoice=True) for _ in range(3)]
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT last_number FROM invoice_counter").fetchone()[0]
        with conn.transaction(force_rollback=True):  # as if the generating transaction failed at its end
            rolled_back = invoices.generate_due(conn, utc("2032-02-01T00:00:00"))
    assert len(rolled_back) >= 3
    made = generate(admin, "2032-02-01T00:00:00")
    numbers = [number_of(i) for i in made]
    assert numbers == list(range(before + 1, before + 1 + len(made)))  # across accounts, none skipped
    assert [r["number"] for r in rolled_back] == [i.number for i in made]  # the rolled-back ones were reused
    assert sorted(a.name for a in accounts) == sorted(i.account for i in made if i.account in
                                                      {a.name for a in accounts})


# --------------------------------------------------------------------------------------------- CDRs


def test_every_cdr_lands_on_exactly_one_invoice_and_a_late_one_on_the_next(admin, control_server):
    dsn = control_server.dsn
    account = postpaid(admin, dsn, "2033-01-10T00:00:00", billing_day=5)
    insert(dsn, [call(account, "c1", "2033-01-20T00:00:00"),
                 call(account, "c2", "2033-02-04T23:59:59", direction="local"),
                 call(account, "c3", "2033-02-05T00:00:00")])  # the boundary: next period
    (first,) = of(generate(admin, "2033-02-05T00:00:00"), account)
    insert(dsn, [call(account, "late", "2033-02-01T00:00:00")])  # the ledger was behind
    assert of(generate(admin, "2033-02-06T00:00:00"), account) == []
    (second,) = of(generate(admin, "2033-03-05T01:00:00"), account)

    assert [r["call_id"] for r in export_ids(admin, first)] == ["c1", "c2"]
    assert [r["call_id"] for r in export_ids(admin, second)] == ["late", "c3"]
    assert (first.outbound.calls, first.local.calls, second.outbound.calls) == (1, 1, 2)
    with psycopg.connect(dsn) as conn:
        owners = conn.execute("SELECT i.number, count(*) FROM cdrs c JOIN invoices i ON i.id = c.invoice_id "
                              "WHERE c.account_number = %s GROUP BY 1 ORDER BY 1", (account.account_number,))
        assert owners.fetchall() == [(first.number, 2), (second.number, 2)]
        assert conn.execute("SELECT count(*) FROM cdrs WHERE account_number = %s AND invoice_id IS NULL",
                            (account.account_number,)).fetchone()[0] == 0


# --------------------------------------------------------------------------------------------- money


@pytest.fixture
def tax_percent(admin):
    """The company charges 7.25% tax for the test, and none afterwards."""

    def set_percent(value: str) -> None:
        mask = field_mask_pb2.FieldMask(paths=["tax_percent"])
        admin.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
            company=company_pb2.Company(tax_percent=value), update_mask=mask), metadata=admin.metadata)

    set_percent("7.25")
    yield
    set_percent("0")


def test_totals_per_call_type_charges_payments_and_tax_add_up(admin, control_server, tax_percent):
    dsn = control_server.dsn
    account = postpaid(admin, dsn, "2034-01-01T00:00:00", tax_number="DE123", invoice_note="net 15, thanks")
    insert(dsn, [
        call(account, "o1", "2034-01-02T00:00:00", billable_seconds=60, customer_cost=12_000),
        call(account, "o2", "2034-01-03T00:00:00", billable_seconds=120, customer_cost=24_000),
        call(account, "l1", "2034-01-04T00:00:00", direction="local", billable_seconds=30, customer_cost=5_000),
        call(account, "i1", "2034-01-05T00:00:00", direction="inbound", billable_seconds=0, customer_cost=0,
             sip_code=486),
    ])
    for amount in (50_000_000, -7_250_000):
        admin.accounts.PostPayment(account_pb2.PostPaymentRequest(account=account.name, amount=amount),
                                   metadata=admin.metadata)
    (invoice,) = of(generate(admin, "2034-02-01T00:00:00"), account)
    usage = [(u.calls, u.billable_seconds, u.amount) for u in (invoice.outbound, invoice.local, invoice.inbound)]
    assert usage == [(2, 180, 36_000), (1, 30, 5_000), (1, 0, 0)]
    assert (invoice.charges, invoice.payments, invoice.tax_percent) == (7_250_000, 50_000_000, "7.25")
    assert invoice.tax_amount == 528_598  # (41,000 + 7,250,000) x 7.25% = 528,597.5, half up
    assert invoice.total == 41_000 + 7_250_000 + 528_598
    assert (invoice.tax_number, invoice.invoice_note) == ("DE123", "net 15, thanks")
    assert admin.invoices.GetInvoice(invoice_pb2.GetInvoiceRequest(name=invoice.name),
                                     metadata=admin.metadata) == invoice


def test_tax_percent_is_validated(admin):
    for bad in ("101", "-1", "abc", "1.00001"):
        result = failure(lambda b=bad: admin.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
            company=company_pb2.Company(tax_percent=b), update_mask=field_mask_pb2.FieldMask(paths=["tax_percent"])),
            metadata=admin.metadata))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["company.tax_percent"]), bad


def test_a_zero_invoice_only_with_generate_zero_invoice_and_none_for_prepaid(admin, control_server):
    dsn = control_server.dsn
    quiet = postpaid(admin, dsn, "2035-01-01T00:00:00")
    zero = postpaid(admin, dsn, "2035-01-01T00:00:00", generate_zero_invoice=True)
    paid_only = postpaid(admin, dsn, "2035-01-01T00:00:00")
    prepaid = postpaid(admin, dsn, "2035-01-01T00:00:00", prepaid=True)
    admin.accounts.PostPayment(account_pb2.PostPaymentRequest(account=paid_only.name, amount=1_000_000),
                               metadata=admin.metadata)
    insert(dsn, [call(prepaid, "p1", "2035-01-05T00:00:00"), call(quiet, "free", "2035-01-05T00:00:00",
                                                                   customer_cost=0, billable_seconds=0)])
    made = generate(admin, "2035-02-01T00:00:00")
    assert of(made, quiet) == [] and of(made, paid_only) == [] and of(made, prepaid) == []
    (empty,) = of(made, zero)
    assert (empty.total, empty.outbound.calls) == (0, 0)
    # The free call waits for the first invoice that is made: it stays on exactly one.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT invoice_id FROM cdrs WHERE account_number = %s",
                            (quiet.account_number,)).fetchone()[0] is None


# --------------------------------------------------------------------------------------------- reading


def login(admin, email: str) -> tuple:
    token = admin.auth.Login(auth_pb2.LoginRequest(login=email, password=PASSWORD)).token
    return (("authorization", f"Bearer {token}"),)


def list_all(admin, filter_text: str = "", metadata: tuple | None = None, page_size: int = 0) -> list:
    found, token = [], ""
    for _ in range(1_000):
        page = admin.invoices.ListInvoices(invoice_pb2.ListInvoicesRequest(
            filter=filter_text, page_token=token, page_size=page_size), metadata=metadata or admin.metadata)
        found += page.invoices
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("paging never ended")


@pytest.fixture(scope="module")
def two_customers(admin, control_server) -> dict:
    dsn = control_server.dsn
    mine = postpaid(admin, dsn, "2036-01-01T00:00:00", invoice_with_cdr=account_pb2.INVOICE_WITH_CDR_CSV)
    theirs = postpaid(admin, dsn, "2036-01-01T00:00:00", invoice_with_cdr=account_pb2.INVOICE_WITH_CDR_PDF)
    for account in (mine, theirs):
        insert(dsn, [call(account, f"m{month}", f"2036-{month:02d}-02T00:00:00", provider="P0carrier",
                          provider_cost=4_200) for month in (1, 2, 3)])
    for as_of in ("2036-02-01T00:00:00", "2036-03-01T00:00:00", "2036-04-01T00:00:00"):
        generate(admin, as_of)
    return {"mine": mine, "theirs": theirs, "token": login(admin, mine.email)}


def test_listing_filters_and_pages_in_number_order(admin, two_customers):
    mine = two_customers["mine"]
    listed = list_all(admin, f"account = {mine.account_number}", page_size=1)
    assert len(listed) == 3 and [number_of(i) for i in listed] == sorted(number_of(i) for i in listed)
    assert list_all(admin, f"number = {listed[1].number}") == [listed[1]]
    assert [i.number for i in list_all(admin, f"account = {mine.account_number} AND issue_date >= 2036-03-01")] \
        == [listed[1].number, listed[2].number]
    bad = failure(lambda: admin.invoices.ListInvoices(invoice_pb2.ListInvoicesRequest(filter="colour = red"),
                                                      metadata=admin.metadata))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"])


def test_an_account_token_sees_only_its_own_invoices_and_side(admin, two_customers):
    mine, theirs, token = two_customers["mine"], two_customers["theirs"], two_customers["token"]
    own = list_all(admin, metadata=token)
    assert len(own) == 3 and {i.account for i in own} == {mine.name}
    refused = failure(lambda: list_all(admin, f"account = {theirs.account_number}", metadata=token))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED  # not an empty list that reads "no invoices"
    other = list_all(admin, f"account = {theirs.account_number}")[0]
    # Another account's invoice is NOT_FOUND, word for word like a number nobody has (SPEC §11): no invoice
    # count to read off the answers.
    missing = "invoices/INV_999999"
    for name in (other.name, missing):
        for rpc in (lambda n=name: admin.invoices.GetInvoice(invoice_pb2.GetInvoiceRequest(name=n), metadata=token),
                    lambda n=name: export_ids(admin, invoice_pb2.Invoice(name=n), metadata=token)):
            result = failure(rpc)
            assert result.code == grpc.StatusCode.NOT_FOUND
            assert result.message == f"invoice {name.removeprefix('invoices/')} not found"
    assert failure(lambda: generate(admin, "2036-05-01T00:00:00", metadata=token)).code == \
        grpc.StatusCode.PERMISSION_DENIED
    rows = export_ids(admin, own[0], metadata=token)
    assert [(r["call_id"], r["provider"], r["provider_cost"]) for r in rows] == [("m1", "", "")]  # hidden: empty
    assert [(r["provider"], r["provider_cost"]) for r in export_ids(admin, own[0])] == [("P0carrier", "0.0042")]


def test_csv_detail_also_for_pdf_invoices_and_unknown_names_are_errors(admin, two_customers):
    pdf = list_all(admin, f"account = {two_customers['theirs'].account_number}")[0]
    assert pdf.invoice_with_cdr == account_pb2.INVOICE_WITH_CDR_PDF
    assert [r["call_id"] for r in export_ids(admin, pdf)] == ["m1"]  # the PDF has it as pages, the CSV too
    missing = failure(lambda: admin.invoices.GetInvoice(invoice_pb2.GetInvoiceRequest(name="invoices/INV_999999999"),
                                                        metadata=admin.metadata))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    bad = failure(lambda: admin.invoices.GetInvoice(invoice_pb2.GetInvoiceRequest(name="INV_000001"),
                                                    metadata=admin.metadata))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["name"])


# --------------------------------------------------------------------------------------------- CLI


def test_cli_generates_lists_shows_and_exports(cli, admin, control_server, tmp_path: Path, company_decimals):
    company_decimals(2)
    account = postpaid(admin, control_server.dsn, "2037-01-01T00:00:00", tax_number="VAT-9")
    insert(control_server.dsn, [call(account, "x1", "2037-01-02T00:00:00", customer_cost=1_230_000)])
    made = ok_json(cli("invoices", "generate", "--as-of", "2037-02-01T00:00:00Z", "--json"))
    (invoice,) = [i for i in made if i["account"] == account.name]
    assert invoice["total"] == "1230000" and invoice["issue_date"] == {"year": 2037, "month": 2, "day": 1}

    table = ok(cli("invoices", "list", "--account", account.account_number)).splitlines()
    assert "number" in table[0] and table[2].split()[0] == invoice["number"] and table[2].split()[-1] == "1.23"
    shown = ok(cli("invoices", "get", invoice["number"]))
    assert "1 calls, 60 s, 1.23" in shown and "VAT-9" in shown and "2037-02-16" in shown
    target = tmp_path / "detail.csv"
    assert ok(cli("invoices", "cdrs", invoice["number"], "-o", str(target))) == ""
    assert [r["call_id"] for r in csv.DictReader(io.StringIO(target.read_text(), newline=""))] == ["x1"]

    bad = cli("invoices", "generate", "--as-of", "yesterday")
    assert bad.returncode != 0 and "--as-of" in bad.stderr


# --------------------------------------------------------------------------------------------- automatic run


def test_the_billing_worker_invoices_by_itself_at_most_once_an_hour(admin, control_server):
    dsn = control_server.dsn
    overdue = postpaid(admin, dsn, "2020-01-01T00:00:00", generate_zero_invoice=True)  # due by the real clock
    pool = db.open_pool(dsn, 2)
    ledger = BillingWorker(pool, dsn, control_server.redis_url, control_server.keys.namespace, Settings())
    now = datetime.now(UTC)
    try:
        assert ledger.invoice_if_due() >= 1
        # One invoice per billing day (the 1st) since January 2020: the catch-up of a service down for years.
        made = list_all(admin, f"account = {overdue.account_number}")
        assert len(made) == (now.year - 2020) * 12 + now.month - 1
        assert made[-1].period_end.ToDatetime(tzinfo=UTC) == invoices.period_end(now, "UTC", 1)
        later = postpaid(admin, dsn, "2020-01-01T00:00:00", generate_zero_invoice=True)
        assert ledger.invoice_if_due() == 0  # within the hour: not run again
        assert list_all(admin, f"account = {later.account_number}") == []
    finally:
        ledger.stop()
        pool.close()


# --------------------------------------------------------------------------------------------- catching up


def generate_response(admin, as_of: str, account: str = "", metadata: tuple | None = None
                      ) -> invoice_pb2.GenerateInvoicesResponse:
    stamp = Timestamp()
    stamp.FromDatetime(utc(as_of))
    return admin.invoices.GenerateInvoices(invoice_pb2.GenerateInvoicesRequest(as_of=stamp, account=account),
                                           metadata=metadata or admin.metadata)


def period(invoice: invoice_pb2.Invoice) -> tuple[str, str]:
    return (invoice.period_start.ToDatetime(tzinfo=UTC).isoformat()[:10],
            invoice.period_end.ToDatetime(tzinfo=UTC).isoformat()[:10])


def test_missed_billing_days_make_one_invoice_per_period_in_order_without_gaps(admin, control_server):
    dsn = control_server.dsn
    every = postpaid(admin, dsn, "2038-01-10T00:00:00", billing_day=5, generate_zero_invoice=True)
    usage_only = postpaid(admin, dsn, "2038-01-10T00:00:00", billing_day=5)
    for account in (every, usage_only):  # calls in January, February and April; none in March
        insert(dsn, [call(account, f"{month}", f"2038-{month:02d}-20T00:00:00") for month in (1, 2, 4)])
    made = generate(admin, "2038-05-06T00:00:00")  # the service was down since January
    mine = [i for i in made if i.account in (every.name, usage_only.name)]
    assert [period(i) for i in of(made, every)] == [("2038-01-10", "2038-02-05"), ("2038-02-05", "2038-03-05"),
                                                   ("2038-03-05", "2038-04-05"), ("2038-04-05", "2038-05-05")]
    # Without generate_zero_invoice the empty March joins April's invoice, as on any billing day.
    assert [period(i) for i in of(made, usage_only)] == [("2038-01-10", "2038-02-05"),
                                                        ("2038-02-05", "2038-03-05"), ("2038-03-05", "2038-05-05")]
    assert [i.outbound.calls for i in of(made, every)] == [1, 1, 0, 1]
    # Numbers follow the periods across accounts (an auditor reads them in date order), without a gap (the
    # run invoiced other tests' accounts too).
    numbers = [number_of(i) for i in made]
    assert numbers == list(range(numbers[0], numbers[0] + len(made)))
    assert [i.period_end.ToDatetime() for i in made] == sorted(i.period_end.ToDatetime() for i in made)
    assert len(mine) == 7
    again = generate(admin, "2038-05-06T00:00:00")  # (older tests' accounts may still be catching up)
    assert of(again, every) == [] and of(again, usage_only) == []


def test_a_long_catch_up_goes_on_at_the_next_run(admin, control_server, monkeypatch):
    monkeypatch.setattr(invoices, "MAX_PERIODS_PER_RUN", 3)
    account = postpaid(admin, control_server.dsn, "2039-01-01T00:00:00", generate_zero_invoice=True)
    first = of(generate_response(admin, "2039-08-01T00:00:00", account.name).invoices, account)
    second = of(generate_response(admin, "2039-08-01T00:00:00", account.name).invoices, account)
    assert [period(i)[1] for i in first + second] == [f"2039-{m:02d}-01" for m in range(2, 8)]


def test_generate_for_one_account_only(admin, control_server):
    dsn = control_server.dsn
    chosen = postpaid(admin, dsn, "2040-01-01T00:00:00", generate_zero_invoice=True)
    other = postpaid(admin, dsn, "2040-01-01T00:00:00", generate_zero_invoice=True)
    response = generate_response(admin, "2040-02-01T00:00:00", f"accounts/{chosen.account_number.lower()}")
    assert [i.account for i in response.invoices] == [chosen.name]
    assert (list(response.not_invoiced), response.not_invoiced_count) == ([], 0)
    assert of(generate(admin, "2040-02-01T00:00:00"), other)  # still due: nobody invoiced it
    prepaid = postpaid(admin, dsn, prepaid=True)
    for name, code, field in ((prepaid.name, grpc.StatusCode.FAILED_PRECONDITION, []),
                              ("accounts/NOSUCH1", grpc.StatusCode.NOT_FOUND, []),
                              ("NOSUCH1", grpc.StatusCode.INVALID_ARGUMENT, ["account"])):
        result = failure(lambda n=name: generate_response(admin, "2040-02-01T00:00:00", n))
        assert (result.code, result.fields) == (code, field), name


def test_nothing_due_says_which_accounts_and_their_next_billing_day(admin, control_server, cli):
    dsn = control_server.dsn
    waiting = postpaid(admin, dsn, "2041-01-20T00:00:00", timezone="America/New_York", billing_day=3)
    quiet = postpaid(admin, dsn, "2041-01-01T00:00:00", billing_day=10)
    response = generate_response(admin, "2041-01-25T00:00:00", waiting.name)
    assert list(response.invoices) == [] and response.not_invoiced_count == 1
    (reason,) = response.not_invoiced
    assert (reason.account, reason.reason, reason.billing_day) == (waiting.name, reason.NOT_DUE, 3)
    assert reason.next_invoice_time.ToDatetime(tzinfo=UTC) == utc("2041-02-03T05:00:00")  # midnight in New York
    assert (reason.next_invoice_date.month, reason.next_invoice_date.day, reason.timezone) == \
        (2, 3, "America/New_York")
    (nothing,) = generate_response(admin, "2041-02-11T00:00:00", quiet.name).not_invoiced
    assert (nothing.reason, nothing.next_invoice_time.ToDatetime(tzinfo=UTC)) == \
        (nothing.NOTHING_TO_INVOICE, utc("2041-03-10T00:00:00"))

    said = ok(cli("invoices", "generate", "--account", waiting.account_number, "--as-of", "2041-01-25T00:00:00Z"))
    assert "No invoice made" in said
    row = next(line for line in said.splitlines() if line.startswith(waiting.account_number))
    assert row.split()[1:4] == ["3", "2041-02-03", "America/New_York"] and "no billing day yet" in row
    said = ok(cli("invoices", "generate", "--account", quiet.account_number, "--as-of", "2041-02-11T00:00:00Z"))
    assert "nothing to invoice" in said and "2041-03-10" in said


def test_the_readme_invoice_tour_works_on_a_fresh_stack(server_factory, tmp_path: Path):
    """README "A quick tour of the CLI", the invoices block, on a database of its own: INV_000001 must exist."""
    server = server_factory()
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home) | {"TOLLGATE_ADDRESS": server.address, "TOLLGATE_TOKEN": server.admin_token}

    def tga(*args: str) -> str:
        return ok(run_cli(list(args), env))

    # The demo customer of scripts/demo_data.sh, created now (as on a fresh stack).
    tga("accounts", "create", "--number", "9000000002", "--email", "ops@customer.example.com", "--postpaid",
        "--credit-limit", "100.00", "--timezone", "America/New_York", "--company", "Demo Customer Inc")
    said = tga("invoices", "generate")
    assert "No invoice made" in said and "9000000002" in said and "no billing day yet" in said
    tga("accounts", "pay", "9000000002", "10.00", "--charge", "--note", "Monthly port fee")
    today = datetime.now(UTC)
    next_month = (today.year + today.month // 12, today.month % 12 + 1)
    made = tga("invoices", "generate", "--account", "9000000002", "--as-of",
               f"{next_month[0]}-{next_month[1]:02d}-02T00:00:00Z")
    assert "INV_000001" in made
    shown = tga("invoices", "get", "INV_000001")
    assert "10.00" in shown and "9000000002" in shown
    assert tga("invoices", "pdf", "INV_000001", "-o", str(tmp_path / "inv1.pdf")).startswith(str(tmp_path))
    assert (tmp_path / "inv1.pdf").read_bytes().startswith(b"%PDF-")
    assert "RCT_000001" in tga("receipts", "list", "--account", "9000000002")
