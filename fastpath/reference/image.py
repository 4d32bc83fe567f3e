"""Readable twin of the deck image's layout (fastpath/deck_image.pyx, .pxd): the rows out of an image's bytes.

The layout stated as struct formats, native byte order and the C compiler's alignment made explicit:

    ImageHeader   HEADER below (144 bytes), then zeros up to table_offset (192)
    Entry[count]  ENTRY below (64 bytes): Slot {key = int('1' + prefix), index, reserved}, then the RateRec
                  {connect_fee, rate_per_min, included_seconds, initial_increment, increment, priority, strip,
                  prefix_len, 3 bytes of padding, str_offset, str_length}
    ...           the level, pilots and remap of the lookup (not needed to list the rows)
    string pool   strings_size bytes at strings_offset: forced trunks joined by ',' (odeck), prepend (tdeck)

decode() is what the projection's reader uses when it wants a deck's rows rather than its lookups (tools, tests:
fastpath.feed.ProjectionFeed.read); the fast path maps the image instead (deck_image.DeckImage).
"""

from __future__ import annotations

import struct

MAGIC = b"TGDECKIM"
FORMAT_VERSION = 2
BYTE_ORDER = 0x01020304
HEADER = struct.Struct("=8s6I7Q2I5Q2I")
HEADER_FIELDS = ("magic", "format_version", "kind", "header_size", "record_size", "slot_size", "length_mask", "count",
                 "slot_count", "table_offset", "records_offset", "strings_offset", "strings_size", "file_size",
                 "byte_order", "level_digits", "level_offset", "pilot_offset", "pilot_count", "remap_offset",
                 "hash_seed", "entry_size", "level_entry_size")
ENTRY = struct.Struct("=QIIqq5iB3xII")
KINDS = {1: "odeck", 2: "tdeck"}


def header(data: bytes | memoryview) -> dict[str, int | bytes]:
    """The header fields of an image; ValueError unless it is one of this format and layout."""
    if len(data) < HEADER.size:
        raise ValueError(f"{len(data)} bytes is too short for a deck image")
    fields = dict(zip(HEADER_FIELDS, HEADER.unpack_from(data, 0), strict=True))
    expected = {"magic": MAGIC, "format_version": FORMAT_VERSION, "byte_order": BYTE_ORDER, "header_size": HEADER.size,
                "entry_size": ENTRY.size, "slot_size": 16, "record_size": ENTRY.size - 16}
    wrong = {name: fields[name] for name, value in expected.items() if fields[name] != value}
    if wrong or fields["kind"] not in KINDS:
        raise ValueError(f"not a deck image of format {FORMAT_VERSION} in this layout: {wrong or fields['kind']}")
    return fields


def decode(data: bytes | memoryview) -> tuple[str, list[list]]:
    """(kind, rows sorted by prefix): each row the snapshot row it was built from (COLUMNS[kind])."""
    fields = header(data)
    if fields["file_size"] != len(data):
        raise ValueError(f"the image says {fields['file_size']} bytes, there are {len(data)}")
    table, count = fields["table_offset"], fields["count"]
    pool = bytes(data[fields["strings_offset"]:fields["strings_offset"] + fields["strings_size"]])
    kind = KINDS[fields["kind"]]
    rows = [_row(kind, entry, pool) for entry in ENTRY.iter_unpack(data[table:table + count * ENTRY.size])]
    rows.sort(key=lambda row: row[0])
    return kind, rows


def _row(kind: str, entry: tuple, pool: bytes) -> list:
    key, _index, _reserved, connect_fee, rate, included, initial, increment, priority, strip, length, at, size = entry
    prefix = str(key)[1:]
    if len(prefix) != length or at + size > len(pool):
        raise ValueError(f"entry of key {key}: prefix length {length}, string [{at}, {at + size}) out of place")
    text = pool[at:at + size].decode("utf-8")
    if kind == "odeck":
        return [prefix, connect_fee, included, rate, initial, increment, text.split(",") if text else [], priority]
    return [prefix, connect_fee, included, rate, initial, increment, strip, text, priority]
