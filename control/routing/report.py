"""The route simulator's report: a Simulation (control/routing/simulator.py) as a SimulateCallResponse.

One step per check, in the order the switch goes through them (SPEC §5), each in words with the company's
decimals, and the facts again as fields for scripts. Only explains: every verdict here is the engine's (its
trace, fastpath.decision) or simulator.predict()'s.
"""

from __future__ import annotations

from decimal import Decimal

from control.routing.simulator import Simulation, at_limit
from fastpath.decision import ANONYMOUS
from fastpath.localization import PrefixRule, Rule
from fastpath.model import ACTIVE, Account, World
from tollgate.v1 import route_pb2

PASS, REFUSED, INFO = "pass", "refused", "info"
_CLI_OPTIONS = {1: "DID match, else random DID", 2: "caller id match, else random caller id",
                3: "non-CLI rate group if not a DID", 4: "non-CLI rate group if not a caller id",
                5: "non-CLI rate group if not a DID or caller id", 6: "reject if not a DID",
                7: "reject if not a caller id", 8: "reject if not a DID or caller id"}
_DROPPED = {"unknown": "not in the switch's data (deleted?)", "inactive": "trunk inactive",
            "provider_disabled": "its provider is inactive or deleted", "no_gateways": "no gateways",
            "no_rates": "no termination rates", "provider_expired": "its provider's account has expired",
            "no_rate": "no termination rate for the number",
            "loss": "dearer than the caller's rate, and loss-less routing is off"}
_RULE_LISTS = {"destination": "destination", "caller_id_inbound": "caller id (inbound)",
               "caller_id_outbound": "caller id (outbound)", "termination_destination": "trunk destination",
               "termination_caller_id": "trunk caller id"}


def account_status(account: Account | None, at: int) -> str:
    if account is None:
        return "UNKNOWN"
    if account.deleted:
        return "DELETED"
    if account.status != ACTIVE:
        return "INACTIVE"
    return "EXPIRED" if not account.usable(at) else "ACTIVE"


def rule_text(rule: Rule) -> str:
    """A rule as an operator writes it (fastpath/localization.py's syntax)."""
    if isinstance(rule, PrefixRule):
        return f"{rule.match or '*'}/{rule.replace}"
    return f"/{rule.pattern.pattern}/{rule.replacement}/"


class Report:
    def __init__(self, sim: Simulation, decimals: int, carriers: bool = True) -> None:
        """carriers=False: the account's own view, without the carrier side (trunks, providers, gateways, their
        prices), which its CDRs do not show it either."""
        self.carriers = carriers
        self.sim = sim
        self.world: World = sim.world
        self.decimals = decimals
        self.out = route_pb2.SimulateCallResponse()
        self.facts = sim.facts

    # ------------------------------------------------------------------ formatting
    def money(self, micros: int) -> str:
        return str((Decimal(micros) / 1_000_000).quantize(Decimal(1).scaleb(-self.decimals)))

    def rate(self, micros: int) -> str:
        """A per-minute price: the company's decimals, more when they would hide it (0.0042 is not 0.00)."""
        text = f"{Decimal(micros) / 1_000_000:.6f}".rstrip("0")
        whole, _, fraction = text.partition(".")
        return f"{whole}.{fraction.ljust(self.decimals, '0')}".rstrip(".") + "/min"

    def step(self, check: str, outcome: str, detail: str, **fields) -> None:
        self.out.steps.add(check=check, outcome=outcome, detail=detail, **fields)

    def of(self, kind: str) -> list[tuple]:
        return [fact for fact in self.facts if fact[0] == kind]

    # ------------------------------------------------------------------ the report
    def build(self) -> route_pb2.SimulateCallResponse:
        sim, out = self.sim, self.out
        out.sip_code, out.sip_reason, out.stage = sim.answer.code, sim.answer.reason, sim.answer.stage
        out.engine = sim.engine
        out.at_time.FromSeconds(sim.at)
        out.available = sim.live.available
        account = self.world.accounts.get(sim.account)
        if self._account(account):
            self._admission(account)
            self._localized("destination", "")
            self._number()
            self._direction()
            self._caller_id()
            self._cli()
            self._rate()
            self._balance()
            self._routes()
            self._relay()
        self._answer()
        return out

    def _account(self, account: Account | None) -> bool:
        status = account_status(account, self.sim.at)
        self.out.account_status = status
        if account is None:
            self.step("account", REFUSED, f"account {self.sim.account} is not in the switch's data (the projection)")
            return False
        kind = f"{account.type.lower()}, {account.account_type.lower()}"
        usable = status == ACTIVE
        self.step("account", PASS if usable else REFUSED, f"account {account.number} ({kind}): {status}")
        return usable

    def _admission(self, account: Account) -> None:
        live = self.sim.live
        cps_over = bool(account.cps) and live.calls_this_second + 1 > account.cps
        self.step("cps", REFUSED if cps_over else PASS,
                  f"{live.calls_this_second} new calls this second, limit {account.cps or 'none'}",
                  count=live.calls_this_second, limit=account.cps)
        busy = bool(account.max_concurrent_calls) and live.open_calls >= account.max_concurrent_calls
        self.step("concurrency", REFUSED if busy else PASS,
                  f"{live.open_calls} calls open, limit {account.max_concurrent_calls or 'none'}",
                  count=live.open_calls, limit=account.max_concurrent_calls)

    def _localized(self, rule_list: str, trunk: str) -> str | None:
        """One step per rule of `rule_list` applied (the account's, or `trunk`'s); the last result, if any."""
        owner = self.world.trunks.get(trunk) if trunk else self.world.accounts.get(self.sim.account)
        rules = getattr(self.world.rules(owner.localization if owner else None), rule_list, [])
        after = None
        for _kind, name, fact_owner, index, before, after in self.of("localize"):
            if name != rule_list or fact_owner != trunk:
                continue
            text = rule_text(rules[index]) if index < len(rules) else "?"
            changed = f"{before} -> {after}" if before != after else f"{before} (no change)"
            self.step("localization", INFO, f"{_RULE_LISTS[rule_list]} rule {index + 1} '{text}': {changed}",
                      before=before, after=after, rule_list=rule_list, rule=text,
                      trunk=f"trunks/{trunk}" if trunk else "")
        return after

    def _number(self) -> None:
        decision = self.sim.decision
        if decision.stage == "number":
            world = self.world
            self.step("number", REFUSED, f"not {world.min_destination_digits}-{world.max_destination_digits} "
                      "ASCII digits after localization, nor one of our DIDs or devices")
            return
        self.out.destination = decision.destination
        self.step("number", PASS, f"destination {decision.destination}")

    def _direction(self) -> None:
        decision = self.sim.decision
        if not decision.direction:
            return
        self.out.direction = decision.direction
        refused = decision.stage == "direction"
        detail = {"outbound": "outbound: to a carrier",
                  "inbound": f"inbound: {decision.destination} is one of our DIDs",
                  "local": f"local: {decision.destination} is a SIP device of this switch"}[decision.direction]
        if refused:
            detail += f"; {decision.reason}"
        self.step("direction", REFUSED if refused else PASS, detail)

    def _caller_id(self) -> None:
        if not self.sim.decision.direction:
            return
        for rule_list in ("caller_id_inbound", "caller_id_outbound"):
            self._localized(rule_list, "")
        for _kind, received, presented in self.of("fallback"):
            why = "an anonymous caller" if presented == ANONYMOUS else "the account's default caller id"
            self.step("caller_id", INFO, f"{received!r} cannot be presented; presented as {presented} ({why})",
                      before=received, after=presented)
        self.out.caller_id_presented = self.sim.decision.caller_id

    def _cli(self) -> None:
        for _kind, option, size, outcome, caller_id, group in self.of("cli"):
            name = _CLI_OPTIONS.get(option, "off")
            text = {"disabled": "caller id kept",
                    "in_pool": f"{caller_id} is in the pool ({size} numbers): kept",
                    "random": f"not in the pool: presented as {caller_id}, picked from {size} numbers",
                    "empty_pool": "not in the pool, and the pool is empty",
                    "non_cli": f"not in the pool: rated by the non-CLI rate group {group}",
                    "no_non_cli_group": "not in the pool, and the account has no non-CLI rate group",
                    "reject": f"not in the pool ({size} numbers)"}[outcome]
            refused = outcome in ("empty_pool", "no_non_cli_group", "reject")
            self.step("cli", REFUSED if refused else PASS, f"option {option} ({name}): {text}")

    def _rate(self) -> None:
        for _kind, group, outcome, prefix, base, terms in self.of("rate"):
            if outcome != "matched":
                why = {"unknown_group": "the account has no rate group" if not group else f"rate group {group} is "
                       "not in the switch's data", "inactive_group": f"rate group {group} is inactive",
                       "no_match": f"no origination rate in {group} matches"}[outcome]
                self.step("rate", REFUSED, why)
                continue
            fee, included, rate, initial, increment = terms
            markup = f" ({self.rate(base)} + markup)" if rate != base else ""
            self.out.rate_group, self.out.prefix, self.out.rate_per_min = f"rateGroups/{group}", prefix, rate
            self.step("rate", PASS, f"rate group {group}, prefix {prefix}: {self.rate(rate)}{markup}, connect fee "
                      f"{self.money(fee)}, {included} s included, increments {initial}/{increment} s")

    def _balance(self) -> None:
        decision, live = self.sim.decision, self.sim.live
        if decision.stage not in ("balance", "route", "done"):
            return
        self.out.granted_seconds, self.out.reserve = decision.granted_seconds, decision.reserve
        money = f"available {self.money(live.available)}" + ("" if live.restored else " (not restored yet)")
        if decision.stage == "balance":
            self.step("balance", REFUSED, f"{money}: not enough for the first block")
            return
        reserve = f", reserves {self.money(decision.reserve)}" if decision.code == 200 else ""
        self.step("balance", PASS, f"{money}: grants {decision.granted_seconds} s{reserve}")

    def _routes(self) -> None:
        for _kind, source, trunk_ids in self.of("candidates") if self.carriers else ():
            where = "the rate's forced trunks" if source == "forced" else "the rate group's trunks"
            self.step("route", INFO, f"considering {', '.join(trunk_ids) or 'no trunks'} ({where})")
        routes = {route.trunk: (index, route) for index, route in enumerate(self.sim.decision.routes)}
        if not self.carriers:
            kept = len(self.sim.decision.routes)
            self.step("route", INFO, f"{len(self.of('trunk'))} trunks considered, {kept} usable")
        for _kind, trunk_id, dropped, prefix, rate in self.of("trunk") if self.carriers else ():
            self._localized("termination_destination", trunk_id)
            self._localized("termination_caller_id", trunk_id)
            self._trunk(trunk_id, dropped, prefix, rate, routes.get(trunk_id))
        if self.sim.decision.stage == "route":
            self.step("route", REFUSED, "no trunk is left")

    def _trunk(self, trunk_id: str, dropped: str, prefix: str, rate: int, kept) -> None:
        trunk = self.world.trunks.get(trunk_id)
        item = self.out.trunks.add(trunk=f"trunks/{trunk_id}", dropped=dropped, prefix=prefix, rate_per_min=rate)
        if trunk is not None:
            item.provider = f"accounts/{trunk.provider}"
            item.gateways.extend(f"{address}/{transport}" for address, transport in trunk.gateways)
        priced = f": prefix {prefix} at {self.rate(rate)}" if prefix else ""
        if kept is None:
            self.step("route", INFO, f"trunk {trunk_id} dropped{priced}: {_DROPPED[dropped]}",
                      trunk=item.trunk)
            return
        index, route = kept
        item.position, item.cost = index + 1, route.cost
        item.destination_sent, item.caller_id_sent = route.destination, route.caller_id
        item.max_concurrent_calls, item.cps = route.max_concurrent_calls, route.cps
        live = self.sim.trunks.get(trunk_id)
        if live is not None:
            item.busy_channels, item.calls_this_second = live.busy_channels, live.calls_this_second
            item.at_limit = at_limit(route, live)
        self.step("route", PASS, f"trunk {trunk_id} kept as #{index + 1}{priced}, costs {self.money(route.cost)} "
                  f"for the grant, sends {route.destination} from {route.caller_id}", trunk=item.trunk)

    def _relay(self) -> None:
        decision = self.sim.decision
        if decision.code != 200 or decision.direction != "outbound" or not self.carriers:
            return
        for item in self.out.trunks:
            if item.position and (item.max_concurrent_calls or item.cps):
                verdict = "skipped now" if item.at_limit else "free"
                self.step("relay", REFUSED if item.at_limit else PASS,
                          f"{item.trunk}: {item.busy_channels} of {item.max_concurrent_calls or 'unlimited'} "
                          f"channels busy, {item.calls_this_second} of {item.cps or 'unlimited'} calls this "
                          f"second: {verdict}", trunk=item.trunk, count=item.busy_channels,
                          limit=item.max_concurrent_calls)

    def _answer(self) -> None:
        sim, out = self.sim, self.out
        if sim.answer.code != 200:
            self.step("answer", REFUSED, f"{sim.answer.code} {sim.answer.reason} (check: {sim.answer.stage})")
            return
        decision = sim.decision
        if decision.direction == "outbound" and not self.carriers:
            detail = "relayed to a carrier; its answer follows"
        elif decision.direction == "outbound":
            route = decision.routes[sim.relay_index]
            out.relayed_to = f"trunks/{route.trunk}"
            gateway = "/".join(route.gateways[0]) if route.gateways else ""
            detail = f"relayed to trunk {route.trunk} (gateway {gateway}); the carrier's answer follows"
        else:
            out.relayed_to = f"accounts/{decision.callee}" if decision.direction == "inbound" else decision.callee
            detail = (f"relayed to the registered devices of {out.relayed_to} (480 Temporarily Unavailable when "
                      "none is registered)")
        self.step("answer", PASS, detail)
