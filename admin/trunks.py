"""`trunks …` and `termination-rates …`: provider trunks, their gateways, and what the provider charges."""

from __future__ import annotations

import argparse

from admin import calls, decks, fields, output, resources
from admin.fields import Flag
from admin.rating import RATE_MONEY_PATHS, rate_columns, rate_flags, short_sha
from admin.resources import Kind, ListFilter, Parent
from tollgate.v1 import trunks_pb2, trunks_pb2_grpc

TRANSPORTS = {"udp": trunks_pb2.TRANSPORT_UDP, "tcp": trunks_pb2.TRANSPORT_TCP, "tls": trunks_pb2.TRANSPORT_TLS}


def transport_text(value: int) -> str:
    return trunks_pb2.Transport.Name(value or trunks_pb2.TRANSPORT_UDP).removeprefix("TRANSPORT_").lower()


def gateway_text(gateway: trunks_pb2.Gateway) -> str:
    return f"{gateway.address}/{transport_text(gateway.transport)}"


output.ITEM_FORMATS[trunks_pb2.Gateway.DESCRIPTOR.full_name] = gateway_text


def parse_gateway(text: str) -> trunks_pb2.Gateway:
    """"host:port[/udp|tcp|tls]" -> Gateway; the server checks the address itself."""
    address, slash, transport = text.rpartition("/")
    if not slash:
        address, transport = text, "udp"
    if transport.lower() not in TRANSPORTS:
        raise argparse.ArgumentTypeError(f"transport must be one of {', '.join(TRANSPORTS)}: {text!r}")
    if not address:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return trunks_pb2.Gateway(address=address, transport=TRANSPORTS[transport.lower()])


def localization_name(ident: str) -> str:
    return calls.optional_name("localizations", ident)


TRUNK_FLAGS: tuple[Flag, ...] = (
    fields.text("--display-name", "display_name", "name shown to people"),
    fields.repeated(
        "--gateway",
        "gateways",
        "HOST:PORT[/udp|tcp|tls] (default udp); repeat: the primary first, then failovers in order",
        "HOST:PORT[/T]",
        parse_gateway,
    ),
    fields.integer("--max-calls", "max_concurrent_calls", "concurrent calls, 0 = unlimited"),
    fields.integer("--cps", "cps", "calls per second, 0 = unlimited"),
    Flag(
        ("--localization",),
        "localization",
        "localization profile id; '' removes it",
        {"metavar": "ID"},
        localization_name,
    ),
    fields.integer("--priority", "priority", "lower first among equal costs"),
    *resources.STATUS_FLAGS,
    fields.integer("--pdd-timeout", "pdd_timeout_seconds",
                   "seconds a gateway may take to ring or answer before the next is tried; 0 = 8 s"),
    fields.yes_no("--pass-diversion", "pass_diversion", "let the customer's Diversion header reach this trunk"),
    fields.yes_no("--pass-privacy", "pass_privacy", "let the customer's Privacy header reach this trunk"),
    fields.yes_no("--pass-history-info", "pass_history_info",
                  "let the customer's History-Info header reach this trunk"),
    fields.choice("--topology-hiding", "topology_hiding",
                  "mask the caller's addresses and Call-ID toward this trunk (default on)",
                  {"on": trunks_pb2.TOPOLOGY_HIDING_ON, "off": trunks_pb2.TOPOLOGY_HIDING_OFF}),
)

TRUNKS = Kind(
    command="trunks",
    help="provider trunks: gateways with failover, channel and CPS limits",
    noun="a trunk",
    stub=trunks_pb2_grpc.TrunkServiceStub,
    pb2=trunks_pb2,
    message="Trunk",
    field="trunk",
    plural="trunks",
    collection="trunks",
    key="ID",
    key_help="trunk id (or trunks/{id})",
    id_field="trunk_id",
    create_flags=(
        Flag(("--provider",), "provider", "the provider account number that owns the trunk", {"metavar": "NUMBER"},
             calls.account_name),
    ),
    flags=TRUNK_FLAGS,
    required=("provider", "gateways"),
    columns=(
        ("id", lambda t: calls.last_segment(t.name)),
        ("provider", lambda t: calls.last_segment(t.provider)),
        ("display name", lambda t: t.display_name),
        ("gateways", lambda t: ", ".join(gateway_text(g) for g in t.gateways)),
        ("max calls", lambda t: str(t.max_concurrent_calls or "-")),
        ("cps", lambda t: str(t.cps or "-")),
        ("localization", lambda t: calls.last_segment(t.localization) if t.localization else ""),
        ("priority", lambda t: str(t.priority)),
        ("status", lambda t: resources.status_text(t.status)),
        ("rates", lambda t: str(t.rate_count)),
        ("deck sha256", lambda t: short_sha(t.deck_sha256)),
    ),
    list_filters=(ListFilter("--provider", "provider", "NUMBER", "only this provider's trunks", calls.account_name),),
)

TERMINATION_RATES = Kind(
    command="termination-rates",
    help="termination rates of a trunk: what the provider charges",
    noun="a termination rate",
    stub=trunks_pb2_grpc.TrunkServiceStub,
    pb2=trunks_pb2,
    message="TerminationRate",
    field="termination_rate",
    plural="termination_rates",
    collection="rates",
    key="PREFIX",
    key_help="destination prefix, digits; the longest match wins",
    key_path="prefix",
    parent=Parent("trunks", "TRUNK", "trunk id"),
    flags=(
        *rate_flags(),
        fields.integer("--strip", "strip", "leading digits removed from the destination"),
        fields.text("--prepend", "prepend", "digits put in front after stripping; '' for none", metavar="DIGITS"),
    ),
    money_paths=RATE_MONEY_PATHS,
    columns=(
        *rate_columns(),
        ("strip", lambda r: str(r.strip)),
        ("prepend", lambda r: r.prepend),
    ),
    extra_verbs=decks.add_import_verb("ImportTerminationRates", "a trunk"),
)


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    resources.add_parsers(TRUNKS, commands, common)
    resources.add_parsers(TERMINATION_RATES, commands, common)
