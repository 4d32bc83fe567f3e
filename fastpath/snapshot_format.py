"""The Redis projection's layout: the contract between control (writer) and the fast path (reader).

Every family is a versioned snapshot: a Redis LIST whose first element is a header and whose other elements
are the snapshot's chunks. A pointer hash names the live version of each family, and a stream announces
every swap. All keys share the hash tag {cfg}, so the swap (pointer + stream) is one atomic script on a
single Redis, Sentinel or Redis Cluster alike.

Snapshot format 2 (FORMAT_VERSION):
- The header is a JSON object: {"format": "tollgate-snapshot", "version": 2, "family": ..., "encoding": ...,
  "rows": ..., "chunks": [[bytes, xxh64], ...]}, and for a deck "image": deck_image.IMAGE_LAYOUT. Every chunk
  is checked against its length and XXH64 digest (deck_image.digest64) before it is used.
- Base families ("json-rows"): each chunk is a JSON array of up to CHUNK_ROWS rows, each row a JSON array
  whose positions are COLUMNS[kind]. They are small, and JSON keeps them readable in redis-cli.
- Decks, odeck:<rate group> and tdeck:<trunk> ("deck-image"): the chunks (CHUNK_BYTES each, the last one
  shorter) are the deck image itself (fastpath/deck_image.pyx), laid out once by the publisher. A fast-path
  process writes them to its image file as they arrive and maps the file: nothing is decoded per row. Their
  rows are still COLUMNS[kind]: the image holds them all, and fastpath/reference/image.py reads them back.

A reader refuses (SnapshotError, a ValueError) what it cannot trust: another format or version (format 1 was
JSON chunks without a header), an image of another layout (byte order or struct sizes of another build), a
header naming another family or encoding, a chunk of the wrong length or digest, chunks missing or extra.
The fast path then keeps its last good data (fail-static), as when Redis is unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fastpath import deck_image

DEFAULT_NAMESPACE = "tg"
FORMAT = "tollgate-snapshot"
FORMAT_VERSION = 2
JSON_ROWS = "json-rows"
DECK_IMAGE = "deck-image"
DECK_KINDS = ("odeck", "tdeck")
CHUNK_ROWS = 5_000  # rows in a JSON chunk
CHUNK_BYTES = 1 << 20  # bytes in a deck image chunk: a reader writes each one out while the next ones travel
# Bounds a reader holds a header to before it reads anything more: a 1M-row deck's header is about 2 kB, and
# 5,000 rows of the widest base family about 2 MB.
MAX_HEADER_BYTES = 4 << 20
MAX_JSON_CHUNK_BYTES = 64 << 20
FEED_MAXLEN = 10_000
# How long a replaced snapshot stays readable for a reader that was in the middle of loading it.
RETIRED_TTL_SECONDS = 120

COLUMNS: dict[str, tuple[str, ...]] = {
    "company": ("max_call_seconds", "decimals", "currency", "sip_realm", "max_destination_digits",
                "caller_id_fallback", "min_destination_digits"),
    "accounts": (
        "number", "type", "status", "deleted", "expire_epoch", "account_type", "credit_limit",
        "max_concurrent_calls", "cps", "localization", "allow_local_calls", "allow_loss_less_routing",
        "lc_charge_per_min", "allow_recording", "rate_group", "non_cli_rate_group", "cli_pool",
        "default_caller_id",
    ),
    "devices": ("username", "account", "realm", "ha1", "ha1_sha256", "status"),
    "ipmaps": ("id", "account", "cidr", "tech_prefix", "status"),
    "dids": ("number", "account", "provider", "status"),
    "callerids": ("account", "number"),
    "rategroups": ("id", "markup_percent", "routing_strategy", "default_initial_increment",
                   "default_increment", "trunks", "status"),
    "trunks": ("id", "provider", "provider_usable", "gateways", "max_concurrent_calls", "cps",
               "localization", "priority", "status", "provider_expire_epoch", "pdd_timeout_seconds",
               "pass_diversion", "pass_privacy", "pass_history_info", "topology_hiding"),
    "localizations": ("id", "caller_id_inbound", "caller_id_outbound", "destination",
                      "termination_caller_id", "termination_destination"),
    "odeck": ("prefix", "connect_fee", "included_seconds", "rate_per_min", "initial_increment", "increment",
              "forced_trunks", "priority"),
    "tdeck": ("prefix", "connect_fee", "included_seconds", "rate_per_min", "initial_increment", "increment",
              "strip", "prepend", "priority"),
}
BASE_FAMILIES = ("company", "accounts", "devices", "ipmaps", "dids", "callerids", "rategroups", "trunks",
                 "localizations")


def origination_deck(rate_group_id: str) -> str:
    return f"odeck:{rate_group_id}"


def termination_deck(trunk_id: str) -> str:
    return f"tdeck:{trunk_id}"


def kind_of(family: str) -> str:
    """'odeck:gold' -> 'odeck'; base families are their own kind."""
    return family.partition(":")[0]


@dataclass(frozen=True)
class Keys:
    """The key names of one projection. The namespace lets several stacks share one Redis."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{{cfg}}:"

    @property
    def pointer(self) -> str:  # HASH family -> live version
        return self.prefix + "pointer"

    @property
    def sources(self) -> str:  # HASH family -> PostgreSQL change seq the live version reflects
        return self.prefix + "sources"

    @property
    def feed(self) -> str:  # STREAM of {family, version}
        return self.prefix + "feed"

    @property
    def version_seq(self) -> str:  # counter of versions
        return self.prefix + "seq"

    @property
    def epoch(self) -> str:  # which database the sources' sequence numbers belong to
        return self.prefix + "epoch"

    @property
    def snapshot_prefix(self) -> str:
        return self.prefix + "snap:"

    def snapshot(self, family: str, version: int) -> str:
        return f"{self.snapshot_prefix}{family}:{version}"


class SnapshotError(ValueError):
    """A snapshot this reader must not use (see the module's docstring); the fast path keeps its last good data."""


def encoding_of(family: str) -> str:
    kind = kind_of(family)
    if kind not in COLUMNS:
        raise ValueError(f"unknown family {family!r}")
    return DECK_IMAGE if kind in DECK_KINDS else JSON_ROWS


@dataclass(frozen=True)
class Header:
    family: str
    encoding: str
    rows: int
    chunks: tuple[tuple[int, int], ...]  # (bytes, xxh64) of each chunk, in order
    image: str = ""  # a deck's: the image layout it was laid out for

    def encode(self) -> bytes:
        fields = {"format": FORMAT, "version": FORMAT_VERSION, "family": self.family, "encoding": self.encoding,
                  "rows": self.rows, "chunks": [list(chunk) for chunk in self.chunks]}
        if self.image:
            fields["image"] = self.image
        return json.dumps(fields, separators=(",", ":")).encode()

    @property
    def size(self) -> int:
        return sum(length for length, _ in self.chunks)

    @classmethod
    def decode(cls, data: bytes, family: str, where: str) -> Header:
        """The header of `family`'s snapshot at `where`; SnapshotError unless this reader can use it."""
        fields = _json_object(data, where)
        if fields.get("format") != FORMAT:
            raise SnapshotError(f"{where}: not a {FORMAT} but {fields.get('format')!r}")
        if fields.get("version") != FORMAT_VERSION:
            raise SnapshotError(f"{where}: snapshot format version {fields.get('version')!r}; this reader takes "
                                f"{FORMAT_VERSION}")
        if fields.get("family") != family:
            raise SnapshotError(f"{where}: the header is {fields.get('family')!r}'s, not {family!r}'s")
        encoding = encoding_of(family)
        if fields.get("encoding") != encoding:
            raise SnapshotError(f"{where}: encoding {fields.get('encoding')!r} where {encoding!r} belongs")
        image = fields.get("image", "")
        if encoding == DECK_IMAGE and image != deck_image.IMAGE_LAYOUT:
            raise SnapshotError(f"{where}: laid out as {image!r}; this build maps {deck_image.IMAGE_LAYOUT!r}")
        return cls(family, encoding, _rows(fields, where), _chunks(fields, encoding, where), image)


def _json_object(data: bytes, where: str) -> dict:
    try:
        fields = json.loads(data) if len(data) <= MAX_HEADER_BYTES else None
    except ValueError:  # not UTF-8 or not JSON
        fields = None
    if isinstance(fields, list):
        raise SnapshotError(f"{where}: a format 1 snapshot (JSON chunks without a header); this reader takes "
                            f"format {FORMAT_VERSION}")
    if not isinstance(fields, dict):
        raise SnapshotError(f"{where}: no snapshot header (the first element is not a JSON object)")
    return fields


def _rows(fields: dict, where: str) -> int:
    rows = fields.get("rows")
    if type(rows) is not int or rows < 0:
        raise SnapshotError(f"{where}: rows {rows!r} is not a count")
    return rows


def _chunks(fields: dict, encoding: str, where: str) -> tuple[tuple[int, int], ...]:
    limit = CHUNK_BYTES if encoding == DECK_IMAGE else MAX_JSON_CHUNK_BYTES
    chunks = fields.get("chunks")
    if not isinstance(chunks, list) or (encoding == DECK_IMAGE and not chunks):
        raise SnapshotError(f"{where}: chunks {str(chunks)[:100]} is not a list of [bytes, xxh64]")
    for index, chunk in enumerate(chunks, 1):
        if not (isinstance(chunk, list) and len(chunk) == 2 and all(type(n) is int for n in chunk)
                and 0 < chunk[0] <= limit and 0 <= chunk[1] < 2**64):
            raise SnapshotError(f"{where}: chunk {index} is {chunk!r}, not [1 to {limit} bytes, xxh64]")
    return tuple((length, digest) for length, digest in chunks)


def check_chunk(header: Header, index: int, data: bytes, where: str) -> None:
    """SnapshotError unless `data` is chunk `index` (1-based, its place in the LIST) as the header describes it."""
    length, digest = header.chunks[index - 1]
    if len(data) != length:
        raise SnapshotError(f"{where}: chunk {index} has {len(data)} bytes, the header says {length}")
    if deck_image.digest64(data) != digest:
        raise SnapshotError(f"{where}: chunk {index} does not match its digest")
    if index == 1 and header.encoding == DECK_IMAGE:
        _check_image_start(header, data, where)


def _check_image_start(header: Header, data: bytes, where: str) -> None:
    """The image's own header, in the first chunk, must agree with the snapshot's before the rest is read."""
    try:
        kind, count, size = deck_image.read_image_header(data, where)
    except ValueError as exc:
        raise SnapshotError(str(exc)) from None
    if (kind, count, size) != (kind_of(header.family), header.rows, header.size):
        raise SnapshotError(f"{where}: the image is a {kind} deck of {count} rows in {size} bytes; the header says "
                            f"{kind_of(header.family)}, {header.rows} rows, {header.size} bytes")


def decode_rows(data: bytes, where: str) -> list[list]:
    """The rows of a (checked) JSON chunk."""
    try:
        rows = json.loads(data)
    except ValueError as exc:
        raise SnapshotError(f"{where}: a JSON chunk that does not parse ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise SnapshotError(f"{where}: a JSON chunk that is not a list of rows")
    return rows


class Encoder:
    """One version of a family, as the snapshot's chunks and then its header (which lists the chunks)."""

    def __init__(self, family: str):
        self.family = family
        self.encoding = encoding_of(family)
        self._chunks: list[tuple[int, int]] = []
        self._rows = 0

    def chunks(self, batches: Iterable[Sequence[Sequence]]) -> Iterator[bytes | memoryview]:
        """The chunks of the rows, given in batches (e.g. a cursor's fetchmany). ValueError names a bad row."""
        encoded = self._image_chunks(batches) if self.encoding == DECK_IMAGE else self._json_chunks(batches)
        for chunk in encoded:
            self._chunks.append((len(chunk), deck_image.digest64(chunk)))
            yield chunk

    def header(self) -> bytes:
        """Once chunks() is exhausted."""
        image = deck_image.IMAGE_LAYOUT if self.encoding == DECK_IMAGE else ""
        return Header(self.family, self.encoding, self._rows, tuple(self._chunks), image).encode()

    def _json_chunks(self, batches: Iterable[Sequence[Sequence]]) -> Iterator[bytes]:
        for batch in batches:
            for start in range(0, len(batch), CHUNK_ROWS):
                rows = batch[start:start + CHUNK_ROWS]
                self._rows += len(rows)
                yield json.dumps(rows, separators=(",", ":")).encode()

    def _image_chunks(self, batches: Iterable[Sequence[Sequence]]) -> Iterator[memoryview]:
        builder = deck_image.DeckBuilder(kind_of(self.family))
        for batch in batches:
            builder.add(batch)
        image = memoryview(builder.finish())
        self._rows = len(builder)
        for start in range(0, len(image), CHUNK_BYTES):
            yield image[start:start + CHUNK_BYTES]
