"""Routing-server mode: every admitted INVITE is answered 302 (SPEC §5), and this node never sees the call.

Outbound: one Contact per gateway in failover order (trunk by trunk, each trunk's gateways in order,
descending q), the R-URI user of each being that route's destination as the trunk wants it; the presented
caller id is in P-Asserted-Identity. A local or DID call is redirected to the callee's registered contacts.
CPS and the balance were checked; nothing is reserved and concurrent calls are not counted. Runs inside
Kamailio (KSR).
"""

from __future__ import annotations

import KSR

from callstate.plan import gateway_uri
from fastpath.decision import ANONYMOUS
from kemi.relay import lookup_registered


def answer(decision, realm: str) -> tuple[int, str]:
    """Answer the INVITE; (the code sent, the refusing stage or "" for the 302), for the node's metrics."""
    if decision.direction == "outbound":
        return _outbound(decision, realm)
    callees = (decision.callee,) if decision.direction == "local" else decision.callee_devices
    if not lookup_registered(callees, realm):
        KSR.sl.send_reply(480, "Temporarily Unavailable")
        return 480, "route"
    _present_caller_id(decision.caller_id, realm)
    KSR.sl.send_reply(302, "Moved Temporarily")
    return 302, ""


def _outbound(decision, realm: str) -> tuple[int, str]:
    """302: one Contact per gateway in failover order; R-URI user = the route's destination."""
    contacts = [gateway_uri(route.destination, address, transport)
                for route in decision.routes for address, transport in route.gateways]
    if not contacts:
        KSR.sl.send_reply(503, "No route available")
        return 503, "route"
    # Every URI becomes a branch, q falling by 0.001 per place so that the order survives. The R-URI is left
    # alone: sl's 3xx prints a rewritten R-URI as a Contact of its own (without a q).
    for place, uri in enumerate(contacts):
        KSR.corex.append_branch_uri_q(uri, f"{max(1000 - place, 1) / 1000:.3f}")
    _present_caller_id(decision.caller_id, realm)
    KSR.sl.send_reply(302, "Moved Temporarily")
    return 302, ""


def _present_caller_id(caller_id: str, realm: str) -> None:
    if caller_id != ANONYMOUS:
        KSR.hdr.append_to_reply(f"P-Asserted-Identity: <sip:{caller_id}@{realm}>\r\n")
