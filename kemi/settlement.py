"""What a call's end costs and what its event says (SPEC §4, §9), from its plan: plain Python, no KSR.

The KEMI script calls settle_call() at the call's end and hands the result to the call state in Redis, which
applies it once per call id; refused_call() is the event of a call refused before it was relayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from callstate.events import FAILED, HANGUP, REFUSED, CallEvent
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
    event: CallEvent


def settle_call(plan: CallPlan, at: Position | None, *, answer: float | None, end: float, code: int,
                reason: str = "", end_reason: str = "", stage: str = "") -> Settlement:
    """The customer's cost under the plan's terms, the provider's under its trunk's, and the call's event.
    end_reason: how it ended (callstate.events; default HANGUP when answered, FAILED when not)."""
    billable = billable_seconds(answer, end, plan.granted)
    route = plan.routes[at.route] if at is not None else None
    customer_cost = cost(billable, Terms(*plan.terms))
    provider_cost = cost(billable, Terms(*route.terms)) if route is not None else 0
    event = CallEvent(
        call_id=plan.call_id, account=plan.account, direction=plan.direction,
        caller_id_received=plan.caller_id_received,
        caller_id_presented=route.caller_id if route else plan.caller_id_presented,
        destination_dialled=plan.destination_dialled,
        destination_sent=route.destination if route else plan.destination,
        rate_group=plan.rate_group, prefix=plan.prefix, rate_per_min=plan.rate,
        trunk=route.trunk if route else "", provider=route.provider if route else "",
        gateway=route.gateways[at.gateway][0] if route is not None else "",
        setup_time=plan.setup, answer_time=answer, end_time=end, billable_seconds=billable, sip_code=code,
        sip_reason=reason, stage=stage, end_reason=end_reason or (HANGUP if answer is not None else FAILED),
        customer_cost=customer_cost, provider_cost=provider_cost, record=plan.record,
    )
    return Settlement(customer_cost, provider_cost, route, event)


def refused_call(call_id: str, account: str, decision, *, received: tuple[str, str], at: float,
                 answer: tuple[int, str, str] | None = None) -> CallEvent:
    """The event of a call refused before it was relayed (SPEC §9: cost 0, naming the refusing check).
    `decision`: what the fast path decided (its direction, numbers and tariff, as far as it got); `received`:
    (caller id, dialled number) as the caller sent them; `answer`: (code, reason, stage) when it is not the
    decision's own refusal (the admission script sets its own when it refuses)."""
    code, reason, stage = answer or (decision.code, decision.reason, decision.stage)
    return CallEvent(
        call_id=call_id, account=account, direction=decision.direction, caller_id_received=received[0],
        caller_id_presented=decision.caller_id, destination_dialled=received[1],
        destination_sent=decision.destination, rate_group=decision.rate_group, prefix=decision.prefix,
        rate_per_min=decision.rate_per_min, setup_time=at, end_time=at, sip_code=code, sip_reason=reason,
        stage=stage, end_reason=REFUSED,
    )
