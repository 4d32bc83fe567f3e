"""`accounts …` commands: customers and providers share one list (SPEC §2)."""

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from google.protobuf.field_mask_pb2 import FieldMask

from admin import calls, fields, output
from admin.confirm import ASKS, add_yes_flag, confirm
from admin.errors import EXIT_OK, UsageError
from admin.fields import Flag
from admin.money import format_rate
from tollgate.v1 import account_pb2, account_pb2_grpc

Stub = account_pb2_grpc.AccountServiceStub

AMOUNT_PATHS = ("balance", "billing.credit_limit", "billing.low_balance_threshold")
RATE_PATHS = ("settings.lc_charge_per_min",)
# Input-only fields are always empty in responses; the SIP password gets its own loud line instead.
HIDDEN_PATHS = {"password", "create_sip_device", "sip_device_password"}
INVOICE_WITH_CDR = {
    "none": account_pb2.INVOICE_WITH_CDR_NONE,
    "pdf": account_pb2.INVOICE_WITH_CDR_PDF,
    "csv": account_pb2.INVOICE_WITH_CDR_CSV,
}

# Create only: create_sip_device is INPUT_ONLY, and the server refuses it in an update_mask.
CREATE_FLAGS: tuple[Flag, ...] = (
    Flag(
        ("--sip-device",),
        "create_sip_device",
        "create a SIP device named after the account number; its password is shown once",
        {"action": "store_true"},
    ),
)

# Shared by create and update; the path is both the field set and the update_mask entry.
ACCOUNT_FLAGS: tuple[Flag, ...] = (
    fields.text("--email", "email", "login name and contact address", metavar="EMAIL"),
    fields.text("--password", "password", "portal password, at least 8 characters", metavar="PASSWORD"),
    fields.text("--pin", "pin", "calling-card PIN (digits); generated when omitted on create", metavar="PIN"),
    # profile
    fields.text("--first-name", "profile.first_name", "first name"),
    fields.text("--last-name", "profile.last_name", "last name"),
    fields.text("--company", "profile.company", "company name"),
    fields.text("--phone", "profile.phone", "phone number"),
    fields.text("--notification-email", "profile.notification_email", "where notifications go", "EMAIL"),
    fields.text("--address1", "profile.address1", "address line 1"),
    fields.text("--address2", "profile.address2", "address line 2"),
    fields.text("--city", "profile.city", "city"),
    fields.text("--province", "profile.province", "province or state"),
    fields.text("--zip", "profile.zip", "postal code"),
    fields.text("--country", "profile.country", "ISO 3166-1 alpha-2 code, e.g. DE", "CC"),
    fields.text("--timezone", "profile.timezone", "IANA zone; the company's when omitted on create", "ZONE"),
    # billing
    fields.const("--postpaid", "billing.account_type", "postpaid billing", account_pb2.POSTPAID, "mode"),
    fields.const("--prepaid", "billing.account_type", "prepaid billing (default)", account_pb2.PREPAID, "mode"),
    fields.money("--credit-limit", "billing.credit_limit", "credit limit, postpaid only, e.g. 100.50"),
    fields.reference("--rate-group", "billing.rate_group", "rate group id (or rateGroups/{id})", "rateGroups"),
    fields.reference("--non-cli-rate-group", "billing.non_cli_rate_group", "rate group for non-CLI calls",
                     "rateGroups"),
    fields.integer("--cli-pool", "billing.cli_pool", "caller-id policy 0-8 (SPEC §6)", choices=range(9)),
    fields.text("--tax-number", "billing.tax_number", "tax number printed on invoices"),
    fields.yes_no("--zero-invoice", "billing.generate_zero_invoice", "also invoice a zero amount"),
    fields.text("--invoice-note", "billing.invoice_note", "note printed on invoices"),
    fields.text("--reference", "billing.reference", "free-form reference"),
    fields.integer("--billing-day", "billing.billing_day", "day of month for invoices, 1-28"),
    fields.choice(
        "--invoice-with-cdr", "billing.invoice_with_cdr", "CDR detail attached to invoices", INVOICE_WITH_CDR
    ),
    fields.money("--low-balance-threshold", "billing.low_balance_threshold",
                 "e-mail the account once when its money left falls below this (0 = never), e.g. 5.00"),
    # settings
    fields.integer("--max-calls", "settings.max_concurrent_calls", "concurrent calls, 0 = unlimited"),
    fields.integer("--cps", "settings.cps", "calls per second, 0 = unlimited"),
    fields.reference("--localization", "settings.localization", "localization profile id (or localizations/{id})",
                     "localizations"),
    fields.yes_no("--local-calls", "settings.allow_local_calls", "allow device-to-device calls"),
    fields.yes_no("--notifications", "settings.notifications",
                  "e-mail the account (account created, invoices, receipts, low balance)"),
    fields.yes_no("--payment-gateway", "settings.payment_gateway_permission", "may pay online"),
    fields.yes_no(
        "--loss-less-routing",
        "settings.allow_loss_less_routing",
        "also route over carriers costlier than the caller's rate (at a loss)",
    ),
    fields.money("--lc-charge-per-min", "settings.lc_charge_per_min", "local-call charge per minute"),
    fields.yes_no("--recording", "settings.allow_recording", "record calls"),
    fields.text("--default-caller-id", "settings.default_caller_id",
                "digits presented when a call's caller id is not plain digits (company caller-id fallback)",
                "DIGITS"),
    # state
    fields.const("--active", "status", "account may call (default)", account_pb2.ACTIVE, "status"),
    fields.const("--inactive", "status", "account may not call", account_pb2.INACTIVE, "status"),
    fields.timestamp("--expire", "expire_time", "expiry, e.g. 2030-01-31T23:59:59Z; 'never' clears it"),
)


def money_formats(args: argparse.Namespace) -> output.MoneyFormats:
    amount = calls.amount_format(args)
    return {path: amount for path in AMOUNT_PATHS} | {path: format_rate for path in RATE_PATHS}


def show_account(account: account_pb2.Account, args: argparse.Namespace) -> None:
    if args.json:
        output.print_json(output.to_dict(account))
        return
    output.print_record(account, money_formats(args), HIDDEN_PATHS)
    if account.sip_device_password:
        # The server keeps only digest hashes: this is the operator's single chance to copy it.
        print(f"\nSIP device password (shown only once, store it now): {account.sip_device_password}")


def create(stub: Stub, args: argparse.Namespace) -> int:
    account_type = account_pb2.PROVIDER if args.provider else account_pb2.CUSTOMER
    account = account_pb2.Account(type=account_type, account_number=args.number or "")
    fields.apply(account, fields.given(args, CREATE_FLAGS + ACCOUNT_FLAGS))
    request = account_pb2.CreateAccountRequest(account=account)
    show_account(stub.CreateAccount(request, **calls.options(args)), args)
    return EXIT_OK


def get(stub: Stub, args: argparse.Namespace) -> int:
    request = account_pb2.GetAccountRequest(name=calls.account_name(args.number))
    show_account(stub.GetAccount(request, **calls.options(args)), args)
    return EXIT_OK


def update(stub: Stub, args: argparse.Namespace) -> int:
    values = fields.given(args, ACCOUNT_FLAGS)
    if not values:
        # An empty mask would mean "the fields set", i.e. nothing; refusing says so instead.
        raise UsageError("nothing to update: give at least one field flag (see --help)")
    account = account_pb2.Account(name=calls.account_name(args.number))
    fields.apply(account, values)
    request = account_pb2.UpdateAccountRequest(account=account, update_mask=FieldMask(paths=list(values)))
    show_account(stub.UpdateAccount(request, **calls.options(args)), args)
    return EXIT_OK


def positive_amount(text: str) -> int:
    """AMOUNT of `pay`: more than 0, the direction is --charge's to say. `pay X -5` used to take 5 away and
    `--charge -1` to add 1, each printed like any payment."""
    micros = fields.money_arg(text)
    if micros <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}: a payment adds AMOUNT to the "
                                          "balance, --charge takes it away")
    return micros


def pay(stub: Stub, args: argparse.Namespace) -> int:
    """A payment (AMOUNT added) or a non-call charge (--charge: AMOUNT taken): the balance moves at once, the
    switch's live balance within about a second; --request-id makes a retried command pay once."""
    amount = -args.amount if args.charge else args.amount
    request = account_pb2.PostPaymentRequest(account=calls.account_name(args.number), amount=amount,
                                             note=args.note or "", request_id=args.request_id or "")
    payment = stub.PostPayment(request, **calls.options(args))
    if args.json:
        output.print_json(output.to_dict(payment))
    else:
        amount = calls.amount_format(args)
        what = "charge of {} taken from" if payment.amount < 0 else "payment of {} added to"
        print(what.format(amount(abs(payment.amount))), f"{payment.account}\n")
        output.print_record(payment, {"amount": amount, "balance_after": amount})
    return EXIT_OK


def iter_accounts(stub: Stub, args: argparse.Namespace) -> Iterator[account_pb2.Account]:
    """Follow next_page_token until the server says done or --limit is reached."""
    limit = args.limit
    page_size = args.page_size or (min(limit, 1000) if limit else 0)
    request = account_pb2.ListAccountsRequest(
        page_size=page_size, filter=args.filter or "", show_deleted=args.show_deleted
    )
    seen = 0
    while True:
        response = stub.ListAccounts(request, **calls.options(args))
        for account in response.accounts:
            if limit and seen >= limit:
                return
            seen += 1
            yield account
        if not response.next_page_token or (limit and seen >= limit):
            return
        request.page_token = response.next_page_token


def summary_row(account: account_pb2.Account, amount: Callable[[int], str]) -> list[str]:
    profile, billing = account.profile, account.billing
    return [
        account.account_number,
        account_pb2.AccountType.Name(account.type),
        " ".join(part for part in (profile.first_name, profile.last_name) if part),
        profile.company,
        account.email,
        account_pb2.BillingMode.Name(billing.account_type),
        account_pb2.AccountStatus.Name(account.status) + (" (deleted)" if account.HasField("delete_time") else ""),
        amount(account.balance),
        billing.rate_group,
    ]


SUMMARY_HEADERS = [
    "number",
    "type",
    "name",
    "company",
    "email",
    "account type",
    "status",
    "balance",
    "rate group",
]


def list_(stub: Stub, args: argparse.Namespace) -> int:
    accounts = list(iter_accounts(stub, args))
    if args.json:
        output.print_json([output.to_dict(account) for account in accounts])
    else:
        amount = calls.amount_format(args)
        output.print_table((summary_row(account, amount) for account in accounts), SUMMARY_HEADERS)
    return EXIT_OK


def delete(stub: Stub, args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(calls.account_name(number) for number in args.numbers))
    confirm(args, f"delete {'account' if len(names) == 1 else f'{len(names)} accounts'}: {', '.join(names)}")
    # One call: the server deletes all or none (AIP-233), so a partial failure cannot happen here.
    response = stub.DeleteAccounts(account_pb2.DeleteAccountsRequest(names=names), **calls.options(args))
    if args.json:
        output.print_json([output.to_dict(account) for account in response.accounts])
    else:
        for account in response.accounts:
            print(f"deleted {account.name} ({account.email})")
    return EXIT_OK


class RowCounter:
    """Counts CSV records across chunk boundaries; newlines inside quoted cells do not end a record."""

    def __init__(self) -> None:
        self.lines = 0
        self.in_quotes = False

    def feed(self, data: bytes) -> None:
        for i, segment in enumerate(data.split(b'"')):
            if i:  # every quote toggles; an escaped "" toggles twice and changes nothing
                self.in_quotes = not self.in_quotes
            if not self.in_quotes:
                self.lines += segment.count(b"\n")

    @property
    def rows(self) -> int:
        return max(self.lines - 1, 0)  # the header is not a row


def write_chunks(chunks: Iterator[account_pb2.CsvChunk], sink: BinaryIO, progress: bool) -> int:
    counter = RowCounter()
    for chunk in chunks:
        sink.write(chunk.data)
        counter.feed(chunk.data)
        if progress:
            print(f"\r{counter.rows} rows written", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return counter.rows


def export(stub: Stub, args: argparse.Namespace) -> int:
    request = account_pb2.ExportAccountsCsvRequest(filter=args.filter or "", show_deleted=args.show_deleted)
    chunks = stub.ExportAccountsCsv(request, **calls.options(args))
    progress = sys.stderr.isatty()
    if not args.output or args.output == "-":
        write_chunks(chunks, sys.stdout.buffer, progress)
        sys.stdout.flush()
        return EXIT_OK
    # Write beside the target and rename at the end: a broken stream never leaves a file that looks complete.
    target = Path(args.output)
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as sink:
            write_chunks(chunks, sink, progress)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `accounts <verb>`; `common` carries the global options so they work after the verb too."""
    group = commands.add_parser("accounts", help="customer and provider accounts", parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: calls.Handler, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(handler=handler, stub=Stub)
        return parser

    p = verb("create", create, "create a customer or provider account")
    p.add_argument("--provider", action="store_true", help="a provider (owns trunks) instead of a customer")
    p.add_argument("--number", metavar="N", help="custom account number, 4-20 of [0-9A-Za-z]; else generated")
    fields.add_flags(p, CREATE_FLAGS + ACCOUNT_FLAGS, required=["email"])

    p = verb("get", get, "show one account")
    p.add_argument("number", metavar="NUMBER")

    p = verb("update", update, "change only the fields given as flags")
    p.add_argument("number", metavar="NUMBER")
    fields.add_flags(p, ACCOUNT_FLAGS)

    p = verb("pay", pay, "post a payment (or, with --charge, a non-call charge) to an account's balance")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("amount", type=positive_amount, metavar="AMOUNT",
                   help="more than 0, in the company's currency, e.g. 25.00: added to the balance (a payment)")
    p.add_argument("--charge", action="store_true",
                   help="take AMOUNT from the balance instead (a non-call charge); the JSON amount is then negative")
    p.add_argument("--note", metavar="TEXT", help="e.g. the bank reference; printed on the receipt")
    p.add_argument("--request-id", metavar="KEY", help="idempotency key: the same key never pays twice")

    p = verb("list", list_, "list accounts, following all pages")
    add_filter_flags(p)
    p.add_argument("--page-size", type=fields.positive_int, metavar="N", help="accounts per request")
    p.add_argument("--limit", type=fields.positive_int, metavar="N", help="stop after N accounts")

    p = verb("delete", delete, f"soft-delete accounts, all or none; {ASKS}")
    p.add_argument("numbers", nargs="+", metavar="NUMBER")
    add_yes_flag(p)

    p = verb("export", export, "write accounts as CSV")
    p.description = f"write accounts as CSV. {CSV_NOTE}."
    add_filter_flags(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


FILTER_HELP = ("terms `field OP value` joined by AND, OP one of = != < <= > >= : (contains); fields: account_number "
               "name company email type account_type status rate_group balance create_time; money in the company's "
               "currency units, exact to 6 decimals (balance > 1 means 1.00); e.g. 'type = PROVIDER AND "
               "email : \"@example.com\" AND balance < 5.50'")


# What every CSV export's --help says about the leading apostrophe: people see it in "+4930…" cells and take
# it for a bug (docs/DECISIONS.md explains the choice).
CSV_NOTE = ("RFC 4180, UTF-8, with a header row. A text cell starting with = + - @, tab or CR (e.g. a number "
            "typed as +4930…) gets a leading apostrophe (') so that a spreadsheet shows it as text instead of "
            "running it as a formula; money cells are plain numbers with the company's decimals")


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", metavar="F", help=FILTER_HELP)
    parser.add_argument("--show-deleted", action="store_true", help="include soft-deleted accounts")
