"""The Redis projection's layout: the contract between control (writer) and the fast path (reader).

Every family is a versioned snapshot: a Redis LIST of chunks, each chunk a JSON array of rows, each row
a JSON array whose positions are COLUMNS[kind]. A pointer hash names the live version of each family,
and a stream announces every swap. All keys share the hash tag {cfg}, so the swap (pointer + stream)
is one atomic script on a single Redis, Sentinel or Redis Cluster alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DEFAULT_NAMESPACE = "tg"
CHUNK_ROWS = 5_000
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


def encode_chunk(rows: list) -> bytes:
    return json.dumps(rows, separators=(",", ":")).encode()


def decode_chunk(data: bytes) -> list:
    return json.loads(data)
