"""A relayed call's plan: everything its failover and its settlement need, fixed when it is admitted.

The plan travels with the call in Kamailio (a transaction AVP for the failure route, a dialog variable for the
call's end), so it is encoded compactly: a JSON array of the fields in declaration order. A deck or a trunk
may change during the call; the plan keeps the terms the call was admitted under. Plain Python, no KSR: unit
tests build and read plans directly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

Terms = tuple[int, int, int, int, int]  # connect_fee, included_seconds, rate_per_min, initial, increment

# Which of the customer's identity headers a trunk lets through (the cfg's branch_route[PRESENT] reads these
# letters): Diversion, Privacy, History-Info.
PASS_DIVERSION, PASS_PRIVACY, PASS_HISTORY_INFO = "d", "p", "h"
RELAY_FAILED = (500, "Relay failed")  # no gateway could be sent the INVITE (a local send failure)


@dataclass(frozen=True)
class RoutePlan:
    """One trunk the call may take, in failover order."""

    trunk: str
    provider: str
    gateways: tuple[tuple[str, str], ...]  # (host:port, udp | tcp | tls), primary first
    destination: str  # as the trunk is sent it
    caller_id: str  # as the trunk is sent it (or "anonymous")
    prefix: str  # matched termination prefix
    rate: int  # termination rate per minute, micros
    terms: Terms  # what the provider charges
    max_calls: int  # the trunk's channel limit (0: none)
    cps: int  # the trunk's CPS limit (0: none)
    pdd_seconds: int  # post-dial delay: no 18x/2xx in this time -> the next gateway
    passes: str  # PASS_* letters
    hide_topology: bool

    @property
    def limited(self) -> bool:
        """Whether the trunk's channels or CPS are counted in Redis."""
        return bool(self.max_calls or self.cps)


@dataclass(frozen=True)
class CallPlan:
    call_id: str
    account: str
    direction: str  # outbound | local | inbound
    caller_id_received: str
    caller_id_presented: str
    destination_dialled: str
    destination: str  # after the account's localization
    rate_group: str
    prefix: str
    rate: int  # the caller's effective rate per minute
    terms: Terms  # what the caller pays
    granted: int  # seconds, from the admission
    reserve: int  # micros reserved, from the admission
    setup: float  # epoch seconds of the INVITE
    record: bool
    routes: tuple[RoutePlan, ...] = ()

    def encode(self) -> str:
        fields = [getattr(self, f.name) for f in dataclasses.fields(self)]
        fields[-1] = [[getattr(route, f.name) for f in dataclasses.fields(RoutePlan)] for route in self.routes]
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> CallPlan:
        *fields, routes = json.loads(text)
        parsed = [RoutePlan(trunk, provider, tuple(tuple(g) for g in gateways), destination, caller_id, prefix,
                            rate, tuple(terms), max_calls, cps, pdd, passes, bool(hide))
                  for (trunk, provider, gateways, destination, caller_id, prefix, rate, terms, max_calls, cps, pdd,
                       passes, hide) in routes]
        plan = cls(*fields, routes=tuple(parsed))
        return dataclasses.replace(plan, terms=tuple(plan.terms), record=bool(plan.record))


@dataclass(frozen=True)
class Position:
    """Where an outbound call was last sent: route (trunk) index and gateway index in the plan."""

    route: int
    gateway: int

    def encode(self) -> str:
        return f"{self.route},{self.gateway}"

    @classmethod
    def decode(cls, text: str) -> Position | None:
        if not text:
            return None
        route, gateway = text.split(",")
        return cls(int(route), int(gateway))


def next_position(plan: CallPlan, at: Position) -> Position | None:
    """The trunk's next gateway, else the first gateway of the next trunk that has one."""
    if at.gateway + 1 < len(plan.routes[at.route].gateways):
        return Position(at.route, at.gateway + 1)
    for following in range(at.route + 1, len(plan.routes)):
        if plan.routes[following].gateways:
            return Position(following, 0)
    return None


def gateway_uri(user: str, address: str, transport: str) -> str:
    return f"sip:{user}@{address}" + ("" if transport == "udp" else f";transport={transport}")


def final_answer(code: int, reason: str) -> tuple[int, str]:
    """What the caller gets when every gateway failed: the last failure (SPEC §8), except that a gateway's 503
    is answered 500 (RFC 3261 §16.7: the caller must not think the switch itself is unavailable) and a local
    send failure (477, 478: no gateway could be reached) is 500 Relay failed, as at the first send."""
    if code == 503:
        return 500, "Server Internal Error"
    if code in (477, 478):
        return RELAY_FAILED
    return int(code), reason or "Failed"
