"""What every RPC carries: a deadline (so a dead server cannot hang a script) and the bearer token."""

import argparse
import functools
from collections.abc import Callable
from typing import Any

from admin import config
from admin.errors import UsageError
from admin.money import format_amount
from tollgate.v1 import company_pb2, company_pb2_grpc

# A command: (stub, parsed args) -> exit code. Only main() opens the channel the stub runs on.
Handler = Callable[[Any, argparse.Namespace], int]


def options(args: argparse.Namespace, auth: bool = True, min_timeout: float = 0.0) -> dict[str, Any]:
    """Keyword arguments for a stub call; `auth=False` only for Login, which must work without a token.
    `min_timeout` lengthens the deadline of calls that are slow by nature (a rate deck upload)."""
    if auth and not args.token:
        # The server could only say "missing authorization metadata"; here we know where a token comes from.
        raise UsageError(f"no token: give --token, set {config.ENV_TOKEN}, or write `token = \"...\"` into "
                         f"{config.DEFAULT_CONFIG} (or the file --config or {config.ENV_CONFIG} names); "
                         "`tollgate-admin login` prints an account's token")
    metadata = [("authorization", f"Bearer {args.token}")] if auth else []
    return {"timeout": max(args.timeout, min_timeout), "metadata": metadata}


def resource_name(collection: str, ident: str) -> str:
    """The CLI takes bare ids ("fra1"); the API names resources `{collection}/{id}` ("trunks/fra1").
    A full name is passed through, so both spellings work."""
    return ident if ident.startswith(f"{collection}/") else f"{collection}/{ident}"


def account_name(number: str) -> str:
    """The CLI takes bare account numbers; the API names resources `accounts/{account_number}`."""
    return resource_name("accounts", number)


def optional_name(collection: str, ident: str) -> str:
    """Like resource_name, but "" stays "" (it clears a reference, e.g. `--localization ''`)."""
    return resource_name(collection, ident) if ident else ""


def last_segment(name: str) -> str:
    """"trunks/fra1" -> "fra1": the id people typed, for tables."""
    return name.rsplit("/", 1)[-1]


def amount_format(args: argparse.Namespace) -> Callable[[int], str]:
    """How this command prints an amount of money: with the company's `decimals`, as exports, invoices and
    receipts do (a list mixing 0.004038, -0.21 and 0.00 read as three kinds of number). Asked of the server
    once per command, and only by output for people (JSON keeps micros)."""
    if getattr(args, "_company_decimals", None) is None:
        stub = company_pb2_grpc.CompanyServiceStub(args.channel)  # set by cli.run()
        args._company_decimals = stub.GetCompany(company_pb2.GetCompanyRequest(), **options(args)).decimals
    return functools.partial(format_amount, decimals=args._company_decimals)
