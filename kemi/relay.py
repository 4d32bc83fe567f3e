"""Relay mode: an admitted call sent on statefully, with failover (SPEC §5) and the switch's presentation (§8).

Outbound: to the first route's first gateway with a free channel, then (failure_route[FAILOVER] calls
failover()) the trunk's next gateway, then the next trunk. Each branch's presentation - From, P-Asserted-
Identity, To, which identity headers pass - is left in AVPs for kamailio.cfg's branch_route[PRESENT]. Local
and DID calls go to the callee's registered contacts. A send that fails locally (an unreachable TCP/TLS
gateway, a name that does not resolve) moves on to the next gateway at once, like a 503 from it. Runs inside
Kamailio (KSR).
"""

from __future__ import annotations

import time

import KSR

from callstate.events import provider_settlement_id
from callstate.plan import RELAY_FAILED, CallPlan, Position, final_answer, gateway_uri, next_position
from callstate.store import TRUNK_SEIZED, CallState, Route
from fastpath.decision import ANONYMOUS

# A trunk channel is held at most this long past the call's granted seconds (ring time and margin) when the
# call's end never comes (its node died); the ledger's reaper frees it then.
TRUNK_HOLD_GRACE_SECONDS = 300
RECORD_FLAG = 7  # SPEC §5: marked for the media recorder (kamailio.cfg adds X-Tollgate-Record)
DLG_PLAN = "tollgate"  # dialog variable: the CallPlan (for the settlement)
DLG_ACCOUNT = "tollgate_account"  # dialog variable: the calling account (kamailio.cfg's answer mark)
DLG_AT = "tollgate_at"  # dialog variable: Position of the branch last sent
DLG_ROUTE = "tollgate_route"  # dialog variable: that branch's callstate.store.Route (kamailio.cfg's answer mark)
AVP_PLAN = "$avp(tollgate_call)"  # the same CallPlan, per transaction (the failure route reads it)
AVP_AT = "$avp(tollgate_at)"
AVP_TIMEOUT = "$avp(tollgate_timeout)"  # kamailio.cfg: dialog timeout_avp
AVP_FROM, AVP_DISPLAY, AVP_PAI, AVP_TO, AVP_PASS = (f"$avp(tollgate_{n})" for n in ("from", "display", "pai",
                                                                                   "to", "pass"))
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"


def relay_outbound(state: CallState, plan: CallPlan, realm: str) -> tuple[int, str]:
    """Relay the admitted INVITE to its first usable gateway; (0, "") once relayed, else the answer to give."""
    first = seize_from(state, plan, 0)
    if first is None:  # no trunk with a gateway and a free channel under its CPS (SPEC §5)
        return 503, "No route available"
    code = _open_dialog(plan)
    if code:
        return code
    return _send(state, plan, Position(first, 0), realm, initial=True)


def relay_registered(plan: CallPlan, callees: tuple[str, ...], realm: str) -> tuple[int, str]:
    """A local or DID call to the callees' registered contacts; (0, "") once relayed."""
    if not lookup_registered(callees, realm):
        return 480, "Temporarily Unavailable"
    code = _open_dialog(plan)
    if code:
        return code
    _present(plan.caller_id_presented, realm, to_uri=None, passes="")
    KSR.tm.t_on_branch("PRESENT")
    KSR.tm.t_on_failure("FAILOVER")  # keeps the last failure's code for the CDR (no failover: no position)
    if KSR.tm.t_relay() < 0:
        return RELAY_FAILED
    return 0, ""


def failover(state: CallState, realm: str) -> tuple[int, str] | None:
    """failure_route[FAILOVER]: the trunk's next gateway, else the next trunk with a free channel. None once
    the call went on; else the answer the caller gets (final_answer), which the KEMI script sends."""
    plan = CallPlan.decode(KSR.pv.get(AVP_PLAN))
    at = Position.decode(KSR.pv.get(AVP_AT) or "")
    following = next_position(plan, at) if at is not None else None
    if following is not None and following.route != at.route:  # on to another trunk: free this one's channel
        release_trunk(state, plan, at.route)
        route = seize_from(state, plan, following.route)
        following = None if route is None else Position(route, 0)
    if following is not None:
        code, reason = _send(state, plan, following, realm, initial=False)
        if not code:
            return None
        return code, reason
    return final_answer(KSR.pv.get("$T_reply_code") or 500, KSR.pv.get("$T_reply_reason") or "")


def _open_dialog(plan: CallPlan) -> tuple[int, str] | None:
    """The call becomes a dialog ending at its granted seconds, carrying its plan."""
    KSR.pv.seti(AVP_TIMEOUT, max(plan.granted, 1))
    if KSR.dialog.dlg_manage() < 0:
        return 500, "Dialog not created"
    KSR.dialog.dlg_set_property("ka-src")  # probe both parties once answered (kamailio.cfg: ka_interval)
    KSR.dialog.dlg_set_property("ka-dst")
    encoded = plan.encode()
    KSR.dialog.var_sets(DLG_PLAN, encoded)
    KSR.dialog.var_sets(DLG_ACCOUNT, plan.account)
    KSR.dialog.var_sets(DLG_AT, "")
    KSR.dialog.var_sets(DLG_ROUTE, "-")
    KSR.pv.sets(AVP_PLAN, encoded)
    KSR.rr.record_route()
    if plan.record:
        KSR.setflag(RECORD_FLAG)
    return None


def _send(state: CallState, plan: CallPlan, at: Position | None, realm: str, initial: bool) -> tuple[int, str]:
    """t_relay to the gateway at `at`; a local send failure moves on to the next gateway or trunk at once."""
    while at is not None:
        route = plan.routes[at.route]
        address, transport = route.gateways[at.gateway]
        KSR.seturi(gateway_uri(route.destination, address, transport))
        KSR.pv.sets(AVP_AT, at.encode())
        KSR.dialog.var_sets(DLG_AT, at.encode())
        KSR.dialog.var_sets(DLG_ROUTE, Route(route.provider, route.terms, route.trunk, address).encode())
        _present(route.caller_id, realm, to_uri=f"sip:{route.destination}@{address}", passes=route.passes)
        KSR.tm.t_set_fr(route.pdd_seconds * 1000, 0)
        KSR.tm.t_on_branch("PRESENT")
        KSR.tm.t_on_reply("RINGING")
        KSR.tm.t_on_failure("FAILOVER")
        if KSR.tm.t_relay() >= 0:
            return 0, ""
        KSR.warn(f"tollgate: cannot send to gateway {address}/{transport}, trying the next "
                 f"[call-id {plan.call_id}]\n")
        following = next_position(plan, at)
        if following is not None and following.route != at.route:
            release_trunk(state, plan, at.route)
            route_index = seize_from(state, plan, following.route)
            following = None if route_index is None else Position(route_index, 0)
        at = following
    return RELAY_FAILED


def _present(caller_id: str, realm: str, to_uri: str | None, passes: str) -> None:
    """What branch_route[PRESENT] puts on the branch: the decided caller id (From, P-Asserted-Identity, or
    anonymous), the To, and which of the customer's identity headers pass."""
    if caller_id == ANONYMOUS:
        KSR.pv.sets(AVP_FROM, ANONYMOUS_URI)
        KSR.pv.sets(AVP_DISPLAY, "\"Anonymous\"")
        KSR.pv.unset(AVP_PAI)
    else:
        KSR.pv.sets(AVP_FROM, f"sip:{caller_id}@{realm}")
        KSR.pv.unset(AVP_DISPLAY)
        KSR.pv.sets(AVP_PAI, f"<sip:{caller_id}@{realm}>")
    if to_uri is None:
        KSR.pv.unset(AVP_TO)
    else:
        KSR.pv.sets(AVP_TO, to_uri)
    KSR.pv.sets(AVP_PASS, passes or "-")


def seize_from(state: CallState, plan: CallPlan, start: int) -> int | None:
    """The first route from `start` on that has a gateway and, when its trunk has limits, a channel free
    under its CPS (seized in Redis for this call, cluster-wide); None when there is none."""
    for index in range(start, len(plan.routes)):
        route = plan.routes[index]
        if not route.gateways:
            continue
        if not route.limited:
            return index
        now = int(time.time())
        outcome = state.seize_trunk(route.trunk, provider_settlement_id(plan.account, plan.call_id), now=now,
                                    max_calls=route.max_calls, cps=route.cps,
                                    hold_until=now + plan.granted + TRUNK_HOLD_GRACE_SECONDS)
        if outcome == TRUNK_SEIZED:
            return index
    return None


def release_trunk(state: CallState, plan: CallPlan, route_index: int) -> None:
    route = plan.routes[route_index]
    if route.limited:
        state.release_trunk(route.trunk, provider_settlement_id(plan.account, plan.call_id))


def lookup_registered(users: tuple[str, ...], realm: str) -> bool:
    """R-URI and branches := the users' registered contacts (False: none is registered)."""
    found = False
    for user in users:
        aor = f"sip:{user}@{realm}"
        found = (KSR.registrar.lookup_to_dset("location", aor) if found
                 else KSR.registrar.lookup_uri("location", aor)) > 0 or found
    return found
