"""`receipts …` commands: the receipt of every payment and charge (SPEC §10), listed, shown and as a PDF."""

import argparse
from collections.abc import Callable, Iterator

from admin import calls, cdrs, documents, output
from admin.errors import EXIT_OK
from tollgate.v1 import receipt_pb2, receipt_pb2_grpc

Stub = receipt_pb2_grpc.ReceiptServiceStub

SUMMARY_HEADERS = ["number", "account", "kind", "amount", "balance after", "time", "note"]
_KIND_PREFIX = "RECEIPT_KIND_"


def receipt_name(number: str) -> str:
    return calls.resource_name("receipts", number)


def kind_text(receipt: receipt_pb2.Receipt) -> str:
    known = receipt_pb2.ReceiptKind.DESCRIPTOR.values_by_number.get(receipt.kind)
    return known.name.removeprefix(_KIND_PREFIX) if known else str(receipt.kind)


def summary_row(receipt: receipt_pb2.Receipt, amount: Callable[[int], str]) -> list[str]:
    return [receipt.number, calls.last_segment(receipt.account), kind_text(receipt), amount(receipt.amount),
            amount(receipt.balance_after), receipt.create_time.ToJsonString(), receipt.note]


def iter_receipts(stub: Stub, args: argparse.Namespace) -> Iterator[receipt_pb2.Receipt]:
    request = receipt_pb2.ListReceiptsRequest(page_size=1000, filter=cdrs.filter_text(args))
    while True:
        response = stub.ListReceipts(request, **calls.options(args))
        yield from response.receipts
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


def list_(stub: Stub, args: argparse.Namespace) -> int:
    found = list(iter_receipts(stub, args))
    if args.json:
        output.print_json([output.to_dict(r) for r in found])
    else:
        amount = calls.amount_format(args)
        output.print_table((summary_row(r, amount) for r in found), SUMMARY_HEADERS)
    return EXIT_OK


def get(stub: Stub, args: argparse.Namespace) -> int:
    receipt = stub.GetReceipt(receipt_pb2.GetReceiptRequest(name=receipt_name(args.number)), **calls.options(args))
    if args.json:
        output.print_json(output.to_dict(receipt))
    else:
        amount = calls.amount_format(args)
        output.print_record(receipt, {"amount": amount, "balance_after": amount})
    return EXIT_OK


def pdf(stub: Stub, args: argparse.Namespace) -> int:
    name = receipt_name(args.number)
    chunks = stub.GetReceiptPdf(receipt_pb2.GetReceiptPdfRequest(name=name), **calls.options(args, min_timeout=60))
    return documents.write_pdf(chunks, args.output or calls.last_segment(name) + ".pdf")


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `receipts <verb>`; `common` carries the global options so they work after the verb too."""
    group = commands.add_parser("receipts", help="receipts of payments and charges", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: calls.Handler, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(handler=handler, stub=Stub)
        return parser

    p = verb("list", list_, "list receipts by number, following all pages")
    p.add_argument("--filter", metavar="F",
                   help="e.g. 'kind = CHARGE AND create_time >= 2031-01-01 AND amount < -10' (money in currency units)")
    p.add_argument("--account", metavar="N", help="only this account's receipts: ANDs `account = N` in")
    p = verb("get", get, "show one receipt, money as decimals")
    p.add_argument("number", metavar="NUMBER", help="RCT_000001 or receipts/RCT_000001")
    p = verb("pdf", pdf, "write the receipt as a PDF file")
    p.add_argument("number", metavar="NUMBER", help="RCT_000001 or receipts/RCT_000001")
    p.add_argument("-o", "--output", metavar="FILE", help="the file to write (default NUMBER.pdf; - for stdout)")
