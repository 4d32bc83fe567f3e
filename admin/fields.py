"""Flags that set resource fields: one table drives argparse, the request message and the update_mask.

Every flag defaults to None, so "given on the command line" is simply "not None"; that is what lets
`update` send a mask of exactly the flags the operator typed (STYLE "CLI": never `*`).
"""

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from admin.calls import optional_name
from admin.money import parse_money
from admin.output import is_repeated


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    path: str  # dotted field path in the resource; also the update_mask path
    help: str
    options: dict[str, Any] = field(default_factory=dict)  # extra add_argument() keywords
    convert: Callable[[Any], Any] | None = None  # parsed value -> proto value
    group: str | None = None  # flags sharing a group are mutually exclusive (--postpaid/--prepaid)
    dest: str | None = None  # where argparse keeps it, when the path is taken (the global --address)

    @property
    def key(self) -> str:
        return self.dest or self.path


def money_arg(text: str) -> int:
    try:
        return parse_money(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def timestamp_arg(text: str) -> str:
    """Validate early (a usage error, exit 2); `to_timestamp` converts once the flag is known given."""
    to_timestamp(text)
    return text


def to_timestamp(text: str) -> Timestamp | None:
    """RFC 3339 with an explicit offset; "never" clears the field (None = unset Timestamp)."""
    if text.lower() == "never":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        # A time without offset would silently mean this machine's zone; say which one instead.
        raise argparse.ArgumentTypeError(f"add a UTC offset or Z: {text!r}")
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def text(name: str, path: str, help: str, metavar: str = "TEXT") -> Flag:
    return Flag((name,), path, help, {"metavar": metavar})


def reference(name: str, path: str, help: str, collection: str) -> Flag:
    """A reference to another resource: a bare id ("demo-retail") or its name ("rateGroups/demo-retail");
    '' clears it."""
    return Flag((name,), path, help, {"metavar": "ID"}, lambda ident: optional_name(collection, ident))


def integer(name: str, path: str, help: str, **options: Any) -> Flag:
    return Flag((name,), path, help, {"metavar": "N", "type": non_negative_int, **options})


def money(name: str, path: str, help: str) -> Flag:
    return Flag((name,), path, help, {"metavar": "AMOUNT", "type": money_arg})


def yes_no(name: str, path: str, help: str) -> Flag:
    return Flag((name,), path, help, {"action": argparse.BooleanOptionalAction})


def choice(name: str, path: str, help: str, values: dict[str, int]) -> Flag:
    return Flag((name,), path, help, {"type": str.lower, "choices": list(values)}, values.__getitem__)


def timestamp(name: str, path: str, help: str) -> Flag:
    return Flag((name,), path, help, {"metavar": "RFC3339", "type": timestamp_arg}, to_timestamp)


def const(name: str, path: str, help: str, value: Any, group: str) -> Flag:
    return Flag((name,), path, help, {"action": "store_const", "const": value}, group=group)


def repeated(name: str, path: str, help: str, metavar: str, item: Callable[[str], Any] | None = None) -> Flag:
    """A list field: the flag may be given many times and the values keep their order. In an update the
    list given replaces the stored one (the mask names the whole field)."""
    options: dict[str, Any] = {"action": "append", "metavar": metavar}
    if item is not None:
        options["type"] = item
    return Flag((name,), path, help, options, group=path)


def clear(name: str, path: str, help: str) -> Flag:
    """`--no-trunks`: set a list field to empty; exclusive with the flag that fills it."""
    return Flag((name,), path, help, {"action": "store_const", "const": []}, group=path)


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag], required: Iterable[str] = ()) -> None:
    """Register flags; `required` names paths that must be given (e.g. email on create)."""
    groups: dict[str, Any] = {}
    must = set(required)
    for flag in flags:
        target: Any = parser
        # A required flag cannot sit in a mutually exclusive group (argparse refuses); its partner
        # (e.g. --no-gateways) is then simply not offered on that command.
        if flag.group and flag.path not in must:
            if flag.group not in groups:
                groups[flag.group] = parser.add_mutually_exclusive_group()
            target = groups[flag.group]
        extra = {"required": True} if flag.path in must else {}
        target.add_argument(*flag.names, dest=flag.key, default=None, help=flag.help, **flag.options, **extra)


def given(args: argparse.Namespace, flags: Iterable[Flag]) -> dict[str, Any]:
    """The proto values of the flags present on the command line, keyed by field path."""
    values: dict[str, Any] = {}
    for flag in flags:
        raw = getattr(args, flag.key, None)
        if raw is not None and flag.path not in values:
            values[flag.path] = flag.convert(raw) if flag.convert else raw
    return values


def apply(message: Message, values: dict[str, Any]) -> None:
    """Set dotted paths on a message; None on a message field (a Timestamp) clears it, and a list
    replaces a repeated field."""
    for path, value in values.items():
        *parents, leaf = path.split(".")
        target = message
        for part in parents:
            target = getattr(target, part)
        descriptor = target.DESCRIPTOR.fields_by_name[leaf]
        if is_repeated(descriptor):
            container = getattr(target, leaf)
            del container[:]
            container.extend(value)
        elif descriptor.message_type is None:
            setattr(target, leaf, value)
        elif value is None:
            target.ClearField(leaf)
        else:
            getattr(target, leaf).CopyFrom(value)
