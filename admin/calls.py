"""What every RPC carries: a deadline (so a dead server cannot hang a script) and the bearer token."""

import argparse
from collections.abc import Callable
from typing import Any

# A command: (stub, parsed args) -> exit code. Only main() opens the channel the stub runs on.
Handler = Callable[[Any, argparse.Namespace], int]


def options(args: argparse.Namespace, auth: bool = True, min_timeout: float = 0.0) -> dict[str, Any]:
    """Keyword arguments for a stub call; `auth=False` only for Login, which must work without a token.
    `min_timeout` lengthens the deadline of calls that are slow by nature (a rate deck upload)."""
    metadata = [("authorization", f"Bearer {args.token}")] if auth and args.token else []
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
