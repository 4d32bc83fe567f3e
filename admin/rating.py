"""`rate-groups …` and `origination-rates …`: what a caller pays (SPEC §3, §4)."""

from __future__ import annotations

import argparse

from admin import calls, decks, fields, resources
from admin.fields import Flag
from admin.money import format_rate
from admin.resources import Column, Kind, Parent
from tollgate.v1 import rating_pb2, rating_pb2_grpc

STRATEGIES = {"lcr": rating_pb2.ROUTING_STRATEGY_LCR, "cost": rating_pb2.ROUTING_STRATEGY_COST}
RATE_MONEY_PATHS = frozenset({"connect_fee", "rate_per_min"})


def trunk_name(ident: str) -> str:
    return calls.resource_name("trunks", ident)


def increments(initial: int, increment: int) -> str:
    """"0/0" reads as "default" so people see that the rate group decides."""
    return "default" if not initial and not increment else f"{initial or 'default'}/{increment or 'default'}"


def strategy_text(value: int) -> str:
    return rating_pb2.RoutingStrategy.Name(value or rating_pb2.ROUTING_STRATEGY_LCR).removeprefix("ROUTING_STRATEGY_")


def short_sha(sha: str) -> str:
    return sha[:12]


def rate_flags() -> tuple[Flag, ...]:
    """The money and increment flags origination and termination rates share."""
    return (
        fields.text("--description", "description", "free text, e.g. the destination's name"),
        fields.money("--connect-fee", "connect_fee", "charged once per answered call, e.g. 0.01"),
        fields.integer("--included-seconds", "included_seconds", "free seconds before the rate applies"),
        fields.money("--rate", "rate_per_min", "price per minute, e.g. 0.0125"),
        fields.integer("--initial-increment", "initial_increment", "first billing block in seconds; 0 = default"),
        fields.integer("--increment", "increment", "later billing blocks in seconds; 0 = default"),
        fields.integer("--priority", "priority", "lower first among equal costs"),
    )


def rate_columns() -> tuple[Column, ...]:
    return (
        ("prefix", lambda r: r.prefix),
        ("description", lambda r: r.description),
        ("connect fee", lambda r: format_rate(r.connect_fee)),
        ("included s", lambda r: str(r.included_seconds)),
        ("rate/min", lambda r: format_rate(r.rate_per_min)),
        ("increments", lambda r: increments(r.initial_increment, r.increment)),
        ("priority", lambda r: str(r.priority)),
    )


RATE_GROUP_FLAGS: tuple[Flag, ...] = (
    fields.text("--display-name", "display_name", "name shown to people"),
    fields.integer("--markup-percent", "markup_percent", "added to origination per-minute rates, 0-1000"),
    fields.choice("--strategy", "routing_strategy", "lcr: longest prefix, then cost; cost: cost first", STRATEGIES),
    fields.integer("--initial-increment", "default_initial_increment", "default first billing block, seconds"),
    fields.integer("--increment", "default_increment", "default later billing blocks, seconds"),
    fields.repeated(
        "--trunk", "trunks", "a trunk this group may route over; repeat in order of preference", "ID", trunk_name
    ),
    *resources.STATUS_FLAGS,
)

RATE_GROUPS = Kind(
    command="rate-groups",
    help="rate groups: markup, routing strategy, default increments, allowed trunks",
    noun="a rate group",
    stub=rating_pb2_grpc.RateGroupServiceStub,
    pb2=rating_pb2,
    message="RateGroup",
    field="rate_group",
    plural="rate_groups",
    collection="rateGroups",
    key="ID",
    key_help="rate group id, [a-z0-9-]{1,63} (or rateGroups/{id})",
    id_field="rate_group_id",
    flags=RATE_GROUP_FLAGS,
    update_flags=(fields.clear("--no-trunks", "trunks", "remove every trunk from the group"),),
    columns=(
        ("id", lambda g: calls.last_segment(g.name)),
        ("display name", lambda g: g.display_name),
        ("markup %", lambda g: str(g.markup_percent)),
        ("strategy", lambda g: strategy_text(g.routing_strategy)),
        ("increments", lambda g: increments(g.default_initial_increment, g.default_increment)),
        ("trunks", lambda g: ", ".join(calls.last_segment(t) for t in g.trunks)),
        ("status", lambda g: resources.status_text(g.status)),
        ("rates", lambda g: str(g.rate_count)),
        ("deck sha256", lambda g: short_sha(g.deck_sha256)),
    ),
)

ORIGINATION_RATES = Kind(
    command="origination-rates",
    help="origination rates of a rate group: what the caller pays",
    noun="an origination rate",
    stub=rating_pb2_grpc.RateGroupServiceStub,
    pb2=rating_pb2,
    message="OriginationRate",
    field="origination_rate",
    plural="origination_rates",
    collection="rates",
    key="PREFIX",
    key_help="destination prefix, digits; the longest match wins",
    key_path="prefix",
    parent=Parent("rateGroups", "RATE_GROUP", "rate group id"),
    flags=(
        *rate_flags(),
        fields.repeated(
            "--forced-trunk", "forced_trunks", "tried instead of the group's trunks; repeat in order", "ID", trunk_name
        ),
    ),
    update_flags=(fields.clear("--no-forced-trunks", "forced_trunks", "use the group's trunks again"),),
    money_paths=RATE_MONEY_PATHS,
    columns=(*rate_columns(), ("forced trunks", lambda r: ", ".join(calls.last_segment(t) for t in r.forced_trunks))),
    extra_verbs=decks.add_import_verb("ImportOriginationRates", "a rate group"),
)


def add_parsers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    resources.add_parsers(RATE_GROUPS, commands, common)
    resources.add_parsers(ORIGINATION_RATES, commands, common)
