"""What every RPC carries: a deadline (so a dead server cannot hang a script) and the bearer token."""

import argparse
from collections.abc import Callable
from typing import Any

# A command: (stub, parsed args) -> exit code. Only main() opens the channel the stub runs on.
Handler = Callable[[Any, argparse.Namespace], int]


def options(args: argparse.Namespace, auth: bool = True) -> dict[str, Any]:
    """Keyword arguments for a stub call; `auth=False` only for Login, which must work without a token."""
    metadata = [("authorization", f"Bearer {args.token}")] if auth and args.token else []
    return {"timeout": args.timeout, "metadata": metadata}


def account_name(number: str) -> str:
    """The CLI takes bare account numbers; the API names resources `accounts/{account_number}`."""
    return number if number.startswith("accounts/") else f"accounts/{number}"
