"""The routing decision for one INVITE (SPEC §5–§7), in the order the SPEC checks things.

Identification and the Redis-held counters (CPS, concurrent calls, reservations) are Kamailio's;
everything else about a call is decided here from the World. With a `trace` list, each fact the decision goes
through is appended to it (fastpath.decision names them); without one, nothing is recorded.
"""

from __future__ import annotations

from fastpath.decision import ANONYMOUS, MAX_CALLER_ID_DIGITS, Call, Decision, Route, is_number, is_user, refusal
from fastpath.localization import Rule, localize
from fastpath.model import ACTIVE, Account, Device, RateGroup, Trunk, World
from fastpath.reference.rating import Terms, cost, marked_up, max_duration

# SPEC §6: which pool each CLI option checks, and what a miss does.
_POOL_DIDS, _POOL_CIDS, _POOL_BOTH = "dids", "cids", "both"
_CLI_OPTIONS = {
    1: (_POOL_DIDS, "random"), 2: (_POOL_CIDS, "random"),
    3: (_POOL_DIDS, "non_cli"), 4: (_POOL_CIDS, "non_cli"), 5: (_POOL_BOTH, "non_cli"),
    6: (_POOL_DIDS, "reject"), 7: (_POOL_CIDS, "reject"), 8: (_POOL_BOTH, "reject"),
}
_CLI_REFUSALS = ("empty_pool", "no_non_cli_group", "reject")
LOCAL_CALL_INCREMENT = 60


def decide(world: World, call: Call, trace: list | None = None) -> Decision:
    account = world.accounts.get(call.account)
    if account is None or not account.usable(call.now):
        return refusal(403, "Account disabled", "account")
    rules = world.rules(account.localization)
    destination = _localize(call.destination, rules.destination, trace, "destination")
    inbound = destination in world.did_owner
    device = world.devices.get(destination)
    local = device is not None and device.status == ACTIVE and account.allow_local_calls
    # Our DIDs and (for local calls) our devices' usernames are known; any other destination goes to a
    # carrier, and only as plain digits (SPEC §8: 484).
    if not (inbound or local or is_number(destination, world.max_destination_digits, world.min_destination_digits)):
        return refusal(484, "Address Incomplete", "number")
    caller_id = (_localize(call.caller_id, rules.caller_id_inbound, trace, "caller_id_inbound") if inbound
                 else _localize(call.caller_id, rules.caller_id_outbound, trace, "caller_id_outbound"))
    presentable = is_user(caller_id) if inbound or local else is_number(caller_id, MAX_CALLER_ID_DIGITS)
    if not presentable:
        presented = _fallback_caller_id(world, account)
        _note(trace, ("fallback", caller_id, presented))
        caller_id = presented
    common = {"caller_id": caller_id, "destination": destination, "record": account.allow_recording}

    if inbound:
        return _inbound(world, call, destination, common)
    if local:
        return _local(world, call, account, device, common)
    return _outbound(world, call, account, common, trace)


def _note(trace: list | None, fact: tuple) -> None:
    if trace is not None:
        trace.append(fact)


def _localize(number: str, rules: list[Rule], trace: list | None, name: str, owner: str = "") -> str:
    """localize(), each rule's before and after noted when tracing."""
    if trace is None:
        return localize(number, rules)
    for index, rule in enumerate(rules):
        after = rule.apply(number)
        trace.append(("localize", name, owner, index, number, after))
        number = after
    return number


def _fallback_caller_id(world: World, account: Account) -> str:
    """A caller id that cannot be presented (not plain digits toward a carrier, not a plain user part toward
    our own devices) is never sent on: the account's default caller id, or anonymous."""
    if world.caller_id_fallback == "DEFAULT_CALLER_ID" and account.default_caller_id:
        return account.default_caller_id
    return ANONYMOUS


def _inbound(world: World, call: Call, did: str, common: dict) -> Decision:
    """A call to one of our DIDs reaches its owner's devices; it costs the caller nothing."""
    owner_number = world.did_owner[did]
    owner = world.accounts.get(owner_number or "")
    if owner is None or not owner.usable(call.now):
        return refusal(404, "DID not in service", "direction", direction="inbound", **common)
    return Decision(code=200, reason="OK", stage="done", direction="inbound", callee=owner.number,
                    callee_devices=world.devices_by_account.get(owner.number, ()),
                    granted_seconds=world.max_call_seconds, terms=(0, 0, 0, 1, 1), **common)


def _local(world: World, call: Call, account: Account, device: Device, common: dict) -> Decision:
    """Device to device on this switch: lc_charge_per_min in 60 s steps, no connect fee; the callee pays nothing."""
    callee = world.accounts.get(device.account)
    if callee is None or not callee.usable(call.now):
        return refusal(404, "Callee not in service", "direction", direction="local", **common)
    terms = Terms(0, 0, account.lc_charge_per_min, LOCAL_CALL_INCREMENT, LOCAL_CALL_INCREMENT)
    granted = max_duration(call.available, terms, world.max_call_seconds)
    if granted == 0:
        return refusal(402, "Insufficient balance", "balance", direction="local", **common)
    return Decision(code=200, reason="OK", stage="done", direction="local", callee=device.username,
                    rate_per_min=account.lc_charge_per_min, granted_seconds=granted,
                    reserve=cost(granted, terms), terms=_as_tuple(terms), **common)


def _cli_policy(world: World, call: Call, account: Account, caller_id: str,
                trace: list | None) -> tuple[str, str | None] | None:
    """(caller id to present, rate group id) under the account's CLI pool, or None to reject (403)."""
    option = account.cli_pool
    if option == 0:
        _note(trace, ("cli", 0, 0, "disabled", caller_id, account.rate_group or ""))
        return caller_id, account.rate_group
    pool_kind, on_miss = _CLI_OPTIONS[option]
    dids = world.dids_by_account.get(account.number, ())
    cids = world.caller_ids.get(account.number, ())
    pool = {_POOL_DIDS: dids, _POOL_CIDS: cids, _POOL_BOTH: tuple(sorted(set(dids) | set(cids)))}[pool_kind]
    if caller_id in pool:
        outcome, caller_id, group = "in_pool", caller_id, account.rate_group
    elif on_miss == "random":
        outcome, caller_id, group = (("random", pool[call.entropy % len(pool)], account.rate_group) if pool
                                     else ("empty_pool", caller_id, None))
    elif on_miss == "non_cli":
        outcome, group = ("non_cli", account.non_cli_rate_group) if account.non_cli_rate_group else (
            "no_non_cli_group", None)
    else:
        outcome, group = "reject", None
    refused = outcome in _CLI_REFUSALS
    _note(trace, ("cli", option, len(pool), outcome, caller_id, "" if refused else group or ""))
    return None if refused else (caller_id, group)


def _as_tuple(terms: Terms) -> tuple[int, int, int, int, int]:
    return (terms.connect_fee, terms.included_seconds, terms.rate_per_min, terms.initial_increment, terms.increment)


def _terms(record: tuple, group: RateGroup | None) -> Terms:
    """Snapshot record (connect_fee, included, rate, initial, increment, ...) with group defaults resolved."""
    connect_fee, included, rate, initial, increment = record[:5]
    default_initial = group.default_initial_increment if group else 1
    default_increment = group.default_increment if group else 1
    return Terms(connect_fee, included, rate, initial or default_initial, increment or default_increment)


def _outbound(world: World, call: Call, account: Account, common: dict, trace: list | None) -> Decision:
    outbound = {"direction": "outbound", **common}
    policy = _cli_policy(world, call, account, common["caller_id"], trace)
    if policy is None:
        return refusal(403, "CLI not allowed", "cli", **outbound)
    caller_id, group_id = policy
    outbound["caller_id"] = caller_id
    group = world.rate_groups.get(group_id or "")
    deck = world.origination_decks.get(group_id or "")
    match = deck.longest_match(common["destination"]) if group and group.status == ACTIVE and deck else None
    if match is None:
        missing = "unknown_group" if group is None else "inactive_group" if group.status != ACTIVE else "no_match"
        _note(trace, ("rate", group_id or "", missing, "", 0, ()))
        return refusal(404, "No rate for destination", "rate", **outbound)
    prefix, record = match
    base = _terms(record, group)
    terms = Terms(base.connect_fee, base.included_seconds, marked_up(base.rate_per_min, group.markup_percent),
                  base.initial_increment, base.increment)
    _note(trace, ("rate", group.id, "matched", prefix, base.rate_per_min, _as_tuple(terms)))
    rated = {"rate_group": group.id, "prefix": prefix, "rate_per_min": terms.rate_per_min, **outbound}
    granted = max_duration(call.available, terms, world.max_call_seconds)
    if granted == 0:
        return refusal(402, "Insufficient balance", "balance", **rated)
    forced = tuple(record[5])
    _note(trace, ("candidates", "forced" if forced else "group", forced or tuple(group.trunks)))
    routes = _routes(world, account, group, forced or group.trunks, common["destination"], caller_id,
                     terms.rate_per_min, granted, call.now, trace)
    if not routes:
        return refusal(503, "No route available", "route", granted_seconds=granted, **rated)
    return Decision(code=200, reason="OK", stage="done", granted_seconds=granted, reserve=cost(granted, terms),
                    routes=routes, terms=_as_tuple(terms), **rated)


def _unusable(trunk: Trunk | None, deck, now: int) -> str:
    """Why a trunk cannot carry calls at all (a TRUNK_VERDICTS entry), or "" when it can."""
    if trunk is None:
        return "unknown"
    if trunk.status != ACTIVE:
        return "inactive"
    if not trunk.provider_usable:
        return "provider_disabled"
    if not trunk.gateways:
        return "no_gateways"
    if deck is None:
        return "no_rates"
    if trunk.provider_expire_epoch is not None and trunk.provider_expire_epoch <= now:
        return "provider_expired"
    return ""


def _routes(world: World, account: Account, group: RateGroup, trunk_ids, destination: str, caller_id: str,
            origination_rate: int, granted: int, now: int, trace: list | None) -> tuple[Route, ...]:
    """Usable trunks (an expired provider's are not) with a termination rate, loss-less filtered, in the
    group's strategy order."""
    candidates = []
    for index, trunk_id in enumerate(trunk_ids):
        trunk = world.trunks.get(trunk_id)
        deck = world.termination_decks.get(trunk_id)
        unusable = _unusable(trunk, deck, now)
        if unusable:
            _note(trace, ("trunk", trunk_id, unusable, "", 0))
            continue
        rules = world.rules(trunk.localization)
        number = _localize(destination, rules.termination_destination, trace, "termination_destination", trunk.id)
        match = deck.longest_match(number)
        if match is None:
            _note(trace, ("trunk", trunk_id, "no_rate", "", 0))
            continue
        prefix, record = match
        terms = _terms(record, None)
        if terms.rate_per_min > origination_rate and not account.allow_loss_less_routing:
            _note(trace, ("trunk", trunk_id, "loss", prefix, terms.rate_per_min))
            continue
        strip, prepend, rate_priority = record[5], record[6], record[7]
        presented = (caller_id if caller_id == ANONYMOUS
                     else _localize(caller_id, rules.termination_caller_id, trace, "termination_caller_id", trunk.id))
        _note(trace, ("trunk", trunk_id, "", prefix, terms.rate_per_min))
        route = Route(trunk=trunk.id, provider=trunk.provider, gateways=trunk.gateways,
                      destination=prepend + number[strip:], caller_id=presented,
                      prefix=prefix, rate_per_min=terms.rate_per_min, cost=cost(granted, terms),
                      max_concurrent_calls=trunk.max_concurrent_calls, cps=trunk.cps, terms=_as_tuple(terms))
        by_cost = (terms.rate_per_min, trunk.priority, rate_priority, index)
        key = by_cost if group.routing_strategy == "COST" else (-len(prefix), *by_cost)
        candidates.append((key, route))
    candidates.sort(key=lambda pair: pair[0])
    return tuple(route for _, route in candidates)


class Engine:
    """The reference behind the compiled Engine's interface (fastpath._core.Engine)."""

    def __init__(self, world: World):
        self._world = world

    def decide(self, account: str, caller_id: str, destination: str, available: int, now: int,
               entropy: int = 0) -> Decision:
        return decide(self._world, Call(account, caller_id, destination, available, now, entropy))

    def trace(self, account: str, caller_id: str, destination: str, available: int, now: int,
              entropy: int = 0) -> tuple[Decision, tuple[tuple, ...]]:
        """The decision and the facts it went through (fastpath.decision: the trace's entries)."""
        return trace(self._world, Call(account, caller_id, destination, available, now, entropy))


def trace(world: World, call: Call) -> tuple[Decision, tuple[tuple, ...]]:
    facts: list[tuple] = []
    return decide(world, call, facts), tuple(facts)
