"""tollgate in Kamailio's relay mode, on the wire: calls relayed to sipp gateways, failover, money, limits.

Kamailio runs kemi/tollgate_kemi.py with TOLLGATE_MODE "relay" (fr_timer 1 s, so that a silent gateway is
given up quickly). Every gateway is a sipp UAS on a free loopback port of its own; a "dead" gateway is a
free port nobody listens on (UDP: silence, so tm times out with 408). Customers are IP-authenticated from
127.0.0.1 with a tech prefix of their own and are funded in Redis (fastpath.admission), where the test
reads their balance, reservations, open calls and call events afterwards.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from callstate.events import CallEvent
from fastpath.reference.rating import Terms, cost
from tests.kamailio_harness import (
    CALLER,
    DESTINATION,
    EUR,
    Kamailio,
    balance,
    customer_on,
    dead_gateway,
    eventually_balance,
    make_carrier,
    make_customer,
    map_ip,
    number,
    options_probe,
    run_sipp,
    settled,
    start_kamailio,
    start_relay,
    user_of,
    wait_routable,
)
from tests.kamailio_harness import suffix as _suffix
from tollgate.v1 import trunks_pb2


def place(relay: Kamailio, tmp_path: Path, scenario: str, expect: int, dialled: str, timeout: float = 10, **values):
    return run_sipp(relay, scenario, tmp_path / "uac", expect=expect, rows=[(CALLER, dialled)], timeout=timeout,
                    values=values)


# ---------------------------------------------------------------------------------------------- relay


def test_relayed_call_reaches_the_gateway_rewritten_and_is_billed_exactly(
        admin, money, relay, fast, gateways, tmp_path, redis_client, control_server):
    gateway = gateways("uas_answer.xml", BYE_TIMEOUT=10_000)
    rate_group, (trunk,), provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min,connect_fee,prepend\n44,0.30,0.001,77\n")],
        "prefix,rate_per_min,connect_fee\n44,0.60,0.01\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group)
    provider_before = balance(money, provider)

    result = place(relay, tmp_path, "uac_call.xml", 200, tech_prefix + DESTINATION, HOLD=1500)
    assert result.returncode == 0, result.explain()
    assert gateway.result().returncode == 0
    (invite,) = gateway.received("INVITE")
    assert invite.first_line.startswith(f"INVITE sip:77{DESTINATION}@{gateway.address}")
    assert user_of(invite.headers("From")[0]) == CALLER
    assert invite.headers("P-Asserted-Identity") == [f"<sip:{CALLER}@tollgate>"]
    assert gateway.received("BYE"), "the caller's BYE reached the gateway"

    (event,) = settled(redis_client, control_server, account)
    billable = int(event["billable_seconds"])
    assert 2 <= billable <= 3  # 1.5 s of talk, counted in started seconds
    customer_cost = cost(billable, Terms(10_000, 0, 600_000, 1, 1))
    provider_cost = cost(billable, Terms(1_000, 0, 300_000, 1, 1))
    assert (int(event["customer_cost"]), int(event["provider_cost"])) == (customer_cost, provider_cost)
    assert balance(money, account) == 10 * EUR - customer_cost
    assert money.open_calls(account) == 0
    credited = provider_before + provider_cost
    assert eventually_balance(money, provider, credited) == credited  # by the control service's ledger
    assert event["trunk"] == trunk and event["gateway"] == gateway.address and event["sip_code"] == "200"
    assert event["destination_dialled"] == DESTINATION and event["destination_sent"] == "77" + DESTINATION
    assert event["caller_id_received"] == CALLER == event["caller_id_presented"]
    assert float(event["setup_time"]) <= float(event["answer_time"]) < float(event["end_time"])
    # ... and the control service's ledger has made it a CDR in PostgreSQL, moving both balances there too.
    deadline = time.monotonic() + 10
    with psycopg.connect(control_server.dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cdr = conn.execute("SELECT account_number, provider, billable_seconds, customer_cost, provider_cost "
                               "FROM cdrs WHERE call_id = %s AND account_number = %s",
                               (event["call_id"], account)).fetchone()
            moved = conn.execute("SELECT count(*) FROM ledger_entries WHERE call_id IN (%s, %s)",
                                 (event["call_id"], f"{account}/{event['call_id']}")).fetchone()[0]
            if cdr and moved == 2:
                break
            time.sleep(0.1)
        assert cdr == (account, provider, billable, customer_cost, provider_cost)
        balances = dict(conn.execute("SELECT account_number, balance FROM accounts WHERE account_number IN (%s, %s)",
                                     (account, provider)).fetchall())
    assert balances == {account: -customer_cost, provider: provider_cost}  # PostgreSQL saw no payment yet


def test_failover_to_the_next_gateway_then_the_next_trunk(admin, money, relay, fast, gateways, tmp_path,
                                                         redis_client, control_server):
    refusing = gateways("uas_refuse.xml", CODE=503)
    answering = gateways("uas_answer.xml", BYE_TIMEOUT=10_000)
    rate_group, trunks, _provider = make_carrier(admin, [
        ([refusing.address, dead_gateway()], "prefix,rate_per_min\n44,0.01\n"),
        ([answering.address], "prefix,rate_per_min,prepend\n44,0.02,99\n"),
    ], "prefix,rate_per_min\n44,0.05\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, trunks=2)

    started = time.monotonic()
    result = place(relay, tmp_path, "uac_call.xml", 200, tech_prefix + DESTINATION, HOLD=200)
    assert result.returncode == 0, result.explain()
    assert time.monotonic() - started < 5  # the silent gateway cost one fr_timer (1 s)
    assert len(refusing.received("INVITE")) == 1
    (invite,) = answering.received("INVITE")
    assert invite.first_line.startswith(f"INVITE sip:99{DESTINATION}@")
    (event,) = settled(redis_client, control_server, account)
    assert (event["trunk"], event["gateway"], event["sip_code"]) == (trunks[1], answering.address, "200")


def test_486_is_not_failed_over_and_releases_the_reservation(admin, money, relay, fast, gateways, tmp_path,
                                                            redis_client, control_server):
    busy = gateways("uas_refuse.xml", CODE=486)
    spare = gateways("uas_answer.xml", BYE_TIMEOUT=3_000)
    rate_group, _trunks, _provider = make_carrier(admin, [
        ([busy.address], "prefix,rate_per_min\n44,0.01\n"), ([spare.address], "prefix,rate_per_min\n44,0.02\n"),
    ], "prefix,rate_per_min\n44,0.05\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, trunks=2)

    result = place(relay, tmp_path, "uac_call.xml", 486, tech_prefix + DESTINATION, HOLD=0)
    assert result.returncode == 0, result.explain()
    assert result.received(486)
    assert not spare.received("INVITE")
    (event,) = settled(redis_client, control_server, account)
    assert (event["sip_code"], event["billable_seconds"], event["customer_cost"]) == ("486", "0", "0")
    assert balance(money, account) == 10 * EUR and money.open_calls(account) == 0


def test_when_every_gateway_fails_the_caller_gets_the_last_failure(admin, money, relay, fast, gateways, tmp_path,
                                                                  redis_client, control_server):
    refusing = gateways("uas_refuse.xml", CODE=502)
    rate_group, _trunks, _provider = make_carrier(admin, [
        ([dead_gateway()], "prefix,rate_per_min\n44,0.01\n"), ([refusing.address], "prefix,rate_per_min\n44,0.02\n"),
    ], "prefix,rate_per_min\n44,0.05\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, trunks=2)

    result = place(relay, tmp_path, "uac_call.xml", 502, tech_prefix + DESTINATION, HOLD=0)
    assert result.returncode == 0, result.explain()  # 502 after a 408: the last failure, not tm's "best"
    (event,) = settled(redis_client, control_server, account)
    assert event["sip_code"] == "502" and event["customer_cost"] == "0"
    assert balance(money, account) == 10 * EUR and money.open_calls(account) == 0


def test_prepaid_call_is_cut_at_the_granted_duration(admin, money, relay, fast, gateways, tmp_path, redis_client,
                                                     control_server):
    gateway = gateways("uas_answer.xml", BYE_TIMEOUT=10_000)
    rate_group, _trunks, provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min\n44,0.30\n")], "prefix,rate_per_min\n44,0.60\n")
    customer = make_customer(admin, money, rate_group, balance=30_000)  # 0.03 at 0.01/s: 3 seconds
    tech_prefix = map_ip(admin, customer)
    account = number(customer)
    wait_routable(fast, account)
    provider_before = balance(money, provider)

    races_before = relay.bye_races()
    result = place(relay, tmp_path, "uac_wait_bye.xml", 200, tech_prefix + DESTINATION, BYE_TIMEOUT=8_000)
    assert result.returncode == 0, result.explain()  # the caller got the proxy's BYE
    # Granted 3 s. The dialog timer counts whole seconds from the tick the call was answered in, so the cut
    # comes up to 1 s early or late; the customer is never charged beyond the granted (reserved) seconds.
    assert 2.0 <= result.seconds <= 5.0, result.seconds
    (event,) = settled(redis_client, control_server, account)
    assert (event["billable_seconds"], event["customer_cost"]) == ("3", "30000")
    assert balance(money, account) == 0 and money.open_calls(account) == 0
    assert eventually_balance(money, provider, provider_before + 15_000) == provider_before + 15_000
    gateway.result(timeout=3)
    if not gateway.received("BYE") and relay.bye_races() > races_before:
        pytest.xfail(f"Kamailio {relay.version} dialog race: the callee's BYE was not sent at expiry "
                     "(see DIALOG_BYE_RACES)")
    assert gateway.received("BYE")  # the gateway got its BYE too


def test_a_parallel_call_on_a_tight_balance_gets_what_is_left_and_is_cut_there(
        admin, money, relay, fast, gateways, tmp_path, redis_client, control_server):
    """The grant is computed in Redis against the balance it reserves from: the first call reserves the cost of
    max_call_seconds (10,800 s at 0.05/min: 9.00), the second gets the 3 s the remaining 0.0025 buys."""
    gateway = gateways("uas_answer.xml", calls=2, BYE_TIMEOUT=12_000)
    rate_group, _trunks, _provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, balance=9 * EUR + 2_500)
    results: dict[str, object] = {}

    def talk():
        results["first"] = place(relay, tmp_path / "first", "uac_call.xml", 200, tech_prefix + DESTINATION,
                                 timeout=15, HOLD=7000)

    talking = threading.Thread(target=talk)
    talking.start()
    deadline = time.monotonic() + 5
    while money.open_calls(account) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert balance(money, account) == 2_500  # 9.00 reserved by the first call
    second = place(relay, tmp_path / "second", "uac_wait_bye.xml", 200, tech_prefix + DESTINATION,
                   BYE_TIMEOUT=8_000)
    assert second.returncode == 0, second.explain()  # answered, then cut by the proxy's BYE
    assert 2.0 <= second.seconds <= 5.0, second.seconds
    talking.join()
    assert results["first"].returncode == 0, results["first"].explain()
    found = settled(redis_client, control_server, account, count=2)
    assert sorted((e["billable_seconds"], e["customer_cost"]) for e in found)[0] == ("3", "2500")
    assert money.open_calls(account) == 0


# ---------------------------------------------------------------------------------------------- limits


def _at_the_start_of_a_second() -> None:
    time.sleep(1.02 - time.time() % 1)


def test_cps_then_concurrency_answer_503_before_later_refusals(admin, money, relay, fast, gateways, tmp_path):
    gateway = gateways("uas_answer.xml", BYE_TIMEOUT=10_000)
    rate_group, _trunks, _provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
    _account, tech_prefix = customer_on(admin, money, fast, rate_group, cps=1, max_concurrent_calls=1)
    results: dict[str, object] = {}

    def talk():
        results["first"] = place(relay, tmp_path, "uac_call.xml", 200, tech_prefix + DESTINATION, HOLD=2500)

    _at_the_start_of_a_second()
    talking = threading.Thread(target=talk)
    talking.start()
    time.sleep(0.2)
    # Same second: CPS over limit (and concurrency too, and the destination has no rate): CPS wins.
    cps = place(relay, tmp_path, "uac_expect.xml", 503, tech_prefix + "33123456", timeout=3)
    assert cps.returncode == 0, cps.explain()
    assert cps.received(503)[-1].first_line == "SIP/2.0 503 CPS limit exceeded"
    _at_the_start_of_a_second()
    # A new second, the first call still up: the concurrent-call limit wins over "no rate" (404).
    busy = place(relay, tmp_path, "uac_expect.xml", 503, tech_prefix + "33123456", timeout=3)
    assert busy.returncode == 0, busy.explain()
    assert busy.received(503)[-1].first_line == "SIP/2.0 503 Concurrent call limit"
    talking.join()
    assert results["first"].returncode == 0, results["first"].explain()
    _at_the_start_of_a_second()
    after = place(relay, tmp_path, "uac_expect.xml", 404, tech_prefix + "33123456", timeout=3)
    assert after.returncode == 0, after.explain()  # the call ended: its slot is free again


def _calls_on_both_nodes(relay: Kamailio, relay2: Kamailio, tmp_path: Path, tech_prefix: str, *, calls: int,
                         expect: int) -> list:
    """`calls` parallel 2-second calls through each node at once; the sipp results of both."""
    results = []

    def fire(node: Kamailio, tag: str):
        results.append(run_sipp(node, "uac_call.xml", tmp_path / f"uac_{tag}", expect=expect,
                                rows=[(CALLER, tech_prefix + DESTINATION)] * calls, rate=100, limit=calls,
                                timeout=10, values={"HOLD": 2000}))

    threads = [threading.Thread(target=fire, args=(node, tag)) for node, tag in ((relay, "a"), (relay2, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _limit_channels(admin, trunk: str, channels: int) -> None:
    admin.trunks.UpdateTrunk(trunks_pb2.UpdateTrunkRequest(
        trunk=trunks_pb2.Trunk(name=f"trunks/{trunk}", max_concurrent_calls=channels),
        update_mask={"paths": ["max_concurrent_calls"]}), metadata=admin.metadata)


def test_two_nodes_sharing_redis_never_exceed_the_concurrent_call_limit(admin, money, relay, relay2, fast, gateways,
                                                                       tmp_path):
    gateway = gateways("uas_answer.xml", calls=8, BYE_TIMEOUT=10_000)
    rate_group, _trunks, _provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
    # Enough money for three calls of max_call_seconds (9.00 each): money is not what limits them here.
    account, tech_prefix = customer_on(admin, money, fast, rate_group, max_concurrent_calls=2, balance=30 * EUR)
    results = _calls_on_both_nodes(relay, relay2, tmp_path, tech_prefix, calls=3, expect=503)
    answered = len([m for r in results for m in r.received(200) if "INVITE" in "".join(m.headers("CSeq"))])
    refused = [m.first_line for r in results for m in r.received(503)]
    assert answered == 2, [r.explain() for r in results]
    assert refused == ["SIP/2.0 503 Concurrent call limit"] * 4, [m.first_line for r in results for m in r.received()]
    assert len(gateway.received("INVITE")) == 2
    deadline = time.monotonic() + 5
    while money.open_calls(account) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert money.open_calls(account) == 0



def test_a_trunk_at_its_channel_limit_is_skipped_across_nodes(admin, money, relay, relay2, fast, gateways, tmp_path):
    """SPEC §5: trunks at their channel limit are skipped. The first trunk has one channel, shared by two
    Kamailio nodes through Redis: of four parallel calls it carries one, the next trunk the other three."""
    small = gateways("uas_answer.xml", calls=1, BYE_TIMEOUT=10_000)
    large = gateways("uas_answer.xml", calls=3, BYE_TIMEOUT=10_000)
    rate_group, (small_trunk, _large_trunk), _provider = make_carrier(
        admin, [([small.address], "prefix,rate_per_min\n44,0.01\n"),
                ([large.address], "prefix,rate_per_min\n44,0.02\n")], "prefix,rate_per_min\n44,0.05\n")
    _limit_channels(admin, small_trunk, 1)
    account, tech_prefix = customer_on(admin, money, fast, rate_group, trunks=2, balance=50 * EUR)
    deadline = time.monotonic() + 5
    while fast.decide(account, CALLER, DESTINATION, 10**12, int(time.time())).routes[0].max_concurrent_calls != 1:
        assert time.monotonic() < deadline, "the trunk's limit never reached the projection"
        time.sleep(0.1)
    time.sleep(0.5)  # the Kamailio workers poll the feed every 0.25 s
    results = _calls_on_both_nodes(relay, relay2, tmp_path, tech_prefix, calls=2, expect=200)
    assert all(r.returncode == 0 for r in results), [r.explain() for r in results]
    assert (len(small.received("INVITE")), len(large.received("INVITE"))) == (1, 3)
    deadline = time.monotonic() + 5
    while money.busy_channels(small_trunk) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert money.busy_channels(small_trunk) == 0  # freed when its call ended


def test_no_trunk_with_a_free_channel_is_503_no_route(admin, money, relay, fast, gateways, tmp_path):
    gateway = gateways("uas_answer.xml", calls=1, BYE_TIMEOUT=10_000)
    rate_group, (trunk,), _provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, balance=50 * EUR)
    money.seize_trunk(trunk, "another-call", now=int(time.time()), max_calls=1, cps=0,
                      hold_until=int(time.time()) + 60)  # its only channel is busy (another node's call)
    _limit_channels(admin, trunk, 1)
    deadline = time.monotonic() + 5
    while True:
        result = place(relay, tmp_path, "uac_expect.xml", 503, tech_prefix + DESTINATION)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.returncode == 0, result.explain()
    assert result.received(503)[-1].first_line == "SIP/2.0 503 No route available"
    assert gateway.received("INVITE") == [] and money.open_calls(account) == 0
    money.release_trunk(trunk, "another-call")

def test_a_node_short_of_shared_memory_sheds_new_calls_with_503(admin, money, control_server, fast, gateways,
                                                                tmp_path):
    """Relay mode: below the configured share of free shared memory (here 100 %: always) new calls get a
    stateless 503 Overloaded with Retry-After, and the keepalive says 503 too, so balancers route away."""
    node = start_kamailio(tmp_path / "shedding", redis_url=control_server.redis_url,
                          namespace=control_server.keys.namespace, mode="relay", shed_free_percent=100)
    try:
        gateway = gateways("uas_answer.xml", BYE_TIMEOUT=10_000)
        rate_group, _trunks, _provider = make_carrier(
            admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
        account, tech_prefix = customer_on(admin, money, fast, rate_group)
        result = place(node, tmp_path, "uac_expect.xml", 503, tech_prefix + DESTINATION)
        assert result.returncode == 0, result.explain()
        answer = result.received(503)[-1]
        assert answer.first_line == "SIP/2.0 503 Overloaded" and answer.headers("Retry-After") == ["5"]
        assert options_probe(node.host, node.port) == 503
        assert gateway.received("INVITE") == [] and money.open_calls(account) == 0
    finally:
        node.stop()
    assert not node.faults(), node.faults()


# ---------------------------------------------------------------------------------------------- fast path


def test_settling_a_zero_cost(money):
    """An unanswered call settles with cost 0 to release its reservation (SPEC §5): the plain int 0 must work."""
    account = f"zero{_suffix()}"
    money.credit(account, 100)
    assert money.admit_call(account, "c1", now=1, cps=0, max_calls=0, credit_limit=0, terms=(50, 0, 0, 1, 1),
                            max_call_seconds=60).reserve == 50
    assert money.settle(account, "c1", 0, CallEvent("c1", account))
    assert money.available(account, 0) == 100 and money.open_calls(account) == 0


def test_past_its_capacity_a_node_sheds_new_calls_before_any_work(admin, money, fast, control_server, tmp_path,
                                                                  redis_client):
    """A node told it carries 5 new calls a second answers the rest of a burst 503 Overloaded with Retry-After at
    once (statelessly: no Python, no Redis), says so to keepalives meanwhile, and takes calls again a second
    later."""
    from tests.sip_wire import Gateway, Peer, request, sdp

    node = start_relay(control_server, tmp_path / "capacity", max_cps=5)
    gateway = Gateway(486)
    try:
        rate_group, _trunks, _provider = make_carrier(
            admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
        account, tech_prefix = customer_on(admin, money, fast, rate_group, balance=1_000 * EUR)
        with Peer() as caller:
            time.sleep(1 - time.time() % 1)  # the burst within one second
            for i in range(30):
                caller.send(request("INVITE", f"sip:{tech_prefix}{DESTINATION}@{node.address}", via=caller.address,
                                    call_id=f"burst{i}-{_suffix()}", body=sdp()), (node.host, node.port))
            finals = {m.header("Call-ID"): m for m in caller.collect(2.0) if (m.status or 0) >= 200}
            answers = list(finals.values())
            overloaded = [m for m in answers if m.status == 503]
            assert options_probe(node.host, node.port) in (200, 503)
        assert len(answers) == 30 and len(overloaded) == 25, [m.first_line for m in answers]
        assert {m.first_line for m in overloaded} == {"SIP/2.0 503 Overloaded"}
        assert {m.header("Retry-After") for m in overloaded} == {"5"}
        assert len(gateway.requests("INVITE")) == 5 and money.open_calls(account) == 0
        time.sleep(1.1)
        assert options_probe(node.host, node.port) == 200
    finally:
        gateway.stop()
        node.stop()
    assert not node.faults(), node.faults()


def test_one_source_is_shed_at_its_share_and_cannot_crowd_out_another(admin, money, fast, control_server, tmp_path):
    """source_max_cps: a source past its share of new calls gets 503 Overloaded natively, while another source's
    calls in the same second still reach the decision (here: 486 from the gateway)."""
    from tests.sip_wire import Gateway, Peer, request, sdp

    node = start_relay(control_server, tmp_path / "fair", source_max_cps=3)
    gateway = Gateway(486)
    try:
        rate_group, _trunks, _provider = make_carrier(
            admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
        flooder, quiet = (make_customer(admin, money, rate_group, balance=1_000 * EUR) for _ in range(2))
        prefixes = {"127.0.0.1": map_ip(admin, flooder), "127.0.0.2": map_ip(admin, quiet, "127.0.0.2")}
        wait_routable(fast, number(quiet))
        answers: dict[str, list[int]] = {}
        with Peer("127.0.0.1") as loud, Peer("127.0.0.2") as calm:
            time.sleep(1 - time.time() % 1)  # both within one second
            for peer, count in ((loud, 12), (calm, 3)):
                prefix = prefixes[peer.address[0]]
                for i in range(count):
                    peer.send(request("INVITE", f"sip:{prefix}{DESTINATION}@{node.address}", via=peer.address,
                                      from_host=peer.address[0], call_id=f"fair{i}-{_suffix()}",
                                      body=sdp(peer.address[0])), (node.host, node.port))
            for peer in (loud, calm):
                finals = {m.header("Call-ID"): m.status for m in peer.collect(2.0) if (m.status or 0) >= 200}
                answers[peer.address[0]] = sorted(finals.values())
        assert answers["127.0.0.1"] == [486] * 3 + [503] * 9, answers
        assert answers["127.0.0.2"] == [486] * 3, answers  # not crowded out
    finally:
        gateway.stop()
        node.stop()
    assert not node.faults(), node.faults()
