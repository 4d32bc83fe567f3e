"""Generic create/get/update/list/delete commands for the configuration resources.

One `Kind` per resource type says how its flags, names and RPCs fit together (the way fields.Flag drives
flags, request and update_mask), so `rate-groups`, `trunks`, `dids`, … all behave alike: tables by default,
`--json` for scripts, update masks of exactly the flags given, list following every page.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from admin import calls, fields, output
from admin.confirm import ASKS, add_yes_flag, confirm
from admin.errors import EXIT_OK, UsageError
from admin.fields import Flag
from admin.money import format_rate
from tollgate.v1 import common_pb2

# The status flags every configuration resource shares (create takes --inactive; update both).
STATUS_FLAGS: tuple[Flag, ...] = (
    fields.const("--active", "status", "in use (default)", common_pb2.STATUS_ACTIVE, "status"),
    fields.const("--inactive", "status", "kept but not used", common_pb2.STATUS_INACTIVE, "status"),
)


def status_text(value: int) -> str:
    """STATUS_ACTIVE -> "ACTIVE"; unspecified reads as ACTIVE, which is what the server makes of it."""
    return common_pb2.Status.Name(value or common_pb2.STATUS_ACTIVE).removeprefix("STATUS_")


@dataclass(frozen=True)
class Parent:
    """Child resources (rates, caller ids) live under a parent: `rateGroups/{id}/rates/{prefix}`."""

    collection: str  # "rateGroups"
    metavar: str  # "RATE_GROUP"
    help: str

    def name(self, ident: str) -> str:
        return calls.resource_name(self.collection, ident)


@dataclass(frozen=True)
class ListFilter:
    """An optional flag of `list` that narrows the request (`trunks list --provider N`)."""

    flag: str
    field: str  # request field
    metavar: str
    help: str
    convert: Callable[[str], str]


Column = tuple[str, Callable[[Any], str]]


@dataclass(frozen=True)
class Kind:
    command: str  # "rate-groups"
    help: str
    noun: str  # "a rate group", for the verbs' help
    stub: type
    pb2: ModuleType  # where the resource and its request classes live
    message: str  # "RateGroup": the resource class and the RPC names (CreateRateGroup, ListRateGroups…)
    field: str  # "rate_group": the resource field of Create/Update requests
    plural: str  # "rate_groups": the list field of List responses
    collection: str  # "rateGroups"; for child resources the segment under the parent ("rates")
    key: str  # metavar of the id argument: "ID", "PREFIX", "NUMBER", "USERNAME"
    key_help: str
    id_field: str = ""  # the Create request's "<x>_id"; empty for child resources
    key_path: str = ""  # child resources: the resource field that carries the key ("prefix")
    parent: Parent | None = None
    flags: tuple[Flag, ...] = ()  # create and update
    create_flags: tuple[Flag, ...] = ()  # create only (immutable fields)
    update_flags: tuple[Flag, ...] = ()  # update only (e.g. --no-trunks)
    required: tuple[str, ...] = ()  # paths create insists on
    money_paths: frozenset[str] = frozenset()
    hidden_paths: frozenset[str] = frozenset()  # input-only fields, always empty in responses
    columns: tuple[Column, ...] = ()
    list_filters: tuple[ListFilter, ...] = ()
    verbs: tuple[str, ...] = ("create", "get", "update", "list", "delete")
    create_verb: str = "create"
    # Last look at a resource before CreateX is sent (e.g. prompting for a password not given as a flag).
    before_create: Callable[[Message, argparse.Namespace], None] | None = None
    extra_verbs: Callable[[Kind, Callable[..., argparse.ArgumentParser]], None] | None = None

    def new(self, **values: Any) -> Message:
        return getattr(self.pb2, self.message)(**values)

    def request(self, rpc: str, **values: Any) -> Message:
        return getattr(self.pb2, f"{rpc}Request")(**values)

    def call(self, stub: Any, rpc: str, request: Message, args: argparse.Namespace) -> Any:
        return getattr(stub, rpc)(request, **calls.options(args))

    def name(self, args: argparse.Namespace) -> str:
        if self.parent is None:
            return calls.resource_name(self.collection, args.key)
        return f"{self.parent.name(args.parent)}/{self.collection}/{args.key}"


# --- the verbs -----------------------------------------------------------------------------------------


def show(kind: Kind, resource: Message, args: argparse.Namespace) -> None:
    if args.json:
        output.print_json(output.to_dict(resource))
    else:
        # Configuration carries prices (rates, fees), printed with every micro, never amounts.
        output.print_record(resource, {path: format_rate for path in kind.money_paths}, set(kind.hidden_paths))


def create(kind: Kind, stub: Any, args: argparse.Namespace) -> int:
    resource = kind.new()
    fields.apply(resource, fields.given(args, kind.create_flags + kind.flags))
    if kind.before_create is not None:
        kind.before_create(resource, args)
    if kind.parent is not None:
        setattr(resource, kind.key_path, args.key)
        request = kind.request(f"Create{kind.message}", parent=kind.parent.name(args.parent), **{kind.field: resource})
    else:
        request = kind.request(f"Create{kind.message}", **{kind.id_field: args.key, kind.field: resource})
    show(kind, kind.call(stub, f"Create{kind.message}", request, args), args)
    return EXIT_OK


def get(kind: Kind, stub: Any, args: argparse.Namespace) -> int:
    request = kind.request(f"Get{kind.message}", name=kind.name(args))
    show(kind, kind.call(stub, f"Get{kind.message}", request, args), args)
    return EXIT_OK


def update(kind: Kind, stub: Any, args: argparse.Namespace) -> int:
    values = fields.given(args, kind.flags + kind.update_flags)
    if not values:
        # An empty mask would mean "the fields set", i.e. nothing; refusing says so instead.
        raise UsageError("nothing to update: give at least one field flag (see --help)")
    resource = kind.new(name=kind.name(args))
    fields.apply(resource, values)
    request = kind.request(
        f"Update{kind.message}", **{kind.field: resource}, update_mask=FieldMask(paths=list(values))
    )
    show(kind, kind.call(stub, f"Update{kind.message}", request, args), args)
    return EXIT_OK


def iter_all(
    kind: Kind, stub: Any, args: argparse.Namespace, limit: int | None = None, page_size: int = 0, **filters: Any
) -> Iterator[Any]:
    """Follow next_page_token until the server says done or `limit` resources were seen."""
    request = kind.request(f"List{kind.message}s", page_size=page_size or (min(limit, 1000) if limit else 0), **filters)
    seen = 0
    while True:
        response = kind.call(stub, f"List{kind.message}s", request, args)
        for item in getattr(response, kind.plural):
            if limit and seen >= limit:
                return
            seen += 1
            yield item
        if not response.next_page_token or (limit and seen >= limit):
            return
        request.page_token = response.next_page_token


def list_(kind: Kind, stub: Any, args: argparse.Namespace) -> int:
    filters = {f.field: f.convert(value) for f in kind.list_filters if (value := getattr(args, f.field)) is not None}
    if kind.parent is not None:
        filters["parent"] = kind.parent.name(args.parent)
    items = list(iter_all(kind, stub, args, args.limit, args.page_size or 0, **filters))
    if args.json:
        output.print_json([output.to_dict(item) for item in items])
    else:
        output.print_table(([render(item) for _, render in kind.columns] for item in items),
                           [header for header, _ in kind.columns])
    return EXIT_OK


def delete(kind: Kind, stub: Any, args: argparse.Namespace) -> int:
    name = kind.name(args)
    confirm(args, f"delete {name}")
    kind.call(stub, f"Delete{kind.message}", kind.request(f"Delete{kind.message}", name=name), args)
    if args.json:
        output.print_json({"deleted": name})
    else:
        print(f"deleted {name}")
    return EXIT_OK


# --- argparse ------------------------------------------------------------------------------------------


def add_parsers(kind: Kind, commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser(kind.command, help=kind.help, description=kind.help, parents=[common])
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Callable[..., int], help: str, key: bool = True) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(handler=functools.partial(handler, kind), stub=kind.stub)
        if kind.parent is not None:
            parser.add_argument("parent", metavar=kind.parent.metavar, help=kind.parent.help)
        if key:
            parser.add_argument("key", metavar=kind.key, help=kind.key_help)
        return parser

    if "create" in kind.verbs:
        p = verb(kind.create_verb, create, f"{kind.create_verb} {kind.noun}")
        fields.add_flags(p, kind.create_flags + kind.flags, required=kind.required)
    if "get" in kind.verbs:
        verb("get", get, f"show {kind.noun}")
    if "update" in kind.verbs:
        p = verb("update", update, f"change {kind.noun}: only the fields given as flags")
        fields.add_flags(p, kind.flags + kind.update_flags)
    if "list" in kind.verbs:
        p = verb("list", list_, "list them, following all pages", key=False)
        for f in kind.list_filters:
            p.add_argument(f.flag, dest=f.field, metavar=f.metavar, help=f.help)
        p.add_argument("--page-size", type=fields.positive_int, metavar="N", help="items per request")
        p.add_argument("--limit", type=fields.positive_int, metavar="N", help="stop after N items")
    if "delete" in kind.verbs:
        add_yes_flag(verb("delete", delete, f"delete {kind.noun}; {ASKS}"))
    if kind.extra_verbs is not None:
        kind.extra_verbs(kind, verb)

