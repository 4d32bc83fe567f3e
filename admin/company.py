"""`company …` commands: the operator's defaults and limits for every account."""

import argparse
from pathlib import Path

from google.protobuf.field_mask_pb2 import FieldMask

from admin import calls, fields, output
from admin.accounts import INVOICE_WITH_CDR
from admin.errors import EXIT_OK, UsageError
from admin.fields import Flag
from tollgate.v1 import company_pb2, company_pb2_grpc

Stub = company_pb2_grpc.CompanyServiceStub

COMPANY_FLAGS: tuple[Flag, ...] = (
    fields.text("--name", "name", "company name"),
    fields.text("--currency", "currency", "ISO 4217 code, e.g. USD", "CODE"),
    fields.integer("--decimals", "decimals", "digits printed in exports and invoices, 0-6"),
    fields.integer("--pin-length", "pin_length", "digits of generated PINs, 4-12"),
    fields.choice("--invoice-with-cdr", "invoice_with_cdr", "default for new accounts", INVOICE_WITH_CDR),
    fields.integer("--max-call-seconds", "max_call_seconds", "longest call ever granted"),
    fields.text("--timezone", "timezone", "IANA zone, default for new accounts", "ZONE"),
    fields.text("--sip-realm", "sip_realm", "digest realm of SIP devices", "REALM"),
    fields.text("--tax-percent", "tax_percent", "tax on invoices, a percent 0-100, e.g. 19 or 7.25", "PERCENT"),
    fields.integer("--max-destination-digits", "max_destination_digits",
                   "longest dialled number after localization, 1-18 (longer or non-digit: 484)"),
    fields.integer("--min-destination-digits", "min_destination_digits",
                   "shortest dialled number after localization (shorter: 484), default 1"),
    fields.choice("--caller-id-fallback", "caller_id_fallback",
                  "what a call presents when its caller id is not plain digits",
                  {"default-caller-id": company_pb2.CALLER_ID_FALLBACK_DEFAULT_CALLER_ID,
                   "anonymous": company_pb2.CALLER_ID_FALLBACK_ANONYMOUS}),
    Flag(("--postal-address",), "address", "postal address printed on invoices and receipts; lines separated by "
         "newlines or \\n", {"metavar": "TEXT"}, lambda text: text.replace("\\n", "\n"), dest="postal_address"),
    fields.text("--tax-number", "tax_number", "the company's tax number (VAT id), printed on documents"),
    fields.text("--email", "email", "contact address printed on documents", "EMAIL"),
    Flag(("--logo",), "logo", "PNG or JPEG printed on documents (at most 512 KiB, 2000 x 2000 pixels)",
         {"metavar": "FILE"}, lambda path: Path(path).read_bytes(), group="logo"),
    fields.const("--no-logo", "logo", "print documents without a logo", b"", group="logo"),
)


def show_company(company: company_pb2.Company, args: argparse.Namespace) -> None:
    if args.json:
        output.print_json(output.to_dict(company))
    else:
        output.print_record(company, money={}, skip={"logo"})


def get(stub: Stub, args: argparse.Namespace) -> int:
    show_company(stub.GetCompany(company_pb2.GetCompanyRequest(), **calls.options(args)), args)
    return EXIT_OK


def update(stub: Stub, args: argparse.Namespace) -> int:
    values = fields.given(args, COMPANY_FLAGS)
    if not values:
        raise UsageError("nothing to update: give at least one field flag (see --help)")
    company = company_pb2.Company()
    fields.apply(company, values)
    request = company_pb2.UpdateCompanyRequest(company=company, update_mask=FieldMask(paths=list(values)))
    show_company(stub.UpdateCompany(request, **calls.options(args)), args)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("company", help="the company profile", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("get", help="show the company profile", parents=[common])
    p.set_defaults(handler=get, stub=Stub)
    p = verbs.add_parser("update", help="change only the fields given as flags", parents=[common])
    p.set_defaults(handler=update, stub=Stub)
    fields.add_flags(p, COMPANY_FLAGS)
