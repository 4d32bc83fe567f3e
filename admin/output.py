"""Printing: JSON for scripts (the proto3 JSON mapping, untouched), tables for people."""

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tabulate import tabulate

# How a record prints its money fields, by dotted path: an amount with the company's decimals, a price with
# all six (admin/money.py). Fields not named print as they are.
MoneyFormats = Mapping[str, Callable[[int], str]]


def to_dict(message: Message) -> dict[str, Any]:
    # Defaults are printed too so a script finds every key (false, 0, "") instead of guessing.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    print(tabulate(list(rows), headers=headers, disable_numparse=True))


def is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped `label` for `is_repeated`; pyproject still allows releases that only have `label`.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


# How one item of a repeated message field reads in a table cell, by message type (e.g. a gateway as
# "192.0.2.1:5060/udp"); other messages fall back to the one-line text format.
ITEM_FORMATS: dict[str, Callable[[Any], str]] = {}


def item_text(item: Any) -> str:
    if isinstance(item, Message):
        known = ITEM_FORMATS.get(item.DESCRIPTOR.full_name)
        return known(item) if known else text_format.MessageToString(item, as_one_line=True)
    return str(item)


def scalar(message: Message, field: FieldDescriptor, money: MoneyFormats, path: str) -> str:
    """One field as people read it: enum names, decimal money, RFC 3339 times, blank when unset."""
    value = getattr(message, field.name)
    if is_repeated(field):
        return ", ".join(item_text(item) for item in value)
    if field.message_type is not None:  # only Timestamps reach here; unset ones mean "never"/"not yet"
        return value.ToJsonString() if message.HasField(field.name) else ""
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else str(value)  # a value newer than these stubs
    if path in money:
        return money[path](value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def flatten(
    message: Message, money: MoneyFormats, skip: set[str] = frozenset(), prefix: str = ""
) -> list[tuple[str, str]]:
    """Key/value rows of a resource; nested messages (other than Timestamps) become dotted keys."""
    rows: list[tuple[str, str]] = []
    for field in message.DESCRIPTOR.fields:
        path = prefix + field.name
        if path in skip:
            continue
        is_nested = field.message_type is not None and field.message_type.full_name != "google.protobuf.Timestamp"
        if is_nested and not is_repeated(field):
            rows.extend(flatten(getattr(message, field.name), money, skip, path + "."))
        else:
            rows.append((path, scalar(message, field, money, path)))
    return rows


def print_record(message: Message, money: MoneyFormats, skip: set[str] = frozenset()) -> None:
    print(tabulate(flatten(message, money, skip), tablefmt="plain", disable_numparse=True))
