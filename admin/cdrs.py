"""`cdrs …` commands: the call detail records the ledger wrote (SPEC §9), listed or exported as CSV."""

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from admin import calls, fields, output
from admin.accounts import CSV_NOTE, write_chunks
from admin.errors import EXIT_OK
from tollgate.v1 import account_pb2, cdr_pb2, cdr_pb2_grpc

Stub = cdr_pb2_grpc.CdrServiceStub

SUMMARY_HEADERS = [
    "call id",
    "account",
    "setup time",
    "destination sent",
    "trunk",
    "billable s",
    "SIP code",
    "ended",
]
# (header, field): unset in a CDR when its caller may not see that side's money (an account token).
COST_COLUMNS = (("customer cost", "customer_cost"), ("provider cost", "provider_cost"))


def filter_text(args: argparse.Namespace) -> str:
    """--filter, with `account = N` ANDed in for --account (the language has only AND, so appending is exact)."""
    terms = [args.filter] if args.filter else []
    if args.account:
        quoted = args.account.replace("\\", "\\\\").replace('"', '\\"')
        terms.append(f'account = "{quoted}"')
    return " AND ".join(terms)


def iter_cdrs(stub: Stub, args: argparse.Namespace) -> Iterator[cdr_pb2.Cdr]:
    """Follow next_page_token until the server says done or --limit is reached."""
    limit = args.limit
    page_size = args.page_size or (min(limit, 1000) if limit else 0)
    request = cdr_pb2.ListCdrsRequest(page_size=page_size, filter=filter_text(args))
    seen = 0
    while True:
        response = stub.ListCdrs(request, **calls.options(args))
        for cdr in response.cdrs:
            if limit and seen >= limit:
                return
            seen += 1
            yield cdr
        if not response.next_page_token or (limit and seen >= limit):
            return
        request.page_token = response.next_page_token


def shown_costs(cdrs: list[cdr_pb2.Cdr]) -> list[tuple[str, str]]:
    """The cost columns some row may see: a customer's token never sees a provider cost, and a column of
    "hidden" (or worse, of 0.00) would only look like data."""
    return [(header, field) for header, field in COST_COLUMNS if not cdrs or any(c.HasField(field) for c in cdrs)]


def cost_text(cdr: cdr_pb2.Cdr, field: str, amount: Callable[[int], str]) -> str:
    return amount(getattr(cdr, field)) if cdr.HasField(field) else "hidden"


def summary_row(cdr: cdr_pb2.Cdr, costs: list[tuple[str, str]], amount: Callable[[int], str]) -> list[str]:
    return [
        cdr.call_id,
        calls.last_segment(cdr.account),
        cdr.setup_time.ToJsonString() if cdr.HasField("setup_time") else "",
        cdr.destination_sent,
        calls.last_segment(cdr.trunk),
        str(cdr.billable_seconds),
        str(cdr.sip_code),
        f"{cdr.end_reason} ({cdr.stage})" if cdr.stage else cdr.end_reason,  # e.g. "refused (cps)"
        *(cost_text(cdr, field, amount) for _, field in costs),
    ]


def list_(stub: Stub, args: argparse.Namespace) -> int:
    cdrs = list(iter_cdrs(stub, args))
    if args.json:
        output.print_json([output.to_dict(cdr) for cdr in cdrs])
    else:
        costs, amount = shown_costs(cdrs), calls.amount_format(args)
        output.print_table((summary_row(cdr, costs, amount) for cdr in cdrs), SUMMARY_HEADERS + [h for h, _ in costs])
    return EXIT_OK


def export(stub: Stub, args: argparse.Namespace) -> int:
    chunks = stub.ExportCdrsCsv(cdr_pb2.ExportCdrsCsvRequest(filter=filter_text(args)), **calls.options(args))
    return write_export(chunks, args.output)


def write_export(chunks: Iterator[account_pb2.CsvChunk], output_path: str | None) -> int:
    """A streamed CSV to stdout, or to a file that appears only once complete."""
    if not output_path or output_path == "-":
        # No progress here: on a terminal it would land in the middle of the CSV being printed.
        write_chunks(chunks, sys.stdout.buffer, progress=False)
        sys.stdout.flush()
        return EXIT_OK
    # Write beside the target and rename at the end: a broken stream never leaves a file that looks complete.
    target = Path(output_path)
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as sink:
            write_chunks(chunks, sink, progress=sys.stderr.isatty())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `cdrs <verb>`; `common` carries the global options so they work after the verb too."""
    group = commands.add_parser("cdrs", help="call detail records, read-only", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: calls.Handler, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(handler=handler, stub=Stub)
        parser.add_argument("--filter", metavar="F",
                            help="e.g. 'setup_time >= 2025-01-01T00:00:00Z AND sip_code = 200 AND trunk = fra1'; "
                            "money (customer_cost, provider_cost, rate_per_min) in currency units: "
                            "'customer_cost > 0.05'")
        parser.add_argument("--account", metavar="N", help="only this customer's calls: ANDs `account = N` in")
        return parser

    p = verb("list", list_, "list CDRs by setup time, following all pages")
    p.add_argument("--page-size", type=fields.positive_int, metavar="N", help="CDRs per request")
    p.add_argument("--limit", type=fields.positive_int, metavar="N", help="stop after N CDRs")

    p = verb("export", export, "write CDRs as CSV (money with the company's decimals)")
    p.description = f"write CDRs as CSV. {CSV_NOTE}; rate_per_min with all 6."
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
