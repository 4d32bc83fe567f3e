"""The SIP edge as an attacker meets it (issue "SIP edge you can put on the internet"), on a running relay node.

Each test sends what someone without credentials, or with a customer's, could send, and checks what the
carrier behind the switch gets: nothing, unless a call was decided, admitted and billed. Gateways are
tests/sip_wire.Gateway carriers recording every message; callers are raw sip_wire.Peer sockets. Customers are
IP-authenticated from 127.0.0.1 with a tech prefix of their own; attackers send from 127.0.0.9, which no IP
map covers; devices call from 127.0.0.2.
"""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from tests.kamailio_harness import (
    CALLER,
    DESTINATION,
    ack_and_bye,
    add_device,
    customer_on,
    customer_over,
    events,
    invite,
    make_carrier,
    make_customer,
    new_call_id,
    node_address,
    number,
    self_signed_certificate,
    settled,
    update_trunk,
    wait_routable,
)
from tests.sip_wire import Message, Peer, challenge_nonce, digest, request, sdp
from tollgate.v1 import trunks_pb2

ATTACKER = "127.0.0.9"  # no IP map covers it
DEVICE_IP = "127.0.0.2"
QUIET = 0.5  # how long a carrier must stay silent to count as "never reached"
REALM = "tollgate"


# ---------------------------------------------------------------------------------------------- 1. open relay


FORGED_ROUTES = {
    "route-to-the-switch": lambda relay, gw: [f"Route: <sip:{relay.address};lr>"],
    "route-to-the-gateway": lambda relay, gw: [f"Route: <sip:{gw.address};lr>"],
    "switch-then-gateway": lambda relay, gw: [f"Route: <sip:{relay.address};lr>, <sip:{gw.address};lr>"],
    "no-route": lambda relay, gw: [],
}


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "BYE", "INFO", "REFER", "NOTIFY"])
@pytest.mark.parametrize("route", sorted(FORGED_ROUTES))
def test_a_forged_in_dialog_request_is_404_and_never_reaches_a_carrier(relay, carriers, method, route):
    """Toll fraud through a made-up To tag and a Route naming the switch (or the gateway): no credentials, no
    dialog, so 404 - and the carrier hears nothing."""
    gateway = carriers("answer")
    with Peer(ATTACKER) as attacker:
        body = sdp(ATTACKER) if method == "INVITE" else ""
        attacker.send(request(method, f"sip:004930123456@{gateway.address}", via=attacker.address,
                              call_id=new_call_id(), from_host=ATTACKER, to_tag="forgedtag",
                              headers=FORGED_ROUTES[route](relay, gateway), body=body), node_address(relay))
        answer = attacker.final()
    assert answer is not None and answer.status == 404, answer and answer.first_line
    time.sleep(QUIET)
    assert gateway.requests() == []


def test_a_stranger_cannot_steer_a_real_dialog_to_another_carrier(admin, money, fast, relay, carriers):
    """Even with a live call's Call-ID, tags and Record-Route, an in-dialog request goes only to that dialog's
    other party, never to the Request-URI an attacker wrote."""
    gateway, elsewhere = carriers("answer"), carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    with Peer() as caller, Peer(ATTACKER) as attacker:
        sent, ok = invite(caller, relay, customer.dialled())
        assert ok is not None and ok.status == 200, ok and ok.first_line
        real = Message(sent.encode())
        routes = [f"Route: {r}" for r in reversed(ok.headers("Record-Route"))]
        attacker.send(request("INVITE", f"sip:004930123456@{elsewhere.address}", via=attacker.address,
                              call_id=real.header("Call-ID"), from_tag=real.tag("From"), to_tag=ok.tag("To"),
                              cseq=5, headers=routes, body=sdp(ATTACKER)), node_address(relay))
        attacker.collect(QUIET)
        assert ack_and_bye(caller, relay, sent, ok) is not None
    assert elsewhere.requests() == []


def test_a_pre_loaded_route_on_a_new_call_is_ignored(admin, money, fast, relay, carriers):
    """An admitted call goes where the decision sends it, whatever Route headers the caller added."""
    gateway, elsewhere = carriers("answer"), carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled(), headers=[f"Route: <sip:{elsewhere.address};lr>"])
        assert ok is not None and ok.status == 200, ok and ok.first_line
        ack_and_bye(caller, relay, sent, ok)
    (received,) = gateway.wait_for("INVITE")
    assert received.headers("Route") == [] and elsewhere.address not in received.text
    assert elsewhere.requests() == []


@pytest.mark.parametrize("method", ["MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH", "OPTIONS", "INFO"])
def test_out_of_dialog_requests_other_than_invite_are_never_relayed(admin, money, fast, relay, carriers, method):
    """Only INVITE goes through the decision path; a customer's MESSAGE to a carrier's number is refused."""
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    with Peer() as caller:
        caller.send(request(method, f"sip:{customer.dialled()}@{gateway.address}", via=caller.address,
                            call_id=new_call_id(), headers=[f"Route: <sip:{relay.address};lr>"]),
                    node_address(relay))
        answer = caller.final()
    assert answer is not None and answer.status == 405, answer and answer.first_line
    time.sleep(QUIET)
    assert gateway.requests() == []


def test_a_call_id_is_admitted_once(admin, money, fast, relay, carriers, redis_client, control_server):
    """A finished call's Call-ID sent again (new From tag, new branch) would be settled as a repeat - a free
    call. It is refused, and so is a second INVITE with the Call-ID of a call still ringing."""
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    call_id = new_call_id()
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled(), call_id=call_id)
        assert ok is not None and ok.status == 200
        ack_and_bye(caller, relay, sent, ok)
        assert len(settled(redis_client, control_server, customer.account)) == 1
        _sent, again = invite(caller, relay, customer.dialled("4420999999"), call_id=call_id)
    assert again is not None and again.status == 400 and "Call-ID" in again.first_line, again and again.first_line
    time.sleep(QUIET)
    assert len(gateway.requests("INVITE")) == 1
    assert len(events(redis_client, control_server, customer.account)) == 1


# ---------------------------------------------------------------------------------------------- 2. digest


@pytest.fixture
def device_customer(admin, money, fast, carriers):
    """A customer with a SIP device (calling from 127.0.0.2), its gateway answering: (username, password,
    gateway, account)."""
    gateway = carriers("answer")
    rate_group, _trunks, _provider = make_carrier(admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")],
                                                  "prefix,rate_per_min\n44,0.05\n")
    customer = make_customer(admin, money, rate_group)
    password = f"pw-{secrets.token_hex(8)}"
    username = add_device(admin, customer, password)
    wait_routable(fast, number(customer))
    deadline = time.monotonic() + 5
    while username not in fast.world.devices and time.monotonic() < deadline:
        fast.load()
        time.sleep(0.05)
    time.sleep(0.6)
    return username, password, gateway, number(customer)


def authenticated_invite(peer: Peer, relay, username: str, password: str, dialled: str, *, call_id: str,
                         uri: str | None = None, claimed_algorithm: str | None = None):
    """INVITE -> 407 -> INVITE with credentials for that nonce; (the credentials header, the final answer)."""
    ruri = f"sip:{dialled}@{relay.address}"
    tag = secrets.token_hex(6)
    first = request("INVITE", ruri, via=peer.address, call_id=call_id, from_host=peer.address[0], from_tag=tag,
                    body=sdp(peer.address[0]), headers=["Content-Type: application/sdp"])
    peer.send(first, node_address(relay))
    challenge = peer.final(method="INVITE")
    assert challenge is not None and challenge.status == 407, challenge and challenge.first_line
    credentials = digest(username=username, password=password, realm=REALM, method="INVITE", uri=uri or ruri,
                         nonce=challenge_nonce(challenge), claimed_algorithm=claimed_algorithm)
    answer = send_with(peer, relay, ruri, credentials, call_id=call_id, from_tag=tag, cseq=2)
    return credentials, answer


def send_with(peer: Peer, relay, ruri: str, credentials: str, *, call_id: str, from_tag: str, cseq: int):
    peer.send(request("INVITE", ruri, via=peer.address, call_id=call_id, from_host=peer.address[0], from_tag=from_tag,
                      cseq=cseq, body=sdp(peer.address[0]), headers=[credentials, "Content-Type: application/sdp"]),
              node_address(relay))
    return peer.final(method="INVITE", timeout=6)


def test_replayed_credentials_get_a_fresh_challenge_never_a_call(relay, device_customer):
    username, password, gateway, _account = device_customer
    with Peer(DEVICE_IP) as device, Peer(DEVICE_IP) as thief:
        credentials, answer = authenticated_invite(device, relay, username, password, DESTINATION,
                                                   call_id=new_call_id())
        assert answer is not None and answer.status == 200, answer and answer.first_line
        # The finished call's Proxy-Authorization, on a new Call-ID to another number: billed to the victim?
        ruri = f"sip:4420999999@{relay.address}"
        replay = send_with(thief, relay, ruri, credentials, call_id=new_call_id(), from_tag="t1", cseq=1)
    assert replay is not None and replay.status == 407, replay and replay.first_line
    assert 'nonce="' in replay.header("Proxy-Authenticate")
    time.sleep(QUIET)
    assert len(gateway.requests("INVITE")) == 1


def test_credentials_reused_within_their_call_id_are_challenged_again(relay, carriers, admin, money, fast):
    """Nonce counting: the same credentials (same nc) on a new transaction of the same Call-ID and URI."""
    gateway = carriers(486)
    rate_group, _trunks, _provider = make_carrier(admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")],
                                                  "prefix,rate_per_min\n44,0.05\n")
    customer = make_customer(admin, money, rate_group)
    username = add_device(admin, customer, "reuse-password-1")
    wait_routable(fast, number(customer))
    time.sleep(0.3)
    call_id = new_call_id()
    with Peer(DEVICE_IP) as device:
        credentials, answer = authenticated_invite(device, relay, username, "reuse-password-1", DESTINATION,
                                                   call_id=call_id)
        assert answer is not None and answer.status == 486, answer and answer.first_line
        ruri = f"sip:{DESTINATION}@{relay.address}"
        again = send_with(device, relay, ruri, credentials, call_id=call_id, from_tag="other", cseq=3)
    assert again is not None and again.status == 407, again and again.first_line


def test_credentials_for_another_request_uri_are_challenged(relay, device_customer):
    username, password, gateway, _account = device_customer
    with Peer(DEVICE_IP) as device:
        _credentials, answer = authenticated_invite(device, relay, username, password, DESTINATION,
                                                    call_id=new_call_id(), uri=f"sip:4420999999@{relay.address}")
    assert answer is not None and answer.status == 407, answer and answer.first_line
    time.sleep(QUIET)
    assert gateway.requests() == []


def test_credentials_claiming_another_algorithm_are_challenged(relay, device_customer):
    """A header saying algorithm=SHA-256 but computed with MD5 must not pass as MD5."""
    username, password, gateway, _account = device_customer
    with Peer(DEVICE_IP) as device:
        _credentials, answer = authenticated_invite(device, relay, username, password, DESTINATION,
                                                    call_id=new_call_id(), claimed_algorithm="SHA-256")
    assert answer is not None and answer.status == 407, answer and answer.first_line
    time.sleep(QUIET)
    assert gateway.requests() == []


def test_replayed_register_credentials_get_a_fresh_401(relay, device_customer):
    username, password, _gateway, _account = device_customer
    ruri = f"sip:{relay.address}"

    def register(peer, call_id, extra=(), cseq=1):
        peer.send(request("REGISTER", ruri, via=peer.address, call_id=call_id, from_user=username,
                          from_host=REALM, from_tag="r1", to_uri=f"sip:{username}@{REALM}", cseq=cseq,
                          headers=["Expires: 60", *extra]), node_address(relay))
        return peer.final(method="REGISTER")

    with Peer(DEVICE_IP) as device:
        call_id = new_call_id()
        challenge = register(device, call_id)
        assert challenge is not None and challenge.status == 401
        credentials = digest(username=username, password=password, realm=REALM, method="REGISTER", uri=ruri,
                             nonce=challenge_nonce(challenge, "WWW-Authenticate"), header="Authorization")
        registered = register(device, call_id, [credentials], cseq=2)
        assert registered is not None and registered.status == 200, registered and registered.first_line
        replayed = register(device, new_call_id(), [credentials])
    assert replayed is not None and replayed.status == 401, replayed and replayed.first_line


# ---------------------------------------------------------------------------------------------- 3. identity


IDENTITY_HEADERS = {
    "P-Asserted-Identity": "<sip:4930555@forged.example>",
    "P-Preferred-Identity": "<sip:4930666@forged.example>",
    "Remote-Party-ID": '"Bank" <sip:4930777@forged.example>;party=calling;screen=yes;privacy=off',
    "Diversion": "<sip:4930888@forged.example>;reason=unconditional",
    "Privacy": "none",
    "History-Info": "<sip:4930999@forged.example>;index=1",
}


def test_the_switch_decides_what_a_carrier_sees(admin, money, fast, relay, carriers):
    """The customer's claimed identities never reach the carrier; its addresses and Call-ID are masked."""
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    call_id = f"customer-secret-{uuid.uuid4().hex}"
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled(), call_id=call_id,
                          headers=[f"{name}: {value}" for name, value in IDENTITY_HEADERS.items()])
        assert ok is not None and ok.status == 200, ok and ok.first_line
        assert ok.header("Call-ID") == call_id  # the caller sees its own Call-ID
        ack_and_bye(caller, relay, sent, ok)
        contact = f"{caller.address[0]}:{caller.address[1]}"
    (received,) = gateway.wait_for("INVITE")
    assert received.headers("P-Asserted-Identity") == [f"<sip:{CALLER}@{REALM}>"]
    for name in ("P-Preferred-Identity", "Remote-Party-ID", "Diversion", "Privacy", "History-Info"):
        assert received.headers(name) == [], name
    assert "forged.example" not in received.text
    assert received.header("To") == f"<sip:{DESTINATION}@{gateway.address}>"
    assert received.header("From").startswith(f"<sip:{CALLER}@{REALM}>")
    assert call_id not in received.text and f"{customer.tech_prefix}" not in received.text
    assert contact not in received.text, "the caller's Contact reached the carrier"


def test_a_trunk_may_let_diversion_privacy_and_history_info_through(admin, money, fast, relay, carriers):
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    update_trunk(admin, fast, customer.trunks[0], lambda t: t.pass_history_info, pass_diversion=True,
                 pass_privacy=True, pass_history_info=True)
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled(),
                          headers=[f"{name}: {value}" for name, value in IDENTITY_HEADERS.items()])
        assert ok is not None and ok.status == 200
        ack_and_bye(caller, relay, sent, ok)
    (received,) = gateway.wait_for("INVITE")
    for name in ("Diversion", "Privacy", "History-Info"):
        assert received.headers(name) == [IDENTITY_HEADERS[name]], name
    for name in ("P-Preferred-Identity", "Remote-Party-ID"):
        assert received.headers(name) == [], name
    assert received.headers("P-Asserted-Identity") == [f"<sip:{CALLER}@{REALM}>"]


def test_topology_hiding_can_be_turned_off_per_trunk(admin, money, fast, relay, carriers):
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    update_trunk(admin, fast, customer.trunks[0], lambda t: t.topology_hiding == "OFF",
                 topology_hiding=trunks_pb2.TOPOLOGY_HIDING_OFF)
    call_id = f"plain-{uuid.uuid4().hex}"
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled(), call_id=call_id)
        assert ok is not None and ok.status == 200
        assert ack_and_bye(caller, relay, sent, ok) is not None
    (received,) = gateway.wait_for("INVITE")
    assert received.header("Call-ID") == call_id


# ---------------------------------------------------------------------------------------------- 4. numbers


@pytest.mark.parametrize("dialled", ["4" * 500, "4" * 3000, "44%0020123", "44\u0664\u0664201", "+4420123456", ""])
def test_a_number_that_is_not_digits_is_484(admin, money, fast, relay, carriers, dialled):
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    with Peer() as caller:
        _sent, answer = invite(caller, relay, customer.tech_prefix + dialled)
    assert answer is not None and answer.status == 484, answer and answer.first_line
    time.sleep(QUIET)
    assert gateway.requests() == []


def test_uri_parameters_of_the_dialled_number_are_never_forwarded(admin, money, fast, relay, carriers):
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled() + ";npdi;rn=4930111")
        assert ok is not None and ok.status == 200, ok and ok.first_line
        ack_and_bye(caller, relay, sent, ok)
    (received,) = gateway.wait_for("INVITE")
    assert received.first_line == f"INVITE sip:{DESTINATION}@{gateway.address} SIP/2.0"
    assert "npdi" not in received.text and "rn=" not in received.text


@pytest.mark.parametrize("caller_id", ["\u0661\u0665\u0665\u0665", "+", "15550001111%00", "1" * 40])
def test_a_caller_id_that_is_not_digits_becomes_the_default_caller_id_or_anonymous(
        admin, money, fast, relay, carriers, caller_id):
    gateway = carriers("answer")
    customer = customer_over(admin, money, fast, [gateway])
    with_default = customer_over(admin, money, fast, [gateway], default_caller_id="4930111222")
    seen = []
    for who in (customer, with_default):
        with Peer() as caller:
            sent, ok = invite(caller, relay, who.dialled(), from_user=caller_id)
            assert ok is not None and ok.status == 200, ok and ok.first_line
            ack_and_bye(caller, relay, sent, ok)
        seen.append(gateway.wait_for("INVITE", count=len(seen) + 1)[-1])
    anonymous, defaulted = seen
    assert anonymous.header("From").startswith('"Anonymous" <sip:anonymous@anonymous.invalid>')
    assert anonymous.headers("P-Asserted-Identity") == []
    assert defaulted.header("From").startswith(f"<sip:4930111222@{REALM}>")
    assert defaulted.headers("P-Asserted-Identity") == [f"<sip:4930111222@{REALM}>"]


# ---------------------------------------------------------------------------------------------- 5. transports


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_calls_reach_tcp_and_tls_gateways(admin, money, fast, tls_relay, carriers, transport, redis_client,
                                          control_server):
    gateway = carriers("answer", transport=transport, certificate=self_signed_certificate())
    customer = customer_over(admin, money, fast, [gateway])
    update_trunk(admin, fast, customer.trunks[0], lambda t: t.gateways[0][1] == transport,
                 gateways=[trunks_pb2.Gateway(address=gateway.address, transport=getattr(
                     trunks_pb2, f"TRANSPORT_{transport.upper()}"))])
    with Peer() as caller:
        sent, ok = invite(caller, tls_relay, customer.dialled())
        assert ok is not None and ok.status == 200, ok and ok.first_line
        assert ack_and_bye(caller, tls_relay, sent, ok) is not None
    assert gateway.wait_for("BYE"), "the BYE went back over the same transport"
    (event,) = settled(redis_client, control_server, customer.account)
    assert event["gateway"] == gateway.address and event["sip_code"] == "200"


def test_a_gateway_the_node_cannot_send_to_fails_over_at_once(admin, money, fast, relay, carriers, redis_client,
                                                               control_server):
    """An unreachable TCP gateway (nobody listens) is a local send failure: the next gateway is tried, as
    after a 503, without waiting for a timer."""
    answering = carriers("answer")
    customer = customer_over(admin, money, fast, [answering])
    dead = f"127.0.0.1:{_closed_tcp_port()}"
    update_trunk(admin, fast, customer.trunks[0], lambda t: len(t.gateways) == 2, gateways=[
        trunks_pb2.Gateway(address=dead, transport=trunks_pb2.TRANSPORT_TCP),
        trunks_pb2.Gateway(address=answering.address)])
    started = time.monotonic()
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled())
        elapsed = time.monotonic() - started
        assert ok is not None and ok.status == 200, ok and ok.first_line
        ack_and_bye(caller, relay, sent, ok)
    assert elapsed < 2.0, elapsed
    (event,) = settled(redis_client, control_server, customer.account)
    assert event["gateway"] == answering.address


def _closed_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- 6. post-dial delay


def test_a_gateway_that_only_says_trying_is_left_after_the_trunk_s_post_dial_delay(
        admin, money, fast, relay, carriers, redis_client, control_server):
    silent, answering = carriers("trying"), carriers("answer")
    customer = customer_over(admin, money, fast, [silent, answering])
    update_trunk(admin, fast, customer.trunks[0], lambda t: t.pdd_timeout_seconds == 2, pdd_timeout_seconds=2)
    started = time.monotonic()
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled())
        elapsed = time.monotonic() - started
        assert ok is not None and ok.status == 200, ok and ok.first_line
        ack_and_bye(caller, relay, sent, ok)
    assert 1.8 <= elapsed < 5.0, elapsed  # not the 120 s ring time
    (event,) = settled(redis_client, control_server, customer.account)
    assert event["gateway"] == answering.address


def test_a_ringing_gateway_keeps_the_call_past_the_post_dial_delay(admin, money, fast, relay, carriers,
                                                                   redis_client, control_server):
    ringing, spare = carriers("ring", ring_seconds=3.0), carriers("answer")
    customer = customer_over(admin, money, fast, [ringing, spare])
    update_trunk(admin, fast, customer.trunks[0], lambda t: t.pdd_timeout_seconds == 1, pdd_timeout_seconds=1)
    with Peer() as caller:
        sent, ok = invite(caller, relay, customer.dialled())
        assert ok is not None and ok.status == 200, ok and ok.first_line
        ack_and_bye(caller, relay, sent, ok)
    (event,) = settled(redis_client, control_server, customer.account)
    assert event["gateway"] == ringing.address and spare.requests() == []


# ---------------------------------------------------------------------------------------------- money on the wire


def test_an_in_dialog_request_does_not_extend_the_granted_duration(admin, money, fast, relay, carriers,
                                                                   redis_client, control_server):
    """A prepaid call granted 3 s: a re-INVITE at 1.5 s must not restart the dialog's timer (a caller would
    otherwise talk on, billed at most the grant)."""
    gateway = carriers("answer")
    rate_group, _trunks, _provider = make_carrier(admin, [([gateway.address], "prefix,rate_per_min\n44,0.30\n")],
                                                  "prefix,rate_per_min\n44,0.60\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, balance=30_000)  # 3 s at 0.01/s
    with Peer() as caller:
        sent, ok = invite(caller, relay, tech_prefix + DESTINATION)
        answered = time.monotonic()
        assert ok is not None and ok.status == 200, ok and ok.first_line
        original = Message(sent.encode())
        target = ok.header("Contact").strip("<>")
        routes = [f"Route: {r}" for r in reversed(ok.headers("Record-Route"))]
        common = dict(via=caller.address, call_id=original.header("Call-ID"), from_tag=original.tag("From"),
                      to_uri=original.header("To").strip("<>"), to_tag=ok.tag("To"), headers=routes)
        caller.send(request("ACK", target, cseq=1, **common), node_address(relay))
        time.sleep(1.5)
        caller.send(request("INVITE", target, cseq=3, body=sdp(), **common), node_address(relay))
        bye = None
        deadline = answered + 8
        while bye is None and time.monotonic() < deadline:
            message = caller.recv(0.5)
            if message is not None and message.method == "BYE":
                bye = message
                caller.send(_ok_to(message), node_address(relay))
        cut = time.monotonic() - answered
    assert bye is not None, "the switch never ended the call"
    assert cut < 4.5, cut
    (event,) = settled(redis_client, control_server, account)
    assert event["billable_seconds"] == "3"


def _ok_to(message: Message) -> str:
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in message.headers("Via")), f"From: {message.header('From')}",
             f"To: {message.header('To')}", f"Call-ID: {message.header('Call-ID')}",
             f"CSeq: {message.header('CSeq')}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines)


@pytest.fixture(scope="module")
def tls_relay(control_server, tmp_path_factory):
    """A relay node with a TLS listener (its client side reaches TLS gateways)."""
    from tests.kamailio_harness import start_kamailio

    instance = start_kamailio(tmp_path_factory.mktemp("tls-relay"), redis_url=control_server.redis_url,
                              namespace=control_server.keys.namespace, mode="relay", fr_timer_ms=1000, tls=True)
    yield instance
    instance.stop()
    assert not instance.faults(), instance.faults()



# ---------------------------------------------------------------------------------------------- two nodes


def test_the_second_node_refuses_forged_dialogs_too(relay2, carriers):
    gateway = carriers("answer")
    with Peer(ATTACKER) as attacker:
        attacker.send(request("INVITE", f"sip:004930123456@{gateway.address}", via=attacker.address,
                              call_id=new_call_id(), from_host=ATTACKER, to_tag="forgedtag",
                              headers=[f"Route: <sip:{relay2.address};lr>"], body=sdp(ATTACKER)),
                      node_address(relay2))
        answer = attacker.final()
    assert answer is not None and answer.status == 404
    time.sleep(QUIET)
    assert gateway.requests() == []


def test_a_nonce_from_one_node_gets_a_stale_challenge_on_the_other_never_a_403(relay, relay2, device_customer):
    """Behind one address a balancer may send a device's answer to another node than the one that challenged
    it. The nodes share the nonce secret, so the other node knows the nonce is genuine but has not counted it:
    a fresh challenge with stale=true (not 403: the password is right), whose answer then makes the call."""
    username, password, gateway, _account = device_customer
    call_id = new_call_id()
    ruri = f"sip:{DESTINATION}@{relay.address}"

    def answer_with(node, nonce: str, cseq: int) -> tuple[str, Message | None]:
        credentials = digest(username=username, password=password, realm=REALM, method="INVITE", uri=ruri,
                             nonce=nonce)
        sent = request("INVITE", ruri, via=device.address, call_id=call_id, from_host=DEVICE_IP, from_tag="n1",
                       cseq=cseq, body=sdp(DEVICE_IP), headers=[credentials, "Content-Type: application/sdp"])
        device.send(sent, node_address(node))
        return sent, device.final(method="INVITE", timeout=6)

    with Peer(DEVICE_IP) as device:
        device.send(request("INVITE", ruri, via=device.address, call_id=call_id, from_host=DEVICE_IP, from_tag="n1",
                            body=sdp(DEVICE_IP), headers=["Content-Type: application/sdp"]), node_address(relay))
        first = device.final(method="INVITE")
        _sent, elsewhere = answer_with(relay2, challenge_nonce(first), 2)
        assert elsewhere is not None and elsewhere.status == 407, elsewhere and elsewhere.first_line
        assert "stale=true" in elsewhere.header("Proxy-Authenticate")
        sent, answer = answer_with(relay2, challenge_nonce(elsewhere), 3)
        assert answer is not None and answer.status == 200, answer and answer.first_line
        assert ack_and_bye(device, relay2, sent, answer) is not None
    assert len(gateway.requests("INVITE")) == 1
