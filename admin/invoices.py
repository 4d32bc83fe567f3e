"""`invoices …` commands: postpaid invoices (SPEC §10), generated, listed, shown, and their CDRs as CSV."""

import argparse
from collections.abc import Callable, Iterator

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2

from admin import calls, cdrs, documents, output
from admin.accounts import CSV_NOTE
from admin.errors import EXIT_OK, UsageError
from tollgate.v1 import account_pb2, invoice_pb2, invoice_pb2_grpc

Stub = invoice_pb2_grpc.InvoiceServiceStub

SUMMARY_HEADERS = ["number", "account", "period start", "period end", "issue date", "due date", "total"]
DIRECTIONS = ("outbound", "local", "inbound")
_CDR_PREFIX = "INVOICE_WITH_CDR_"


def invoice_name(number: str) -> str:
    return calls.resource_name("invoices", number)


def _date(value: date_pb2.Date) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def summary_row(invoice: invoice_pb2.Invoice, amount: Callable[[int], str]) -> list[str]:
    return [invoice.number, calls.last_segment(invoice.account), invoice.period_start.ToJsonString(),
            invoice.period_end.ToJsonString(), _date(invoice.issue_date), _date(invoice.due_date),
            amount(invoice.total)]


def detail_rows(invoice: invoice_pb2.Invoice, amount: Callable[[int], str]) -> list[tuple[str, str]]:
    """The invoice as people read it: money as decimals, usage one line per call type."""
    rows = [("number", invoice.number), ("account", calls.last_segment(invoice.account)),
            ("period", f"{invoice.period_start.ToJsonString()} .. {invoice.period_end.ToJsonString()}"),
            ("issue date", _date(invoice.issue_date)), ("due date", _date(invoice.due_date)),
            ("timezone", invoice.timezone)]
    for direction in DIRECTIONS:
        usage = getattr(invoice, direction)
        rows.append((f"{direction} usage",
                     f"{usage.calls} calls, {usage.billable_seconds} s, {amount(usage.amount)}"))
    rows += [("charges", amount(invoice.charges)), ("payments", amount(invoice.payments)),
             ("tax", f"{amount(invoice.tax_amount)} ({invoice.tax_percent}%)"),
             ("total", amount(invoice.total)), ("tax number", invoice.tax_number),
             ("invoice note", invoice.invoice_note),
             ("CDR detail", account_pb2.InvoiceWithCdr.Name(invoice.invoice_with_cdr).removeprefix(_CDR_PREFIX))]
    return rows


def show_many(invoices: list[invoice_pb2.Invoice], args: argparse.Namespace) -> None:
    if args.json:
        output.print_json([output.to_dict(i) for i in invoices])
    else:
        amount = calls.amount_format(args)
        output.print_table((summary_row(i, amount) for i in invoices), SUMMARY_HEADERS)


def _as_of(text: str) -> Timestamp:
    stamp = Timestamp()
    try:
        stamp.FromJsonString(text)
    except ValueError:
        raise UsageError(f"--as-of takes an RFC 3339 time like 2031-02-01T00:00:00Z, not {text!r}") from None
    return stamp


_WHY = {invoice_pb2.NotInvoiced.NOT_DUE: "no billing day yet since the last invoice (or the account's creation)",
        invoice_pb2.NotInvoiced.NOTHING_TO_INVOICE: "nothing to invoice (total 0, generate_zero_invoice off)"}


def generate(stub: Stub, args: argparse.Namespace) -> int:
    request = invoice_pb2.GenerateInvoicesRequest(account=calls.account_name(args.account) if args.account else "")
    if args.as_of:
        request.as_of.CopyFrom(_as_of(args.as_of))
    response = stub.GenerateInvoices(request, **calls.options(args, min_timeout=60))
    if args.json or response.invoices:
        show_many(list(response.invoices), args)
    else:
        explain_nothing_made(response, args.as_of or "now")
    return EXIT_OK


def explain_nothing_made(response: invoice_pb2.GenerateInvoicesResponse, as_of: str) -> None:
    """Which postpaid accounts got nothing, why, and when their next invoice is due."""
    if not response.not_invoiced_count:
        print(f"No invoice made (as of {as_of}): no postpaid account to invoice.")
        return
    print(f"No invoice made (as of {as_of}). The next invoice of each postpaid account:")
    rows = [[calls.last_segment(n.account), str(n.billing_day), _date(n.next_invoice_date), n.timezone,
             _WHY.get(n.reason, "")] for n in response.not_invoiced]
    output.print_table(rows, ["account", "billing day", "next invoice", "timezone", "why none now"])
    more = response.not_invoiced_count - len(response.not_invoiced)
    if more > 0:
        print(f"... and {more} more account(s).")


def iter_invoices(stub: Stub, args: argparse.Namespace) -> Iterator[invoice_pb2.Invoice]:
    request = invoice_pb2.ListInvoicesRequest(page_size=1000, filter=cdrs.filter_text(args))
    while True:
        response = stub.ListInvoices(request, **calls.options(args))
        yield from response.invoices
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


def list_(stub: Stub, args: argparse.Namespace) -> int:
    show_many(list(iter_invoices(stub, args)), args)
    return EXIT_OK


def get(stub: Stub, args: argparse.Namespace) -> int:
    invoice = stub.GetInvoice(invoice_pb2.GetInvoiceRequest(name=invoice_name(args.number)), **calls.options(args))
    if args.json:
        output.print_json(output.to_dict(invoice))
    else:
        for key, value in detail_rows(invoice, calls.amount_format(args)):
            print(f"{key:<14} {value}")
    return EXIT_OK


def export_cdrs(stub: Stub, args: argparse.Namespace) -> int:
    request = invoice_pb2.ExportInvoiceCdrsCsvRequest(name=invoice_name(args.number))
    return cdrs.write_export(stub.ExportInvoiceCdrsCsv(request, **calls.options(args)), args.output)


def pdf(stub: Stub, args: argparse.Namespace) -> int:
    name = invoice_name(args.number)
    chunks = stub.GetInvoicePdf(invoice_pb2.GetInvoicePdfRequest(name=name), **calls.options(args, min_timeout=120))
    return documents.write_pdf(chunks, args.output or calls.last_segment(name) + ".pdf")


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `invoices <verb>`; `common` carries the global options so they work after the verb too."""
    group = commands.add_parser("invoices", help="postpaid invoices", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: calls.Handler, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(handler=handler, stub=Stub)
        return parser

    p = verb("generate", generate, "make every invoice due now (or at --as-of), one per missed billing period; "
             "prints the new ones, or when each account's next one is due")
    p.add_argument("--as-of", metavar="RFC3339", help="as if it were this time, e.g. 2031-02-01T00:00:00Z")
    p.add_argument("--account", metavar="N", help="only this postpaid account")
    p = verb("list", list_, "list invoices by number, following all pages")
    p.add_argument("--filter", metavar="F",
                   help="e.g. 'issue_date >= 2031-01-01 AND total > 100.50' (money in currency units)")
    p.add_argument("--account", metavar="N", help="only this account's invoices: ANDs `account = N` in")
    p = verb("get", get, "show one invoice, money as decimals")
    p.add_argument("number", metavar="NUMBER", help="INV_000001 or invoices/INV_000001")
    p = verb("pdf", pdf, "write the invoice as a PDF file (with its call detail when the account's is PDF)")
    p.add_argument("number", metavar="NUMBER", help="INV_000001 or invoices/INV_000001")
    p.add_argument("-o", "--output", metavar="FILE", help="the file to write (default NUMBER.pdf; - for stdout)")
    p = verb("cdrs", export_cdrs, "write the invoice's CDRs as CSV")
    p.description = f"write the invoice's CDRs as CSV, as `cdrs export` does. {CSV_NOTE}."
    p.add_argument("number", metavar="NUMBER", help="INV_000001 or invoices/INV_000001")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
