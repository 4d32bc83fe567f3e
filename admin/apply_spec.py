"""The provider file of `tollgate-admin apply`: YAML in, checked and converted to API messages.

Everything is checked before the server is asked anything: an unknown key, a wrong type or a missing
rate deck file is a usage error (exit 2) naming the key path, e.g. `trunks[1].gateways[0].transport`.
examples/provider.yaml documents the format with a full commented example.

Rules worth knowing (also in the example):
- `provider` keys manage only what they name: a key left out keeps the server's value (the server fills
  in defaults such as the PIN, timezone or billing day at creation). `password` is used only to create.
- trunks, localizations and DIDs are described whole: a trunk or DID key left out means its default
  (no localization, priority 0, unlimited, active, no owner).
- A section left out (`trunks`, `dids`, `caller_ids`) is not managed at all; an empty list means "none",
  i.e. delete this provider's. Localizations are shared, so apply never deletes one.
- Numbers (DIDs, caller ids, PINs, account numbers) must be quoted strings: YAML would read 0049 as
  a number, or worse as octal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from admin import calls
from admin.money import parse_money
from tollgate.v1 import account_pb2, common_pb2, directory_pb2, trunks_pb2

FORMAT_VERSION = 1


class SpecError(Exception):
    """A problem in the file, at a key path: `trunks[1].gateways[0].transport: must be one of …`."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


Check = Callable[[Any, str], Any]  # (YAML value, key path) -> API value; raises SpecError


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


# --- scalar checks -------------------------------------------------------------------------------------


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
        raise SpecError(path, f"must be a string, not {_type_name(value)}{hint}")
    return value.strip()


def digits(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, f"must be a quoted string of digits, not {_type_name(value)} "
                              "(YAML reads unquoted numbers as integers, dropping leading zeros)")
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise SpecError(path, f"must be digits only: {value!r}")
    return text


def integer(low: int, high: int = 2**31 - 1) -> Check:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"must be a whole number, not {_type_name(value)}")
        if not low <= value <= high:
            raise SpecError(path, f"must be between {low} and {high}: {value}")
        return value

    return check


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, f"must be true or false, not {_type_name(value)}")
    return value


def enum(values: dict[str, int]) -> Check:
    def check(value: Any, path: str) -> int:
        if not isinstance(value, str) or value.strip().lower() not in values:
            raise SpecError(path, f"must be one of {', '.join(values)}: {value!r}")
        return values[value.strip().lower()]

    return check


def money(value: Any, path: str) -> int:
    """Decimal currency units as a string ("0.0125") or a whole number; a YAML float would be inexact."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(path, f"must be a decimal amount in quotes, e.g. \"0.0125\", not {_type_name(value)}")
    try:
        return parse_money(str(value))
    except ValueError as exc:
        raise SpecError(path, str(exc)) from None


def reference(collection: str) -> Check:
    """An id ("de-local") or a full name ("localizations/de-local") -> the full name; "" = none."""

    def check(value: Any, path: str) -> str:
        text = string(value, path)
        if "/" in text and not text.startswith(f"{collection}/"):
            raise SpecError(path, f"must be an id or {collection}/{{id}}: {text!r}")
        return calls.optional_name(collection, text)

    return check


def identifier(value: Any, path: str) -> str:
    text = string(value, path)
    if not text or "/" in text:
        raise SpecError(path, f"must be a non-empty id without '/': {value!r}")
    return text


def email(value: Any, path: str) -> str:
    """Compared the way the server stores it: the domain in lower case."""
    local, at, domain = string(value, path).rpartition("@")
    if not at or not local or not domain:
        raise SpecError(path, f"not an email address: {value!r}")
    return f"{local}@{domain.lower()}"


def country(value: Any, path: str) -> str:
    return string(value, path).upper()


def account_number(value: Any, path: str) -> str:
    text = string(value, path)
    if not re.fullmatch(r"[0-9A-Za-z]{4,20}", text):
        raise SpecError(path, f"must be 4-20 letters or digits: {value!r}")
    return text


def string_list(item: Check) -> Check:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise SpecError(path, f"must be a list, not {_type_name(value)}")
        return [item(entry, f"{path}[{i}]") for i, entry in enumerate(value)]

    return check


# --- mappings ------------------------------------------------------------------------------------------

# A schema maps each allowed key to a check, or to a nested schema whose values become dotted paths.
Schema = dict[str, Any]


def mapping(value: Any, path: str, schema: Schema, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a YAML mapping against `schema`; return {dotted path: API value} for the keys present."""
    if not isinstance(value, dict):
        raise SpecError(path, f"must be a mapping, not {_type_name(value)}")
    join = (lambda key: f"{path}.{key}") if path else (lambda key: key)
    for key in value:
        if not isinstance(key, str) or key not in schema:
            raise SpecError(join(str(key)), f"unknown key (known: {', '.join(schema)})")
    for key in required:
        if key not in value:
            raise SpecError(join(key), "is required")
    found: dict[str, Any] = {}
    for key, raw in value.items():
        rule = schema[key]
        if isinstance(rule, dict):
            for sub, converted in mapping(raw, join(key), rule).items():
                found[f"{key}.{sub}"] = converted
        else:
            found[key] = rule(raw, join(key))
    return found


def items(value: Any, path: str) -> list[Any]:
    if value is None:
        return []  # `dids:` with nothing after it reads as null; take it as an empty list
    if not isinstance(value, list):
        raise SpecError(path, f"must be a list, not {_type_name(value)}")
    return value


def unique(values: list[tuple[str, str]], what: str) -> None:
    """(key, path) pairs; the second use of a key is the error."""
    seen: set[str] = set()
    for key, path in values:
        if key.lower() in seen:
            raise SpecError(path, f"duplicate {what} {key!r}")
        seen.add(key.lower())


# --- the sections --------------------------------------------------------------------------------------

STATUS = {"active": common_pb2.STATUS_ACTIVE, "inactive": common_pb2.STATUS_INACTIVE}
ACCOUNT_STATUS = {"active": account_pb2.ACTIVE, "inactive": account_pb2.INACTIVE}
TRANSPORTS = {"udp": trunks_pb2.TRANSPORT_UDP, "tcp": trunks_pb2.TRANSPORT_TCP, "tls": trunks_pb2.TRANSPORT_TLS}
TOPOLOGY_HIDING = {"on": trunks_pb2.TOPOLOGY_HIDING_ON, "off": trunks_pb2.TOPOLOGY_HIDING_OFF}

PROFILE: Schema = {
    **{key: string for key in ("first_name", "last_name", "company", "phone", "address1", "address2", "city",
                               "province", "zip", "timezone")},
    "notification_email": email,
    "country": country,
}
SETTINGS: Schema = {
    "max_concurrent_calls": integer(0),
    "cps": integer(0),
    "localization": reference("localizations"),
    "allow_local_calls": boolean,
    "notifications": boolean,
    "payment_gateway_permission": boolean,
    "allow_loss_less_routing": boolean,
    "lc_charge_per_min": money,
    "allow_recording": boolean,
    "default_caller_id": digits,
}
BILLING: Schema = {
    "account_type": enum({"prepaid": account_pb2.PREPAID, "postpaid": account_pb2.POSTPAID}),
    "credit_limit": money,
    "rate_group": reference("rateGroups"),
    "non_cli_rate_group": reference("rateGroups"),
    "cli_pool": integer(0, 8),
    "tax_number": string,
    "generate_zero_invoice": boolean,
    "invoice_note": string,
    "reference": string,
    "billing_day": integer(1, 28),
    "invoice_with_cdr": enum({"none": account_pb2.INVOICE_WITH_CDR_NONE, "pdf": account_pb2.INVOICE_WITH_CDR_PDF,
                              "csv": account_pb2.INVOICE_WITH_CDR_CSV}),
    "low_balance_threshold": money,
}
PROVIDER: Schema = {
    "account_number": account_number,
    "email": email,
    "password": string,
    "pin": digits,
    "status": enum(ACCOUNT_STATUS),
    "profile": PROFILE,
    "settings": SETTINGS,
    "billing": BILLING,
}
LOCALIZATION_RULES = ("caller_id_inbound", "caller_id_outbound", "destination", "termination_caller_id",
                      "termination_destination")
LOCALIZATION: Schema = {
    "id": identifier,
    "display_name": string,
    **{key: string_list(string) for key in LOCALIZATION_RULES},
}
GATEWAY: Schema = {"address": string, "transport": enum(TRANSPORTS)}


def gateways(value: Any, path: str) -> list[trunks_pb2.Gateway]:
    if not isinstance(value, list) or not value:
        raise SpecError(path, "must be a non-empty list of {address, transport}: the primary first")
    found = []
    for i, entry in enumerate(value):
        checked = mapping(entry, f"{path}[{i}]", GATEWAY, required=("address",))
        found.append(trunks_pb2.Gateway(address=checked["address"],
                                        transport=checked.get("transport", trunks_pb2.TRANSPORT_UDP)))
    return found


def owner(value: Any, path: str) -> str:
    """A DID's owner: an account number (or accounts/{n}); "" = not assigned."""
    text = string(value, path).removeprefix("accounts/")
    return calls.account_name(account_number(text, path)) if text else ""


TRUNK: Schema = {
    "id": identifier,
    "display_name": string,
    "gateways": gateways,
    "max_concurrent_calls": integer(0),
    "cps": integer(0),
    "localization": reference("localizations"),
    "priority": integer(0),
    "status": enum(STATUS),
    "rates": string,
    "pdd_timeout_seconds": integer(0),
    "pass_diversion": boolean,
    "pass_privacy": boolean,
    "pass_history_info": boolean,
    "topology_hiding": enum(TOPOLOGY_HIDING),
}
DID: Schema = {"number": digits, "account": owner, "status": enum(STATUS)}
# Sections are checked one by one in parse(); here only their names matter.
TOP_KEYS = ("version", "provider", "localizations", "trunks", "dids", "caller_ids")


@dataclass
class ProviderSpec:
    number: str
    values: dict[str, Any]  # managed dotted path -> API value (the update_mask paths apply compares)
    password: str | None

    @property
    def name(self) -> str:
        return calls.account_name(self.number)


@dataclass
class TrunkSpec:
    trunk: trunks_pb2.Trunk  # every managed field set (defaults included), provider set
    deck: Path | None  # termination rate deck; None = the deck is not managed
    deck_path: str = ""  # the key path, for messages


@dataclass
class Spec:
    source: Path
    provider: ProviderSpec
    localizations: list[directory_pb2.Localization] = field(default_factory=list)
    # None = the section is absent: not managed, nothing of that kind is created or deleted.
    trunks: list[TrunkSpec] | None = None
    dids: list[directory_pb2.Did] | None = None
    caller_ids: list[str] | None = None


def parse_provider(value: Any) -> ProviderSpec:
    values = mapping(value, "provider", PROVIDER, required=("account_number", "email"))
    number = values.pop("account_number")
    password = values.pop("password", None)
    return ProviderSpec(number, values, password)


def parse_localization(value: Any, path: str) -> directory_pb2.Localization:
    values = mapping(value, path, LOCALIZATION, required=("id",))
    profile = directory_pb2.Localization(
        name=calls.resource_name("localizations", values["id"]), display_name=values.get("display_name", "")
    )
    for key in LOCALIZATION_RULES:
        getattr(profile, key).extend(values.get(key, []))
    return profile


def parse_trunk(value: Any, path: str, provider: str, base: Path) -> TrunkSpec:
    values = mapping(value, path, TRUNK, required=("id", "gateways"))
    trunk = trunks_pb2.Trunk(
        name=calls.resource_name("trunks", values["id"]),
        provider=provider,
        display_name=values.get("display_name", ""),
        gateways=values["gateways"],
        max_concurrent_calls=values.get("max_concurrent_calls", 0),
        cps=values.get("cps", 0),
        localization=values.get("localization", ""),
        priority=values.get("priority", 0),
        status=values.get("status", common_pb2.STATUS_ACTIVE),
        pdd_timeout_seconds=values.get("pdd_timeout_seconds", 0),
        pass_diversion=values.get("pass_diversion", False),
        pass_privacy=values.get("pass_privacy", False),
        pass_history_info=values.get("pass_history_info", False),
        topology_hiding=values.get("topology_hiding", trunks_pb2.TOPOLOGY_HIDING_ON),
    )
    deck = None
    if "rates" in values:
        deck = (base / values["rates"]).resolve()
        if not deck.is_file():
            raise SpecError(f"{path}.rates", f"no such file: {deck}")
    return TrunkSpec(trunk, deck, f"{path}.rates")


def parse_did(value: Any, path: str, provider: str) -> directory_pb2.Did:
    if not isinstance(value, dict):
        value = {"number": digits(value, path)}  # the short form: just the number, no owner
    values = mapping(value, path, DID, required=("number",))
    return directory_pb2.Did(
        name=calls.resource_name("dids", values["number"]),
        account=values.get("account", ""),
        provider=provider,
        status=values.get("status", common_pb2.STATUS_ACTIVE),
    )


def parse(document: Any, source: Path) -> Spec:
    """The whole file; `source` is where relative rate deck paths start from."""
    mapping(document, "", {key: lambda value, _path: value for key in TOP_KEYS}, required=("provider",))
    version = document.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise SpecError("version", f"only version {FORMAT_VERSION} is known: {version!r}")
    provider = parse_provider(document["provider"])
    base = source.parent
    spec = Spec(source, provider)

    spec.localizations = [parse_localization(v, f"localizations[{i}]")
                          for i, v in enumerate(items(document.get("localizations"), "localizations"))]
    unique([(p.name, f"localizations[{i}].id") for i, p in enumerate(spec.localizations)], "localization id")

    if "trunks" in document:
        spec.trunks = [parse_trunk(v, f"trunks[{i}]", provider.name, base)
                       for i, v in enumerate(items(document["trunks"], "trunks"))]
        unique([(t.trunk.name, f"trunks[{i}].id") for i, t in enumerate(spec.trunks)], "trunk id")
    if "dids" in document:
        spec.dids = [parse_did(v, f"dids[{i}]", provider.name) for i, v in enumerate(items(document["dids"], "dids"))]
        unique([(d.name, f"dids[{i}]") for i, d in enumerate(spec.dids)], "DID")
    if "caller_ids" in document:
        spec.caller_ids = string_list(digits)(items(document["caller_ids"], "caller_ids"), "caller_ids")
        unique([(n, f"caller_ids[{i}]") for i, n in enumerate(spec.caller_ids)], "caller id")
    return spec


# --- YAML ----------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (plain PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it properly
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load(text: str, source: Path) -> Spec:
    try:
        document = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise SpecError("", f"not valid YAML: {_yaml_problem(exc)}") from None
    if document is None:
        raise SpecError("", "the file is empty")
    return parse(document, source)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """"found the key 'trunks' twice (line 7, column 1)" rather than PyYAML's five-line report."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem
