"""Field descriptors: how one API field (a dotted path of a message) maps to a database column.

Accounts and every configuration resource describe themselves with a tuple of Field, and the
generic conversions here do the rest in both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from psycopg.types.json import Jsonb

from control.api import validation

# The largest per-minute rate or fee: 1,000,000 currency units in micros. Far above any real tariff, and low
# enough that seconds x rate stays exact in int64 in the compiled fast path.
MAX_MONEY = 10**12
MAX_SECONDS = 86_400

ID_PATTERNS = {
    "accounts": re.compile(r"[0-9A-Za-z]{4,20}"),
    "rateGroups": re.compile(r"[a-z0-9][a-z0-9-]{0,62}"),
    "trunks": re.compile(r"[a-z0-9][a-z0-9-]{0,62}"),
    "localizations": re.compile(r"[a-z0-9][a-z0-9-]{0,62}"),
    "ipMaps": re.compile(r"[a-z0-9][a-z0-9-]{0,62}"),
    "sipDevices": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}"),
    "dids": re.compile(r"[0-9]{1,32}"),
    "callerIds": re.compile(r"[0-9]{1,32}"),
    "rates": re.compile(r"[0-9]{1,18}"),
}


@dataclass(frozen=True)
class Field:
    path: str  # API path, as written in update_mask
    column: str
    kind: str  # str | int | bool | enum | ref | refs | time | strings | messages
    enum_prefix: str = ""  # enum: proto value name = enum_prefix + stored text
    enum_type: Any = None
    collection: str = ""  # ref/refs: "rateGroups", "trunks", "accounts", ...
    max_len: int = 255
    message_type: Any = None  # messages: the repeated message's class
    max_value: int | None = None  # int: the largest value accepted (keeps the fast path's int64 math exact)


def enum(path: str, column: str, enum_type, prefix: str = "") -> Field:
    return Field(path, column, "enum", enum_prefix=prefix, enum_type=enum_type)


def read(message, path: str):
    """The value at a dotted path of a message (`profile.city`)."""
    for part in path.split("."):
        message = getattr(message, part)
    return message


def is_set(message, path: str) -> bool:
    """Whether a request populated this path (proto3: a non-default value, a present message)."""
    *parents, leaf = path.split(".")
    for part in parents:
        if not message.HasField(part):
            return False
        message = getattr(message, part)
    field = message.DESCRIPTOR.fields_by_name[leaf]
    if field.message_type is not None and not _is_repeated(field):
        return message.HasField(leaf)
    return bool(getattr(message, leaf))


def _is_repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28; `label` is gone in 7
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def resource_id(path: str, name: str, collection: str) -> str | None:
    """`collection/{id}` -> id; "" -> None (no reference)."""
    if name == "":
        return None
    prefix = collection + "/"
    ident = name.removeprefix(prefix)
    if not name.startswith(prefix) or not ID_PATTERNS[collection].fullmatch(ident):
        raise validation.invalid(path, f"must be a resource name like {prefix}{{id}}")
    return ident


def to_column(field: Field, value) -> Any:
    """API value -> database value. Enum UNSPECIFIED and empty references become None ("default")."""
    if field.kind == "enum":
        if value == 0:
            return None
        try:
            return field.enum_type.Name(value).removeprefix(field.enum_prefix)
        except ValueError:
            raise validation.invalid(field.path, f"unknown value {value}") from None
    if field.kind == "ref":
        return resource_id(field.path, value, field.collection)
    if field.kind == "refs":
        for index, item in enumerate(value):
            if not item:
                raise validation.invalid(f"{field.path}[{index}]", "must not be empty")
        ids = [resource_id(f"{field.path}[{i}]", v, field.collection) for i, v in enumerate(value)]
        if len(set(ids)) != len(ids):
            raise validation.invalid(field.path, "lists the same object twice")
        return ids
    if field.kind == "strings":
        return [validation.max_length(f"{field.path}[{i}]", v.strip(), field.max_len) for i, v in enumerate(value)]
    if field.kind == "messages":
        return Jsonb([json_format.MessageToDict(m, preserving_proto_field_name=True) for m in value])
    if field.kind == "time":
        return value.ToDatetime(tzinfo=UTC) if value.ByteSize() else None
    if field.kind == "str":
        return validation.max_length(field.path, value.strip(), field.max_len)
    if field.kind == "int" and field.max_value is not None and value > field.max_value:
        raise validation.invalid(field.path, f"must be at most {field.max_value}")
    return value


def set_from_column(message, field: Field, value) -> None:
    """Write a database value into the message at the field's path."""
    *parents, leaf = field.path.split(".")
    target = message
    for part in parents:
        target = getattr(target, part)
    if value is None:
        return
    if field.kind == "enum":
        setattr(target, leaf, field.enum_type.Value(field.enum_prefix + value))
    elif field.kind == "ref":
        setattr(target, leaf, f"{field.collection}/{value}")
    elif field.kind == "refs":
        getattr(target, leaf).extend(f"{field.collection}/{v}" for v in value)
    elif field.kind == "strings":
        getattr(target, leaf).extend(value)
    elif field.kind == "messages":
        getattr(target, leaf).extend(json_format.ParseDict(v, field.message_type()) for v in value)
    elif field.kind == "time":
        getattr(target, leaf).CopyFrom(timestamp(value))
    elif field.kind == "str":
        setattr(target, leaf, str(value))  # also network types, e.g. a cidr column
    else:
        setattr(target, leaf, value)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
