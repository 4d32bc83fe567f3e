"""The configuration resources (SPEC §3, §6, §7) described for the generic engine in resources.py.

Each entry says which table and message it is, how its name is built, which fields map to which
columns, what must hold after every write (checks), and which projection families a change touches.
"""

from __future__ import annotations

import ipaddress
import string

import psycopg
from psycopg import sql

from control.accounts import company, digest
from control.api import validation
from control.api.errors import clip, failed_precondition, invalid
from control.api.fields import MAX_MONEY, MAX_SECONDS, Field, enum
from control.catalog.engine import Resource
from fastpath import localization as rules
from fastpath import snapshot_format as fmt
from tollgate.v1 import common_pb2, directory_pb2, rating_pb2, trunks_pb2

_STATUS = enum("status", "status", common_pb2.Status, "STATUS_")
_TIMES = (("create_time", "created_at"), ("update_time", "updated_at"))
_LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "-")
_MAX_ADDRESS = 300  # [IPv6 with a zone]:port fits; a 253-character DNS name and a port too
MAX_PDD_SECONDS = 120  # a post-dial delay longer than the ring time would never fire


def _live_account(conn: psycopg.Connection, number: str | None, path: str, provider: bool = False) -> None:
    """The referenced account exists, is not deleted, and is a provider when that is required."""
    if number is None:
        return
    row = conn.execute("SELECT type, deleted_at FROM accounts WHERE account_number = %s", (number,)).fetchone()
    if row is None or row["deleted_at"] is not None:
        raise invalid(path, f"account {number} does not exist or is deleted")
    if provider and row["type"] != "PROVIDER":
        raise invalid(path, f"account {number} is not a provider")


def _known_trunks(conn: psycopg.Connection, trunk_ids: list[str], path: str) -> None:
    found = {r["id"] for r in conn.execute("SELECT id FROM trunks WHERE id = ANY(%s)", (trunk_ids,))}
    missing = [t for t in trunk_ids if t not in found]
    if missing:
        raise invalid(path, f"unknown trunk(s): {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------- rating

_RATE_MONEY = (
    Field("description", "description", "str"),
    Field("connect_fee", "connect_fee", "int", max_value=MAX_MONEY),
    Field("included_seconds", "included_seconds", "int", max_value=MAX_SECONDS),
    Field("rate_per_min", "rate_per_min", "int", max_value=MAX_MONEY),
    Field("initial_increment", "initial_increment", "int", max_value=MAX_SECONDS),
    Field("increment", "increment", "int", max_value=MAX_SECONDS),
    Field("priority", "priority", "int"),
)


def _rate_group_in_use(conn: psycopg.Connection, row: dict) -> None:
    users = conn.execute(
        "SELECT account_number FROM accounts WHERE deleted_at IS NULL AND (rate_group_id = %(g)s"
        " OR non_cli_rate_group_id = %(g)s) ORDER BY id LIMIT 5",
        {"g": row["id"]},
    ).fetchall()
    if users:
        names = ", ".join(u["account_number"] for u in users)
        raise failed_precondition(f"rate group {row['id']} is used by account(s) {names}")


def _refresh_deck_summary(table: str, owner_table: str, owner_column: str):
    """After a single-rate change: recount the deck and forget its upload checksum."""

    def hook(conn: psycopg.Connection, row: dict) -> None:
        conn.execute(
            sql.SQL(
                "UPDATE {} SET rate_count = (SELECT count(*) FROM {} WHERE {} = %(o)s),"
                " deck_sha256 = '', updated_at = now() WHERE id = %(o)s"
            ).format(sql.Identifier(owner_table), sql.Identifier(table), sql.Identifier(owner_column)),
            {"o": row[owner_column]},
        )

    return hook


RATE_GROUP = Resource(
    label="rate group", table="rate_groups", message=rating_pb2.RateGroup, collection="rateGroups", id_column="id",
    fields=(
        Field("display_name", "display_name", "str"),
        Field("markup_percent", "markup_percent", "int"),
        enum("routing_strategy", "routing_strategy", rating_pb2.RoutingStrategy, "ROUTING_STRATEGY_"),
        Field("default_initial_increment", "default_initial_increment", "int", max_value=MAX_SECONDS),
        Field("default_increment", "default_increment", "int", max_value=MAX_SECONDS),
        Field("trunks", "trunks", "refs", collection="trunks"),
        _STATUS,
    ),
    outputs=(("rate_count", "rate_count"), ("deck_sha256", "deck_sha256"), *_TIMES),
    check=lambda conn, row: _known_trunks(conn, row["trunks"], "trunks"),
    before_delete=_rate_group_in_use,
    families=lambda row: ("rategroups", fmt.origination_deck(row["id"])),
)

ORIGINATION_RATE = Resource(
    label="origination rate", table="origination_rates", message=rating_pb2.OriginationRate, collection="rates",
    id_column="prefix", id_path="prefix", parent_collection="rateGroups", parent_table="rate_groups",
    parent_column="rate_group_id", immutable=frozenset({"prefix"}),
    fields=(Field("prefix", "prefix", "str"), *_RATE_MONEY,
            Field("forced_trunks", "forced_trunks", "refs", collection="trunks")),
    check=lambda conn, row: _known_trunks(conn, row["forced_trunks"], "forced_trunks"),
    after_write=_refresh_deck_summary("origination_rates", "rate_groups", "rate_group_id"),
    families=lambda row: (fmt.origination_deck(row["rate_group_id"]),),
)

# ---------------------------------------------------------------------------------------------- trunks


def _check_gateways(gateways: list[dict]) -> None:
    if not gateways:
        raise invalid("gateways", "a trunk needs at least one gateway")
    for index, gateway in enumerate(gateways):
        address = gateway.get("address", "")
        if not _is_host_port(address):
            raise invalid(f"gateways[{index}].address", f"{clip(address)} is not host:port")


def _is_host_port(address: str) -> bool:
    """IPv4:port, [IPv6]:port or DNS-name:port, port 1-65535. Plain string work and ipaddress, linear in the
    input: the regular expression this replaces backtracked, and 24 characters froze the process for 4 s."""
    if len(address) > _MAX_ADDRESS:
        return False
    host, colon, port = address.rpartition(":")
    if not colon or not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return False
    if host.startswith("["):
        return host.endswith("]") and _is_ip(host[1:-1], version=6)
    if host and all(c.isdigit() or c == "." for c in host):
        return _is_ip(host, version=4)
    return _is_hostname(host)


def _is_hostname(host: str) -> bool:
    """RFC 1123: dot-separated labels of 1-63 letters, digits and hyphens, no hyphen at either end of a label,
    at most 253 characters (a final dot allowed)."""
    name = host[:-1] if host.endswith(".") else host
    if not 1 <= len(name) <= 253:
        return False
    return all(1 <= len(label) <= 63 and label[0] != "-" and label[-1] != "-" and _LABEL_CHARS.issuperset(label)
               for label in name.split("."))


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _check_trunk(conn: psycopg.Connection, row: dict) -> None:
    _live_account(conn, row["provider"], "provider", provider=True)
    _check_gateways(row["gateways"])
    validation.in_range("pdd_timeout_seconds", row["pdd_timeout_seconds"], 0, MAX_PDD_SECONDS)


def _trunk_in_use(conn: psycopg.Connection, row: dict) -> None:
    users = conn.execute(
        "SELECT id FROM rate_groups WHERE %(t)s = ANY(trunks) UNION"
        " SELECT DISTINCT rate_group_id FROM origination_rates WHERE %(t)s = ANY(forced_trunks) LIMIT 5",
        {"t": row["id"]},
    ).fetchall()
    if users:
        raise failed_precondition(f"trunk {row['id']} is used by rate group(s) {', '.join(u['id'] for u in users)}")


TRUNK = Resource(
    label="trunk", table="trunks", message=trunks_pb2.Trunk, collection="trunks", id_column="id",
    fields=(
        Field("provider", "provider", "ref", collection="accounts"),
        Field("display_name", "display_name", "str"),
        Field("gateways", "gateways", "messages", message_type=trunks_pb2.Gateway),
        Field("max_concurrent_calls", "max_concurrent_calls", "int"),
        Field("cps", "cps", "int"),
        Field("localization", "localization_id", "ref", collection="localizations"),
        Field("priority", "priority", "int"),
        _STATUS,
        Field("pdd_timeout_seconds", "pdd_timeout_seconds", "int"),
        Field("pass_diversion", "pass_diversion", "bool"),
        Field("pass_privacy", "pass_privacy", "bool"),
        Field("pass_history_info", "pass_history_info", "bool"),
        enum("topology_hiding", "topology_hiding", trunks_pb2.TopologyHiding, "TOPOLOGY_HIDING_"),
    ),
    immutable=frozenset({"provider"}), required=frozenset({"provider"}),
    outputs=(("rate_count", "rate_count"), ("deck_sha256", "deck_sha256"), *_TIMES),
    check=_check_trunk, before_delete=_trunk_in_use,
    families=lambda row: ("trunks", fmt.termination_deck(row["id"])),
    list_filters={"provider": "provider"},
)

TERMINATION_RATE = Resource(
    label="termination rate", table="termination_rates", message=trunks_pb2.TerminationRate, collection="rates",
    id_column="prefix", id_path="prefix", parent_collection="trunks", parent_table="trunks",
    parent_column="trunk_id", immutable=frozenset({"prefix"}),
    fields=(Field("prefix", "prefix", "str"), *_RATE_MONEY, Field("strip", "strip", "int"),
            Field("prepend", "prepend", "str")),
    after_write=_refresh_deck_summary("termination_rates", "trunks", "trunk_id"),
    families=lambda row: (fmt.termination_deck(row["trunk_id"]),),
)

# ---------------------------------------------------------------------------------------------- directory


def _check_did(conn: psycopg.Connection, row: dict) -> None:
    _live_account(conn, row["account"], "account")
    _live_account(conn, row["provider"], "provider", provider=True)


DID = Resource(
    label="DID", table="dids", message=directory_pb2.Did, collection="dids", id_column="number",
    fields=(Field("account", "account", "ref", collection="accounts"),
            Field("provider", "provider", "ref", collection="accounts"), _STATUS),
    outputs=(("number", "number"), ("create_time", "created_at")),
    check=_check_did, families=lambda row: ("dids",), list_filters={"account": "account"},
)

CALLER_ID = Resource(
    label="caller id", table="caller_ids", message=directory_pb2.CallerId, collection="callerIds",
    id_column="number", id_path="number", parent_collection="accounts", parent_table="accounts",
    parent_column="account", immutable=frozenset({"number"}),
    fields=(Field("number", "number", "str"),),
    check=lambda conn, row: _live_account(conn, row["account"], "parent"),
    families=lambda row: ("callerids",),
)


def _sip_credentials(conn: psycopg.Connection, username: str, changes: dict, message, paths: set[str]) -> dict:
    """A password becomes HA1 digests for the company's realm; the password itself is not stored."""
    if "password" not in paths:
        return changes
    validation.password("password", message.password)
    realm = company.load(conn)["sip_realm"]
    ha1, ha1_sha256 = digest.ha1_pair(username, realm, message.password)
    return changes | {"ha1": ha1, "ha1_sha256": ha1_sha256, "realm": realm}


SIP_DEVICE = Resource(
    label="SIP device", table="sip_devices", message=directory_pb2.SipDevice, collection="sipDevices",
    id_column="username",
    fields=(Field("account", "account", "ref", collection="accounts"), _STATUS),
    immutable=frozenset({"account"}), required=frozenset({"account", "password"}),
    extra_paths=frozenset({"password"}),
    outputs=(("realm", "realm"), ("create_time", "created_at")), before_write=_sip_credentials,
    check=lambda conn, row: _live_account(conn, row["account"], "account"),
    families=lambda row: ("devices",), list_filters={"account": "account"},
)


def _normalised_cidr(conn: psycopg.Connection, ident: str, changes: dict, message, paths: set[str]) -> dict:
    if "cidr" in changes:
        try:
            changes["cidr"] = str(ipaddress.ip_network(changes["cidr"], strict=False))
        except ValueError:
            raise invalid("cidr", f"{clip(changes['cidr'])} is not an address or network") from None
    if changes.get("tech_prefix") and not changes["tech_prefix"].isdigit():
        raise invalid("tech_prefix", "must be digits")
    return changes


IP_MAP = Resource(
    label="IP map", table="ip_maps", message=directory_pb2.IpMap, collection="ipMaps", id_column="id",
    fields=(Field("account", "account", "ref", collection="accounts"), Field("cidr", "cidr", "str"),
            Field("tech_prefix", "tech_prefix", "str"), Field("description", "description", "str"), _STATUS),
    required=frozenset({"account", "cidr"}), before_write=_normalised_cidr,
    check=lambda conn, row: _live_account(conn, row["account"], "account"),
    families=lambda row: ("ipmaps",), list_filters={"account": "account"},
)

_RULE_LISTS = ("caller_id_inbound", "caller_id_outbound", "destination", "termination_caller_id",
               "termination_destination")


def _check_rules(conn: psycopg.Connection, row: dict) -> None:
    for column in _RULE_LISTS:
        for index, text in enumerate(row[column]):
            try:
                rules.parse_rule(text)
            except rules.RuleError as exc:
                raise invalid(f"{column}[{index}]", f"{clip(text)}: {exc}") from None


LOCALIZATION = Resource(
    label="localization", table="localization_profiles", message=directory_pb2.Localization,
    collection="localizations", id_column="id",
    fields=(Field("display_name", "display_name", "str"),
            *(Field(c, c, "strings", max_len=512) for c in _RULE_LISTS)),
    check=_check_rules, families=lambda row: ("localizations",),
)
