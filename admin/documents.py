"""Writing a downloaded document (an invoice's or a receipt's PDF) to a file, or to stdout with `-o -`."""

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from admin.errors import EXIT_OK


def write_pdf(chunks: Iterable, output_path: str) -> int:
    """The chunks (google.api.HttpBody) joined, into `output_path` once complete: a broken stream never leaves a
    file that looks like a whole PDF. Prints the file's name (nothing when writing to stdout)."""
    if output_path == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk.data)
        sys.stdout.flush()
        return EXIT_OK
    target = Path(output_path)
    partial = target.with_name(target.name + ".part")
    size = 0
    try:
        with partial.open("wb") as sink:
            for chunk in chunks:
                sink.write(chunk.data)
                size += len(chunk.data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(f"{target} ({size:,} bytes)")
    return EXIT_OK
