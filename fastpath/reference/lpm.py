"""Reference twin of fastpath/deck_image.pyx: the same interface, a dict and a loop.

The readable spec of the longest-prefix match, used by the differential tests and as the per-process
dict deck that the bench compares the shared image with. Its "image" is a JSON file holding the rows;
opening it builds a private dict (which is exactly the memory cost the Cython image avoids). Its cache
follows the same protocol as deck_image.ImageCache (boot directory, images written from load_image()).

Semantics shared with the Cython image:
- a prefix is 1 to 18 ASCII digits; a deck has each prefix once;
- longest_match(number) tries number[:n] for n from len(number) down to 1. Keys are digits only, so in
  effect only the number's leading run of ASCII digits (at most 18 of them) can match;
- the record is the snapshot row without its prefix, same order and types.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable

MAX_PREFIX_DIGITS = 18
_FORMAT = "tollgate-reference-deck/1"
_COLUMNS = {"odeck": 8, "tdeck": 9}
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
# Per kind, the range of each integer column (by position in the row) and the position of the string column.
_INTS = {
    "odeck": {1: _INT64, 2: _INT32, 3: _INT64, 4: _INT32, 5: _INT32, 7: _INT32},
    "tdeck": {1: _INT64, 2: _INT32, 3: _INT64, 4: _INT32, 5: _INT32, 6: _INT32, 8: _INT32},
}


def check_rows(kind: str, rows: list) -> dict[str, tuple]:
    """prefix -> record (the row without its prefix); ValueError on the first bad row, like build_image."""
    if kind not in _COLUMNS:
        raise ValueError(f"kind {kind!r} is not 'odeck' or 'tdeck'")
    table: dict[str, tuple] = {}
    first_row: dict[str, int] = {}
    for i, row in enumerate(rows):
        if type(row) not in (list, tuple) or len(row) != _COLUMNS[kind]:
            raise ValueError(f"row {i}: {row!r} is not a {kind} row of {_COLUMNS[kind]} columns")
        prefix = row[0]
        if not (type(prefix) is str and prefix.isascii() and prefix.isdigit()
                and 1 <= len(prefix) <= MAX_PREFIX_DIGITS):
            raise ValueError(f"row {i}: prefix {prefix!r} must be 1 to {MAX_PREFIX_DIGITS} digits")
        for position, (low, high) in _INTS[kind].items():
            if type(row[position]) is not int or not low <= row[position] <= high:
                raise ValueError(f"row {i}: column {position} {row[position]!r} is not an integer in range")
        if kind == "odeck":
            trunks = row[6]
            if type(trunks) not in (list, tuple) or not all(
                    type(t) is str and t and "," not in t for t in trunks):
                raise ValueError(f"row {i}: forced_trunks {trunks!r} must be non-empty strings without ','")
            record = (*row[1:6], list(trunks), row[7])
        else:
            if type(row[7]) is not str:
                raise ValueError(f"row {i}: prepend {row[7]!r} is not a string")
            record = tuple(row[1:])
        if prefix in table:
            raise ValueError(f"row {i}: prefix {prefix!r} already on row {first_row[prefix]}")
        table[prefix] = record
        first_row[prefix] = i
    return table


def longest_match(table: dict[str, tuple], number: str) -> tuple[str, tuple] | None:
    """The spec: the longest number[:n] that is a key."""
    for n in range(len(number), 0, -1):
        record = table.get(number[:n])
        if record is not None:
            return number[:n], record
    return None


class DictDeck:
    """An in-memory deck: what every process would hold privately without the shared image."""

    def __init__(self, kind: str, rows: list):
        self.kind = kind
        self._table = check_rows(kind, rows)

    def longest_match(self, number: str) -> tuple[str, tuple] | None:
        if self._table is None:
            raise ValueError("the deck is closed")
        if isinstance(number, bytes):
            number = number.decode("ascii", "replace")
        found = longest_match(self._table, number[:MAX_PREFIX_DIGITS])
        if found is None:
            return None
        prefix, record = found
        return prefix, _copy(record)

    def __len__(self) -> int:
        return len(self._table or ())

    def close(self) -> None:
        self._table = None


def _copy(record: tuple) -> tuple:
    # Fresh lists, as the image returns: a caller mutating forced_trunks must not change the deck.
    return tuple(list(v) if isinstance(v, list) else v for v in record)


def encode_image(kind: str, rows: list) -> bytes:
    """Check the rows; the bytes of their image file (JSON)."""
    check_rows(kind, rows)
    return json.dumps({"format": _FORMAT, "kind": kind, "rows": [list(r) for r in rows]}).encode()


def build_image(path: str, kind: str, rows: list) -> int:
    """Check the rows, then write them as JSON atomically (tmp file, fsync, rename). Returns the count."""
    _write_atomically(path, [encode_image(kind, rows)], durable=True)
    return len(rows)


def _write_atomically(path: str, chunks: Iterable[bytes], durable: bool) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class DeckImage(DictDeck):
    """Opens a file written by build_image above into a private DictDeck."""

    def __init__(self, path: str):
        try:
            with open(path) as source:
                data = json.load(source)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a reference deck image ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a reference deck image")
        super().__init__(data["kind"], data["rows"])
        self.path = path


def image_file_stem(family: str) -> str:
    """'odeck:gold' -> 'odeck%3Agold' (no '.', so '<stem>.<version>.img' parses back unambiguously)."""
    if not family:
        raise ValueError("empty family name")
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), family)


def boot_directory(directory: str) -> str:
    """directory/'boot-<boot id>': images are never fsynced, so no boot opens another's (see deck_image)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        current = f"boot-{f.read().strip()}"
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("boot-") and name != current:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    os.makedirs(os.path.join(directory, current), exist_ok=True)
    return os.path.join(directory, current)


class ImageCache:
    """Same protocol as deck_image.ImageCache: map if written, else write load_image() once per node under a flock."""

    def __init__(self, directory: str):
        self.directory = boot_directory(directory)
        self._images: dict[str, tuple[int, DeckImage]] = {}
        self.builds = 0

    def path_for(self, family: str, version: int) -> str:
        return os.path.join(self.directory, f"{image_file_stem(family)}.{int(version)}.img")

    def get(self, family: str, version: int, kind: str,
            load_image: Callable[[], bytes | Iterable[bytes]]) -> DeckImage:
        cached = self._images.get(family)
        if cached and cached[0] == version:
            return cached[1]
        path = self.path_for(family, version)
        image = self._open(path, kind)
        if image is None:
            stem = image_file_stem(family)
            with open(os.path.join(self.directory, f"{stem}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                image = self._open(path, kind)
                if image is None:
                    content = load_image()
                    _write_atomically(path, [content] if isinstance(content, bytes | bytearray) else content,
                                      durable=False)
                    image = _open_written(path, kind)
                    self.builds += 1
                    for name in os.listdir(self.directory):
                        old = re.fullmatch(rf"{re.escape(stem)}\.(\d+)\.img(\.tmp-\d+)?", name)
                        if old and (old.group(2) or int(old.group(1)) < version):
                            os.unlink(os.path.join(self.directory, name))
        self._images[family] = (version, image)
        return image

    def forget(self, family: str) -> None:
        self._images.pop(family, None)

    @staticmethod
    def _open(path: str, kind: str) -> DeckImage | None:
        try:
            image = DeckImage(path)
        except (FileNotFoundError, ValueError):
            return None
        return image if image.kind == kind else None


def _open_written(path: str, kind: str) -> DeckImage:
    """The image just written; a file that is not an image of the kind is unlinked, and ValueError."""
    try:
        image = DeckImage(path)
        if image.kind != kind:
            raise ValueError(f"{path}: a {image.kind} image where a {kind} deck belongs")
    except ValueError:
        os.unlink(path)
        raise
    return image
