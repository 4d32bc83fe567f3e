"""Rate deck uploads: a CSV file streamed to ImportOriginationRates / ImportTerminationRates.

The server parses the CSV (header row, money as decimal currency units) in one transaction: a bad row
rejects the whole upload with INVALID_ARGUMENT naming `csv_data` and "line N", and nothing changes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tabulate import tabulate
from tqdm import tqdm

from admin import calls, output
from admin.errors import EXIT_OK, UsageError
from tollgate.v1 import common_pb2

CHUNK_BYTES = 256 * 1024
# A 1,000,000-row deck takes about a minute on the server; the usual 10 s deadline would cut it off, so an
# upload waits at least this long (a larger --timeout still wins).
UPLOAD_MIN_TIMEOUT = 600.0


def open_deck(path: Path) -> BinaryIO:
    """Open before the call starts, so a missing file is a usage error rather than a cancelled stream."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read rate deck {path}: {exc.strerror or exc}") from None


def file_sha256(path: Path) -> str:
    """What the server reports as deck_sha256 after a REPLACE import of these bytes."""
    digest = hashlib.sha256()
    with open_deck(path) as source:
        while piece := source.read(CHUNK_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def requests(
    source: BinaryIO, parent: str, mode: int, progress: tqdm
) -> Iterator[common_pb2.ImportRatesRequest]:
    """The first message names the deck and the mode; every message carries the next piece of the file."""
    first = True
    while True:
        piece = source.read(CHUNK_BYTES)
        if not piece and not first:
            return
        message = common_pb2.ImportRatesRequest(csv_data=piece)
        if first:
            message.parent, message.mode, first = parent, mode, False
        yield message
        progress.update(len(piece))
        if not piece:  # an empty file: one message naming the deck, and the server says what it thinks
            return


def upload(
    rpc: Any, parent: str, path: Path, merge: bool, args: argparse.Namespace, show_progress: bool | None = None
) -> common_pb2.ImportRatesResponse:
    """Stream `path` to `rpc` (a client-streaming stub method) with a byte progress bar on stderr.

    `show_progress` None = only when stderr is a terminal (tqdm's own rule)."""
    mode = common_pb2.IMPORT_MODE_MERGE if merge else common_pb2.IMPORT_MODE_REPLACE
    with open_deck(path) as source:
        size = os.fstat(source.fileno()).st_size
        disable = None if show_progress is None else not show_progress
        with tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=path.name,
            file=sys.stderr,
            disable=disable,
            leave=True,
        ) as progress:
            return rpc(requests(source, parent, mode, progress), **calls.options(args, min_timeout=UPLOAD_MIN_TIMEOUT))


def show_result(response: common_pb2.ImportRatesResponse, parent: str, args: argparse.Namespace) -> None:
    if args.json:
        output.print_json({"parent": parent, **output.to_dict(response)})
        return
    rows = [
        ("deck", parent),
        ("rows imported", response.rows_imported),
        ("rows in deck", response.rows_in_deck),
        ("deck sha256", response.deck_sha256 or "(none after a merge)"),
    ]
    print(tabulate(rows, tablefmt="plain", disable_numparse=True))


def import_command(rpc_name: str):
    """The handler of `origination-rates import` / `termination-rates import`."""

    def handler(kind: Any, stub: Any, args: argparse.Namespace) -> int:
        parent = kind.parent.name(args.parent)
        response = upload(getattr(stub, rpc_name), parent, Path(args.file), args.merge, args, args.progress)
        show_result(response, parent, args)
        return EXIT_OK

    return handler


def add_import_verb(rpc_name: str, what: str):
    """`extra_verbs` of a rate Kind: `import PARENT FILE.csv [--merge] [--progress]`."""

    def extra(kind: Any, verb: Any) -> None:
        p = verb(
            "import",
            import_command(rpc_name),
            f"upload a CSV rate deck to {what}, one transaction: a bad line changes nothing "
            f"(the deadline is at least {UPLOAD_MIN_TIMEOUT:.0f} s)",
            key=False,
        )
        p.add_argument("file", metavar="FILE.csv", help="CSV with a header row; money in currency units")
        p.add_argument(
            "--merge",
            action="store_true",
            help="replace rows whose prefix is known and add the others (default: the file becomes the deck)",
        )
        p.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bar on stderr (default: only when stderr is a terminal)",
        )

    return extra
