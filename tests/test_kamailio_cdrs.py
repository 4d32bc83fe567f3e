"""Every identified call leaves one CDR that says what the caller got (SPEC §8, §9), on a running relay node.

Refusals are recorded at cost 0, naming the refusing check; a relayed call that fails carries the final answer
the caller got and its reason - a gateway's 503 answered 500, a gateway nobody can reach "500 Relay failed",
a silent one 408; an answered call is billed whole seconds, at least one. The CDRs are read as the ledger wrote
them to PostgreSQL (tests/kamailio_harness.events).
"""

from __future__ import annotations

import time

import pytest

from callstate.events import FAILED, HANGUP, REFUSED
from tests.kamailio_harness import (
    CALLER,
    ack_and_bye,
    customer_over,
    events,
    invite,
    new_call_id,
    node_address,
    update_trunk,
)
from tests.sip_wire import Message, Peer, request, sdp
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import trunks_pb2


def cdr_of(redis_client, control_server, account: str, call_id: str, timeout: float = 5.0) -> dict:
    """The call's CDR once the ledger has it (or its event, still on the way)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events(redis_client, control_server, account) if e["call_id"] == call_id]
        if found:
            (only,) = found
            return only
        assert time.monotonic() < deadline, f"no CDR for {call_id}"
        time.sleep(0.05)


def outcome(cdr: dict) -> tuple[str, str, str, str]:
    return cdr["sip_code"], cdr["sip_reason"], cdr["stage"], cdr["end_reason"]


def _closed_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- failed relays


@pytest.mark.parametrize(("behaviour", "answer"), [
    (503, (500, "Server Internal Error")),  # RFC 3261 §16.7: never the gateway's 503
    (502, (502, "Gateway says no")),
    (486, (486, "Gateway says no")),  # busy: not failed over, relayed as it is
    ("trying", (408, "Request Timeout")),  # silent past the post-dial delay
])
def test_a_failed_relayed_call_s_cdr_says_what_the_caller_got(behaviour, answer, admin, money, fast, relay, carriers,
                                                               redis_client, control_server):
    gateway = carriers(behaviour)
    customer = customer_over(admin, money, fast, [gateway])
    if behaviour == "trying":
        update_trunk(admin, fast, customer.trunks[0], lambda t: t.pdd_timeout_seconds == 1, pdd_timeout_seconds=1)
    with Peer() as caller:
        call_id = new_call_id()
        _sent, final = invite(caller, relay, customer.dialled(), call_id=call_id)
    assert final is not None and (final.status, final.first_line.split(" ", 2)[2]) == answer, final and final.first_line
    cdr = cdr_of(redis_client, control_server, customer.account, call_id)
    assert outcome(cdr) == (str(answer[0]), answer[1], "", FAILED)
    assert (cdr["trunk"], cdr["gateway"], cdr["customer_cost"]) == (customer.trunks[0], gateway.address, "0")


def test_a_gateway_nobody_can_reach_is_500_relay_failed_in_the_cdr_too(admin, money, fast, relay, carriers,
                                                                       redis_client, control_server):
    placeholder = carriers("answer")
    customer = customer_over(admin, money, fast, [placeholder])
    dead = f"127.0.0.1:{_closed_tcp_port()}"
    update_trunk(admin, fast, customer.trunks[0], lambda t: t.gateways[0][1] == "tcp",
                 gateways=[trunks_pb2.Gateway(address=dead, transport=trunks_pb2.TRANSPORT_TCP)])
    with Peer() as caller:
        call_id = new_call_id()
        _sent, final = invite(caller, relay, customer.dialled(), call_id=call_id)
    assert final is not None and final.first_line == "SIP/2.0 500 Relay failed", final and final.first_line
    cdr = cdr_of(redis_client, control_server, customer.account, call_id)
    assert outcome(cdr) == ("500", "Relay failed", "relay", FAILED)
    assert money.open_calls(customer.account) == 0  # its reservation released


def test_every_gateway_failing_after_a_busy_one_fails_over_and_the_cdr_has_the_last(admin, money, fast, relay,
                                                                                   carriers, redis_client,
                                                                                   control_server):
    """A 503 fails over to the next trunk; that one cannot be reached either: the caller gets 500 Relay
    failed (the last failure), and so does the CDR, which names the trunk tried last."""
    refusing, placeholder = carriers(503), carriers("answer")
    customer = customer_over(admin, money, fast, [refusing, placeholder])
    dead = f"127.0.0.1:{_closed_tcp_port()}"
    update_trunk(admin, fast, customer.trunks[1], lambda t: t.gateways[0][1] == "tcp",
                 gateways=[trunks_pb2.Gateway(address=dead, transport=trunks_pb2.TRANSPORT_TCP)])
    with Peer() as caller:
        call_id = new_call_id()
        _sent, final = invite(caller, relay, customer.dialled(), call_id=call_id)
    assert final is not None and final.first_line == "SIP/2.0 500 Relay failed", final and final.first_line
    cdr = cdr_of(redis_client, control_server, customer.account, call_id)
    assert (cdr["sip_code"], cdr["sip_reason"], cdr["trunk"]) == ("500", "Relay failed", customer.trunks[1])


# ---------------------------------------------------------------------------------------------- answered


def test_a_300_ms_answered_call_is_billed_its_first_second(admin, money, fast, relay, carriers, redis_client,
                                                           control_server):
    """SPEC §4: billable seconds round up; a call answered and hung up at once still pays one second."""
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    before = money.available(customer.account, 0)
    with Peer() as caller:
        call_id = new_call_id()
        sent, ok = invite(caller, relay, customer.dialled(), call_id=call_id)
        assert ok is not None and ok.status == 200, ok and ok.first_line
        time.sleep(0.3)
        bye = ack_and_bye(caller, relay, sent, ok)
    assert bye is not None and bye.status == 200
    cdr = cdr_of(redis_client, control_server, customer.account, call_id)
    assert outcome(cdr) == ("200", "OK", "", HANGUP)
    assert float(cdr["end_time"]) - float(cdr["answer_time"]) < 1.0
    assert (cdr["billable_seconds"], cdr["customer_cost"]) == ("1", str(50_000 // 60 + 1))  # 0.05/min, rounded up
    assert money.available(customer.account, 0) == before - (50_000 // 60 + 1)


def test_a_ringing_call_cancelled_by_the_caller_is_487_free_and_releases_everything(admin, money, fast, relay,
                                                                                      carriers, redis_client,
                                                                                      control_server):
    """CANCEL is relayed natively: the caller's CANCEL gets 200, the gateway gets the CANCEL, the INVITE ends 487;
    the call costs nothing, its reservation and concurrent-call slot are released, and its CDR says 487."""
    gateway = carriers("ring", ring_seconds=5)
    customer = customer_over(admin, money, fast, [gateway])
    before = money.available(customer.account, 0)
    with Peer() as caller:
        call_id = new_call_id()
        text = request("INVITE", f"sip:{customer.dialled()}@{relay.address}", via=caller.address, call_id=call_id,
                       from_user=CALLER, from_host=caller.address[0], headers=["Content-Type: application/sdp"],
                       body=sdp(caller.address[0]))
        caller.send(text, node_address(relay))
        ringing = [m for m in caller.collect(1.0) if m.status == 180]
        assert ringing, "no 180 Ringing relayed"
        assert money.open_calls(customer.account) == 1
        sent = Message(text.encode())
        branch = sent.header("Via").split("branch=", 1)[1].split(";", 1)[0]
        cancel = request("CANCEL", f"sip:{customer.dialled()}@{relay.address}", via=caller.address,
                         call_id=call_id, from_user=CALLER, from_host=caller.address[0], from_tag=sent.tag("From"),
                         branch=branch)
        caller.send(cancel, node_address(relay))
        answers = caller.collect(2.0)
    assert any(m.status == 200 and m.cseq_method == "CANCEL" for m in answers), [m.first_line for m in answers]
    assert any(m.status == 487 and m.cseq_method == "INVITE" for m in answers), [m.first_line for m in answers]
    assert gateway.wait_for("CANCEL"), "the gateway never got the CANCEL"
    cdr = cdr_of(redis_client, control_server, customer.account, call_id)
    assert (cdr["sip_code"], cdr["customer_cost"], cdr["billable_seconds"]) == ("487", "0", "0")
    assert money.open_calls(customer.account) == 0
    assert money.available(customer.account, 0) == before


# ---------------------------------------------------------------------------------------------- refused


def test_a_disabled_account_s_call_is_refused_with_a_cdr(admin, money, fast, relay, carriers, redis_client,
                                                         control_server):
    customer = customer_over(admin, money, fast, [carriers("answer")])
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(
        name=f"accounts/{customer.account}", status=apb.INACTIVE)), metadata=admin.metadata)
    deadline = time.monotonic() + 5
    while True:  # until the projection (and Kamailio, ~0.3 s later) has it
        fast.load()
        if not fast.world.accounts[customer.account].usable(int(time.time())):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.6)
    with Peer() as caller:
        call_id = new_call_id()
        _sent, final = invite(caller, relay, customer.dialled(), call_id=call_id)
    assert final is not None and final.first_line == "SIP/2.0 403 Account disabled", final and final.first_line
    cdr = cdr_of(redis_client, control_server, customer.account, call_id)
    assert outcome(cdr) == ("403", "Account disabled", "account", REFUSED)
    assert cdr["caller_id_received"] == CALLER and cdr["customer_cost"] == "0"


def test_calls_over_the_cps_limit_each_leave_a_refused_cdr(admin, money, fast, relay, carriers, redis_client,
                                                           control_server):
    gateway = carriers(486)
    customer = customer_over(admin, money, fast, [gateway], cps=1)
    time.sleep(1.02 - time.time() % 1)  # all three in one second
    answers = {}
    with Peer() as caller:
        for _ in range(3):
            call_id = new_call_id()
            _sent, final = invite(caller, relay, customer.dialled(), call_id=call_id)
            answers[call_id] = final.status if final else None
    assert sorted(answers.values()) == [486, 503, 503], answers
    for call_id, status in answers.items():
        cdr = cdr_of(redis_client, control_server, customer.account, call_id)
        expected = ("486", "Gateway says no", "", FAILED) if status == 486 else (
            "503", "CPS limit exceeded", "cps", REFUSED)
        assert outcome(cdr) == expected
