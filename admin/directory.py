"""`dids`, `caller-ids`, `sip-devices`, `ip-maps` and `localizations`: who is who on the wire."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from google.protobuf.message import Message

from admin import calls, fields, resources
from admin.errors import UsageError
from admin.fields import Flag
from admin.resources import Kind, ListFilter, Parent
from tollgate.v1 import directory_pb2, directory_pb2_grpc

Stub = directory_pb2_grpc.DirectoryServiceStub


def account_ref(help: str) -> Flag:
    return Flag(("--account",), "account", help, {"metavar": "NUMBER"}, lambda n: calls.optional_name("accounts", n))


def last(name: str) -> str:
    return calls.last_segment(name) if name else ""


ACCOUNT_FILTER = ListFilter("--account", "account", "NUMBER", "only this account's", calls.account_name)

DIDS = Kind(
    command="dids",
    help="DIDs: numbers routed in to their owner's SIP device",
    noun="a DID",
    stub=Stub,
    pb2=directory_pb2,
    message="Did",
    field="did",
    plural="dids",
    collection="dids",
    key="NUMBER",
    key_help="the DID, digits",
    id_field="did_id",
    flags=(
        account_ref("owner account number; '' = not assigned"),
        Flag(("--provider",), "provider", "supplier (a provider account number); '' = none", {"metavar": "NUMBER"},
             lambda n: calls.optional_name("accounts", n)),
        *resources.STATUS_FLAGS,
    ),
    columns=(
        ("number", lambda d: d.number or calls.last_segment(d.name)),
        ("account", lambda d: last(d.account)),
        ("provider", lambda d: last(d.provider)),
        ("status", lambda d: resources.status_text(d.status)),
        ("created", lambda d: d.create_time.ToJsonString() if d.HasField("create_time") else ""),
    ),
    list_filters=(ACCOUNT_FILTER,),
)

CALLER_IDS = Kind(
    command="caller-ids",
    help="caller ids an account may present (CLI pool, SPEC §6)",
    noun="a caller id",
    stub=Stub,
    pb2=directory_pb2,
    message="CallerId",
    field="caller_id",
    plural="caller_ids",
    collection="callerIds",
    key="NUMBER",
    key_help="the caller id, digits",
    key_path="number",
    parent=Parent("accounts", "ACCOUNT", "account number"),
    columns=(("number", lambda c: c.number), ("name", lambda c: c.name)),
    verbs=("create", "get", "list", "delete"),
    create_verb="add",
)


def read_new_password(resource: Message, args: argparse.Namespace) -> None:
    """A SIP password is never echoed back; prompt (twice) when it was not given and someone is typing."""
    if resource.password:
        return
    if not sys.stdin.isatty():
        raise UsageError("--password is required when stdin is not a terminal")
    first = getpass.getpass("SIP password: ")
    if first != getpass.getpass("again: "):
        raise UsageError("the passwords differ")
    if not first:
        raise UsageError("the password must not be empty")
    resource.password = first


SIP_DEVICES = Kind(
    command="sip-devices",
    help="SIP devices: digest credentials of an account (stored as HA1)",
    noun="a SIP device",
    stub=Stub,
    pb2=directory_pb2,
    message="SipDevice",
    field="sip_device",
    plural="sip_devices",
    collection="sipDevices",
    key="USERNAME",
    key_help="the SIP username",
    id_field="sip_device_id",
    create_flags=(
        Flag(("--account",), "account", "owner account number", {"metavar": "NUMBER"}, calls.account_name),
    ),
    flags=(
        fields.text("--password", "password", "digest password; prompted for on create when omitted", "PASSWORD"),
        *resources.STATUS_FLAGS,
    ),
    required=("account",),
    hidden_paths=frozenset({"password"}),
    columns=(
        ("username", lambda d: calls.last_segment(d.name)),
        ("account", lambda d: last(d.account)),
        ("status", lambda d: resources.status_text(d.status)),
        ("realm", lambda d: d.realm),
        ("created", lambda d: d.create_time.ToJsonString() if d.HasField("create_time") else ""),
    ),
    list_filters=(ACCOUNT_FILTER,),
    before_create=read_new_password,
)

IP_MAPS = Kind(
    command="ip-maps",
    help="IP maps: calls from a network (and tech prefix) belong to an account",
    noun="an IP map",
    stub=Stub,
    pb2=directory_pb2,
    message="IpMap",
    field="ip_map",
    plural="ip_maps",
    collection="ipMaps",
    key="ID",
    key_help="IP map id (or ipMaps/{id})",
    id_field="ip_map_id",
    flags=(
        Flag(("--account",), "account", "account number the calls belong to", {"metavar": "NUMBER"},
             calls.account_name),
        fields.text("--cidr", "cidr", "network, e.g. 192.0.2.0/24; a bare address is one host", "CIDR"),
        fields.text("--tech-prefix", "tech_prefix", "digits stripped from the destination; '' = none", "DIGITS"),
        fields.text("--description", "description", "free text"),
        *resources.STATUS_FLAGS,
    ),
    required=("account", "cidr"),
    columns=(
        ("id", lambda m: calls.last_segment(m.name)),
        ("account", lambda m: last(m.account)),
        ("cidr", lambda m: m.cidr),
        ("tech prefix", lambda m: m.tech_prefix),
        ("description", lambda m: m.description),
        ("status", lambda m: resources.status_text(m.status)),
    ),
    list_filters=(ACCOUNT_FILTER,),
)

RULE_LISTS = (
    ("caller-id-inbound", "caller_id_inbound", "caller id of calls coming in"),
    ("caller-id-outbound", "caller_id_outbound", "caller id of calls going out"),
    ("destination", "destination", "dialled number, origination side"),
    ("termination-caller-id", "termination_caller_id", "caller id sent to the provider"),
    ("termination-destination", "termination_destination", "number sent to the provider"),
)


def rules_of(path: str) -> Callable[[Message], str]:
    return lambda profile: "  ".join(getattr(profile, path))


RULE_HELP = "; repeat in order ('match/replace', '*/prepend', 'match/' strips, '/regex/replacement/')"

LOCALIZATIONS = Kind(
    command="localizations",
    help="localization profiles: ordered number-translation rules (SPEC §7)",
    noun="a localization profile",
    stub=Stub,
    pb2=directory_pb2,
    message="Localization",
    field="localization",
    plural="localizations",
    collection="localizations",
    key="ID",
    key_help="profile id (or localizations/{id})",
    id_field="localization_id",
    flags=(
        fields.text("--display-name", "display_name", "name shown to people"),
        *(fields.repeated(f"--{flag}", path, f"a rule for the {what}{RULE_HELP}", "RULE") for flag, path, what in
          RULE_LISTS),
    ),
    update_flags=tuple(fields.clear(f"--no-{flag}", path, f"remove every {flag} rule") for flag, path, _ in RULE_LISTS),
    columns=(
        ("id", lambda p: calls.last_segment(p.name)),
        ("display name", lambda p: p.display_name),
        *((flag, rules_of(path)) for flag, path, _ in RULE_LISTS),
    ),
)

KINDS = (DIDS, CALLER_IDS, SIP_DEVICES, IP_MAPS, LOCALIZATIONS)


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    for kind in KINDS:
        resources.add_parsers(kind, commands, common)
