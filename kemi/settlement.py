"""What a call's end costs and what its event says (SPEC §4, §9), from its plan: plain Python, no KSR.

The KEMI script calls settle_call() at the call's end and hands the result to the call state in Redis, which
applies it once per call id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from callstate.plan import CallPlan, Position, RoutePlan
from fastpath.reference.rating import Terms, cost


def billable_seconds(answer: float | None, end: float, granted: int) -> int:
    """SPEC §4: the answered duration rounded up to the whole second, at least 1 for an answered call (any
    answered call pays its first block), capped at the granted duration; 0 when never answered."""
    if answer is None:
        return 0
    return min(max(math.ceil(end - answer), 1), granted)


@dataclass(frozen=True)
class Settlement:
    customer_cost: int
    provider_cost: int
    route: RoutePlan | None  # the trunk the call last went to (None: local, DID, or never relayed)
    event: dict[str, str | int]


def settle_call(plan: CallPlan, at: Position | None, *, answer: float | None, end: float, code: int,
                end_reason: str = "") -> Settlement:
    """The customer's cost under the plan's terms, the provider's under its trunk's, and the call's event."""
    billable = billable_seconds(answer, end, plan.granted)
    route = plan.routes[at.route] if at is not None else None
    gateway = route.gateways[at.gateway][0] if route is not None else ""
    customer_cost = cost(billable, Terms(*plan.terms))
    provider_cost = cost(billable, Terms(*route.terms)) if route is not None else 0
    event: dict[str, str | int] = {
        "call_id": plan.call_id, "account": plan.account, "direction": plan.direction,
        "caller_id_received": plan.caller_id_received,
        "caller_id_presented": route.caller_id if route else plan.caller_id_presented,
        "destination_dialled": plan.destination_dialled,
        "destination_sent": route.destination if route else plan.destination,
        "rate_group": plan.rate_group, "prefix": plan.prefix, "rate_per_min": plan.rate,
        "trunk": route.trunk if route else "", "provider": route.provider if route else "", "gateway": gateway,
        "setup_time": f"{plan.setup:.3f}", "answer_time": f"{answer:.3f}" if answer is not None else "",
        "end_time": f"{end:.3f}", "billable_seconds": billable, "sip_code": code,
        "customer_cost": customer_cost, "provider_cost": provider_cost, "record": "yes" if plan.record else "no",
    }
    if end_reason:
        event["end_reason"] = end_reason
    return Settlement(customer_cost, provider_cost, route, event)
