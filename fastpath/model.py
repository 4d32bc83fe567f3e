"""The fast path's view of the world, built from the Redis projection, and the shape of a decision.

Both decision implementations (fastpath/reference, the executable spec, and fastpath/_core.pyx, the
compiled one) read a World and answer with the same Decision fields, so they can be compared exactly.
Money is int micros; times are epoch seconds.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from fastpath import localization
from fastpath import snapshot_format as fmt
from fastpath.feed import Snapshot
from fastpath.reference.lpm import DictDeck

ACTIVE = "ACTIVE"
DEFAULT_PDD_SECONDS = 8  # a trunk's post-dial delay when it sets none
DEFAULT_MAX_DESTINATION_DIGITS = 15


class Deck(Protocol):
    """Longest-prefix match over a rate deck: (prefix, record without the prefix) or None."""

    def longest_match(self, number: str) -> tuple[str, tuple] | None: ...


@dataclass(frozen=True)
class Account:
    number: str
    type: str
    status: str
    deleted: bool
    expire_epoch: int | None
    account_type: str
    credit_limit: int
    max_concurrent_calls: int
    cps: int
    localization: str | None
    allow_local_calls: bool
    allow_loss_less_routing: bool
    lc_charge_per_min: int
    allow_recording: bool
    rate_group: str | None
    non_cli_rate_group: str | None
    cli_pool: int
    default_caller_id: str = ""  # presented when a call's caller id is junk (World.caller_id_fallback)

    def usable(self, now: int) -> bool:
        expired = self.expire_epoch is not None and self.expire_epoch <= now
        return self.status == ACTIVE and not self.deleted and not expired


@dataclass(frozen=True)
class Device:
    username: str
    account: str
    realm: str
    ha1: str
    ha1_sha256: str
    status: str


@dataclass(frozen=True)
class RateGroup:
    id: str
    markup_percent: int
    routing_strategy: str
    default_initial_increment: int
    default_increment: int
    trunks: tuple[str, ...]
    status: str


@dataclass(frozen=True)
class Trunk:
    id: str
    provider: str
    provider_usable: bool
    gateways: tuple[tuple[str, str], ...]  # (address, 'udp' | 'tcp' | 'tls')
    max_concurrent_calls: int
    cps: int
    localization: str | None
    priority: int
    status: str
    provider_expire_epoch: int | None = None  # the provider account's expiry: its trunks stop routing then
    # The SIP edge (read by the KEMI script when it relays, not by the decision):
    pdd_timeout_seconds: int = 0  # 0: DEFAULT_PDD_SECONDS
    pass_diversion: bool = False
    pass_privacy: bool = False
    pass_history_info: bool = False
    topology_hiding: str = "ON"

    @property
    def pdd_seconds(self) -> int:
        return self.pdd_timeout_seconds or DEFAULT_PDD_SECONDS


@dataclass(frozen=True)
class Rules:
    """A localization profile's compiled rule lists."""

    caller_id_inbound: list = field(default_factory=list)
    caller_id_outbound: list = field(default_factory=list)
    destination: list = field(default_factory=list)
    termination_caller_id: list = field(default_factory=list)
    termination_destination: list = field(default_factory=list)


@dataclass(frozen=True)
class IpMap:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    tech_prefix: str
    account: str


@dataclass
class World:
    """Everything a decision reads. Rebuilt (per family) when the projection changes."""

    max_call_seconds: int = 10_800
    accounts: dict[str, Account] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    devices_by_account: dict[str, tuple[str, ...]] = field(default_factory=dict)
    did_owner: dict[str, str | None] = field(default_factory=dict)  # every DID -> owner (None: not in service)
    dids_by_account: dict[str, tuple[str, ...]] = field(default_factory=dict)
    caller_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rate_groups: dict[str, RateGroup] = field(default_factory=dict)
    trunks: dict[str, Trunk] = field(default_factory=dict)
    localizations: dict[str, Rules] = field(default_factory=dict)
    ip_maps: IpIndex = field(default_factory=lambda: IpIndex([]))
    sip_realm: str = "tollgate"  # the company's digest realm
    max_destination_digits: int = DEFAULT_MAX_DESTINATION_DIGITS  # longer dialled numbers are answered 484
    min_destination_digits: int = 1  # ... and shorter ones
    caller_id_fallback: str = "DEFAULT_CALLER_ID"  # or "ANONYMOUS": what a junk caller id becomes
    origination_decks: dict[str, Deck] = field(default_factory=dict)  # rate group id -> deck
    termination_decks: dict[str, Deck] = field(default_factory=dict)  # trunk id -> deck

    def rules(self, profile: str | None) -> Rules:
        return self.localizations.get(profile or "", _NO_RULES)

    def apply(self, snapshot: Snapshot) -> None:
        """Replace one family with a new snapshot (a deck becomes an in-memory DictDeck)."""
        kind = fmt.kind_of(snapshot.family)
        if kind in ("odeck", "tdeck"):
            self.set_deck(snapshot.family, DictDeck(kind, snapshot.rows))
            return
        _LOADERS[kind](self, list(snapshot.records()))

    def set_deck(self, family: str, deck: Deck) -> None:
        """Install the deck of family 'odeck:<rate group>' or 'tdeck:<trunk>'."""
        kind, _, owner = family.partition(":")
        (self.origination_decks if kind == "odeck" else self.termination_decks)[owner] = deck


_NO_RULES = Rules()


# ---------------------------------------------------------------------------------------------- loaders


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {k: tuple(sorted(v)) for k, v in grouped.items()}


def _load_company(world: World, rows: list[dict]) -> None:
    if rows:
        world.max_call_seconds = rows[0]["max_call_seconds"]
        world.sip_realm = rows[0]["sip_realm"]
        world.max_destination_digits = rows[0]["max_destination_digits"]
        world.min_destination_digits = rows[0]["min_destination_digits"]
        world.caller_id_fallback = rows[0]["caller_id_fallback"]


def _load_accounts(world: World, rows: list[dict]) -> None:
    world.accounts = {r["number"]: Account(**r) for r in rows}


def _load_devices(world: World, rows: list[dict]) -> None:
    world.devices = {r["username"]: Device(**r) for r in rows}
    world.devices_by_account = _group((r["account"], r["username"]) for r in rows if r["status"] == ACTIVE)


def _load_dids(world: World, rows: list[dict]) -> None:
    active = [r for r in rows if r["status"] == ACTIVE]
    # An inactive DID is still ours: a call to it is inbound and refused, not routed out as a number.
    world.did_owner = {r["number"]: r["account"] if r["status"] == ACTIVE else None for r in rows}
    world.dids_by_account = _group((r["account"], r["number"]) for r in active if r["account"])


def _load_caller_ids(world: World, rows: list[dict]) -> None:
    world.caller_ids = _group((r["account"], r["number"]) for r in rows)


def _load_rate_groups(world: World, rows: list[dict]) -> None:
    world.rate_groups = {r["id"]: RateGroup(**(r | {"trunks": tuple(r["trunks"])})) for r in rows}


def _load_trunks(world: World, rows: list[dict]) -> None:
    world.trunks = {
        r["id"]: Trunk(**(r | {"gateways": tuple((g["address"], _transport(g)) for g in r["gateways"])}))
        for r in rows
    }


def _transport(gateway: dict) -> str:
    """'TRANSPORT_TLS' -> 'tls'; unset (the proto default) -> 'udp'."""
    name = gateway.get("transport", "TRANSPORT_UDP").removeprefix("TRANSPORT_").lower()
    return "udp" if name == "unspecified" else name


def _load_localizations(world: World, rows: list[dict]) -> None:
    world.localizations = {
        r["id"]: Rules(**{k: localization.parse_rules(v) for k, v in r.items() if k != "id"}) for r in rows
    }


def _load_ip_maps(world: World, rows: list[dict]) -> None:
    world.ip_maps = IpIndex([IpMap(ipaddress.ip_network(r["cidr"]), r["tech_prefix"], r["account"]) for r in rows
                             if r["status"] == ACTIVE])


_LOADERS = {
    "company": _load_company,
    "accounts": _load_accounts,
    "devices": _load_devices,
    "dids": _load_dids,
    "callerids": _load_caller_ids,
    "rategroups": _load_rate_groups,
    "trunks": _load_trunks,
    "localizations": _load_localizations,
    "ipmaps": _load_ip_maps,
}


class IpIndex:
    """IP maps by network, for a lookup per INVITE that does not grow with the number of maps.

    For each prefix length in use (longest first), the source address masked to that length is one dict
    lookup; the maps of a network are tried longest tech prefix first.
    """

    def __init__(self, maps: list[IpMap]):
        self._by_length: dict[tuple[int, int], dict[int, list[IpMap]]] = {}
        for ip_map in maps:
            network = ip_map.network
            bucket = self._by_length.setdefault((network.version, network.prefixlen), {})
            bucket.setdefault(int(network.network_address), []).append(ip_map)
        for bucket in self._by_length.values():
            for candidates in bucket.values():
                candidates.sort(key=lambda m: -len(m.tech_prefix))
        self._lengths = sorted(self._by_length, key=lambda key: -key[1])

    def __len__(self) -> int:
        return sum(len(c) for bucket in self._by_length.values() for c in bucket.values())

    def lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, destination: str) -> IpMap | None:
        value, bits = int(address), address.max_prefixlen
        for version, length in self._lengths:
            if version != address.version:
                continue
            masked = value >> (bits - length) << (bits - length) if length else 0
            for ip_map in self._by_length[(version, length)].get(masked, ()):
                if destination.startswith(ip_map.tech_prefix):
                    return ip_map
        return None


@functools.lru_cache(maxsize=65_536)
def _parsed_address(source_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A source address, parsed once: carriers send from few addresses, and parsing one costs ~10 µs."""
    try:
        return ipaddress.ip_address(source_ip)
    except ValueError:
        return None


def account_for_source(world: World, source_ip: str, destination: str) -> tuple[str, str] | None:
    """IP authentication: (account, destination without its tech prefix) for a mapped source, else None."""
    address = _parsed_address(source_ip)
    if address is None:
        return None
    ip_map = world.ip_maps.lookup(address, destination)
    if ip_map is None:
        return None
    return ip_map.account, destination[len(ip_map.tech_prefix):]
