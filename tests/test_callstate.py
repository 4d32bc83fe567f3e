"""Call admission and settlement in Redis: limits, reservations, exactly-once money (SPEC §5, §9)."""

from __future__ import annotations

import json
import math
import secrets
import threading

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callstate import store as adm
from callstate.events import ORPHANED, REFUSED, CallEvent
from callstate.store import CallState
from fastpath.reference.rating import Terms, cost, max_duration

EUR = 1_000_000
NOW = 1_800_000_000


@pytest.fixture
def admissions(redis_client: redis.Redis):
    namespace = f"tgadm{secrets.token_hex(3)}"
    yield CallState(redis_client, namespace)
    for key in redis_client.scan_iter(f"{namespace}:*"):
        redis_client.delete(key)


def admit(a: CallState, call: str, account: str = "1001", reserve: int = EUR, **limits) -> adm.Grant:
    """Admit a call whose whole cost is a flat fee of `reserve` (connect fee only), so it reserves exactly that."""
    values = dict(now=NOW, cps=0, max_calls=0, credit_limit=0, terms=(reserve, 0, 0, 1, 1),
                  max_call_seconds=60) | limits
    return a.admit_call(account, call, **values)


def test_cps_limit_counts_attempts_in_the_same_second(admissions):
    admissions.credit("1001", 100 * EUR)
    outcomes = [admit(admissions, f"c{i}", cps=2).outcome for i in range(3)]
    assert outcomes == [adm.ADMITTED, adm.ADMITTED, adm.CPS_EXCEEDED]
    assert admit(admissions, "c9", cps=2, now=NOW + 1).outcome == adm.ADMITTED  # a new second


def test_concurrent_call_limit_and_release_at_settlement(admissions):
    admissions.credit("1001", 100 * EUR)
    assert [admit(admissions, f"c{i}", max_calls=2).outcome for i in range(3)] == [
        adm.ADMITTED, adm.ADMITTED, adm.CONCURRENCY_EXCEEDED]
    assert admissions.settle("1001", "c0", 300_000, CallEvent(call_id="c0", account="1001"))
    assert admit(admissions, "c3", max_calls=2).outcome == adm.ADMITTED


def test_cps_is_checked_before_concurrency(admissions):
    admissions.credit("1001", 100 * EUR)
    admit(admissions, "c0", cps=1, max_calls=1)
    assert admit(admissions, "c1", cps=1, max_calls=1).outcome == adm.CPS_EXCEEDED


def _refusal(call_id: str, **fields) -> CallEvent:
    """The event the KEMI script prepares for the admission, should it refuse the call."""
    return CallEvent(call_id, "1001", direction="outbound", destination_dialled="4420", setup_time=NOW,
                     end_time=NOW, end_reason=REFUSED, **fields)


def _recorded(redis_client, admissions, account: str = "1001") -> list[CallEvent]:
    return [CallEvent.decode(fields) for _id, fields in redis_client.xrange(admissions.events_key(account))]


def test_a_refused_call_s_event_is_appended_to_the_account_s_stream(admissions, redis_client):
    """SPEC §9: every identified call yields a CDR; a refusal's event goes through the same stream."""
    cli = _refusal("cli", sip_code=403, sip_reason="CLI not allowed", stage="cli")
    assert admissions.record_refusal("1001", cli)
    assert _recorded(redis_client, admissions) == [cli]


def test_refusals_are_counted_not_recorded_while_the_ledger_is_far_behind(admissions, redis_client):
    """A flood must not fill Redis's memory while the ledger cannot keep up: past REFUSAL_BACKLOG entries a
    refusal is only counted (a settled call's event is always written)."""
    admissions.credit("1001", 100 * EUR)
    stream = admissions.events_key("1001")
    pipe = redis_client.pipeline(transaction=False)
    for n in range(100_000):
        pipe.xadd(stream, {"event": "{}"}, id=f"1-{n + 1}")
    pipe.execute()
    assert admit(admissions, "flood", cps=1).outcome == adm.ADMITTED
    assert not admissions.record_refusal("1001", _refusal("flood2"))
    assert redis_client.xlen(stream) == 100_000
    assert redis_client.hget(admissions.keys.account("1001", "money"), "unrecorded_refusals") == b"1"
    assert admissions.settle("1001", "flood", EUR, CallEvent("flood", "1001"))
    assert redis_client.xlen(stream) == 100_001


def test_record_refusal_command_runs_the_same_script(admissions, redis_client):
    """The ndb_redis path of a refusal (Kamailio's client): the event carried as one argument, spaces and all."""
    admissions.load_scripts()
    event = _refusal("c 1%", sip_code=503, sip_reason="CPS limit exceeded", stage="cps")
    command = admissions.record_refusal_command("1001")
    sends = command.split(" ")
    sends[sends.index("%s")] = event.encode()
    assert redis_client.execute_command(*sends) == 1
    assert _recorded(redis_client, admissions) == [event]
    assert admissions.record_refusal_command("10 01") is None


def test_reservations_cannot_overdraw_a_prepaid_account(admissions):
    admissions.credit("1001", 10 * EUR)
    first = admit(admissions, "c1", reserve=6 * EUR)
    assert (first.outcome, first.reserve) == (adm.ADMITTED, 6 * EUR)
    second = admit(admissions, "c2", reserve=6 * EUR)
    assert (second.outcome, second.available) == (adm.INSUFFICIENT, 4 * EUR)
    assert admissions.available("1001", 0) == 4 * EUR


def test_postpaid_may_go_down_to_its_credit_limit(admissions):
    admissions.credit("1001", 0)  # a known balance of 0
    assert admit(admissions, "c1", reserve=30 * EUR, credit_limit=50 * EUR).outcome == adm.ADMITTED
    assert admit(admissions, "c2", reserve=30 * EUR, credit_limit=50 * EUR).outcome == adm.INSUFFICIENT
    admissions.settle("1001", "c1", 45 * EUR, CallEvent(call_id="c1", account="1001"))
    assert admissions.available("1001", 50 * EUR) == 5 * EUR  # balance -45, limit 50


def test_a_refused_call_counts_for_cps_but_reserves_nothing(admissions):
    admissions.credit("1001", EUR)
    assert admit(admissions, "c1", cps=1, decided=False).outcome == adm.COUNTED
    assert admissions.open_calls("1001") == 0 and admissions.available("1001", 0) == EUR
    assert admit(admissions, "c2", cps=1).outcome == adm.CPS_EXCEEDED


def test_a_call_id_is_admitted_once(admissions):
    """Open or settled, a call id admitted again would be settled as a repeat: a free call."""
    admissions.credit("1001", 10 * EUR)
    first = admit(admissions, "c1", reserve=4 * EUR, max_calls=2)
    assert (first.outcome, first.reserve) == (adm.ADMITTED, 4 * EUR)
    assert admit(admissions, "c1", reserve=4 * EUR, max_calls=2).outcome == adm.DUPLICATE  # while it is open
    assert admissions.available("1001", 0) == 6 * EUR
    admissions.settle("1001", "c1", EUR, CallEvent(call_id="c1", account="1001"))
    assert admit(admissions, "c1", reserve=4 * EUR, max_calls=2).outcome == adm.DUPLICATE  # once it is settled
    assert admissions.available("1001", 0) == 9 * EUR and admissions.open_calls("1001") == 0


def test_settled_call_ids_are_remembered_for_the_window_only(admissions, redis_client):
    """The settled ids of a busy account must not grow without end: an id older than the window is dropped at
    the next settlement, while one inside it still makes a repeat."""
    admissions.credit("1001", 10 * EUR)
    for call in ("old", "recent"):
        admit(admissions, call)
        assert admissions.settle("1001", call, EUR, CallEvent(call_id=call, account="1001"))
    settled = admissions.keys.account("1001", adm.SETTLED)
    now = int(redis_client.time()[0])
    redis_client.zadd(settled, {"old": now - adm.SETTLED_WINDOW_SECONDS - 5})  # as if settled 26 h ago
    admit(admissions, "new")
    assert admissions.settle("1001", "new", EUR, CallEvent(call_id="new", account="1001"))
    assert set(redis_client.zrange(settled, 0, -1)) == {b"recent", b"new"}
    assert 0 < redis_client.ttl(settled) <= adm.SETTLED_WINDOW_SECONDS
    assert not admissions.settle("1001", "recent", EUR, CallEvent(call_id="recent", account="1001"))
    assert admit(admissions, "recent").outcome == adm.DUPLICATE


def test_an_account_with_settled_ids_from_before_the_sorted_set_still_calls(admissions, redis_client):
    """A Redis upgraded in place holds the old plain SET of settled ids under the old name: admission and
    settlement must not trip over it (WRONGTYPE answered every call 500 once)."""
    redis_client.sadd(admissions.keys.account("1001", "settled"), "before-the-upgrade")
    admissions.credit("1001", 10 * EUR)
    assert admit(admissions, "c1").outcome == adm.ADMITTED
    assert admissions.settle("1001", "c1", EUR, CallEvent(call_id="c1", account="1001"))


def test_settlement_debits_exactly_once_and_queues_one_event(admissions, redis_client):
    admissions.credit("1001", 10 * EUR)
    admit(admissions, "c1", reserve=4 * EUR)
    event = CallEvent(call_id="c1", account="1001", billable_seconds=61)
    assert admissions.settle("1001", "c1", 1_234_567, event) is True
    assert admissions.settle("1001", "c1", 1_234_567, event) is False
    assert admissions.available("1001", 0) == 10 * EUR - 1_234_567
    events = [CallEvent.decode(fields) for _id, fields in redis_client.xrange(admissions.events_key("1001"))]
    assert events == [CallEvent("c1", "1001", billable_seconds=61)]


def test_provider_is_credited_once_per_customer_and_call_id(admissions):
    """A Call-ID is the caller's: two customers' calls may share one, and each credits the provider."""
    assert admissions.credit_provider("9000", "1001", "c1", 700_000)
    assert not admissions.credit_provider("9000", "1001", "c1", 700_000)
    assert admissions.credit_provider("9000", "1002", "c1", 300_000)
    assert admissions.available("9000", 0) == 1_000_000


def test_concurrent_admissions_never_exceed_the_limit(admissions):
    admissions.credit("1001", 1_000 * EUR)
    results: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
        own = CallState(client, admissions.keys.namespace)
        for i in range(25):
            outcome = admit(own, f"w{n}-{i}", max_calls=7).outcome
            with lock:
                results.append(outcome)
        client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(adm.ADMITTED) == 7 and admissions.open_calls("1001") == 7
    assert admissions.available("1001", 0) == 993 * EUR


def test_an_unanswered_call_settles_at_zero_and_frees_its_reservation(admissions):
    admissions.credit("1001", 10 * EUR)
    admit(admissions, "c1", reserve=4 * EUR)
    assert admissions.settle("1001", "c1", 0, CallEvent(call_id="c1", sip_code=486, account="1001"))
    assert admissions.available("1001", 0) == 10 * EUR and admissions.open_calls("1001") == 0


# ------------------------------------------------------------------------------------------- admit_call
TERMS = (0, 0, 600_000, 60, 60)  # 0.60 per minute in whole minutes


def admit_call(a: CallState, call: str, account: str = "1001", **options) -> adm.Grant:
    values = dict(now=NOW, cps=0, max_calls=0, credit_limit=0, terms=TERMS, max_call_seconds=3_600,
                  decided=True) | options
    return a.admit_call(account, call, **values)


def test_admit_call_grants_the_longest_affordable_call_and_reserves_its_cost(admissions):
    admissions.credit("1001", 2 * EUR)  # 3 whole minutes at 0.60
    grant = admit_call(admissions, "c1")
    assert grant == adm.Grant(adm.ADMITTED, 180, 1_800_000, 2 * EUR)
    assert admissions.available("1001", 0) == 200_000 and admissions.open_calls("1001") == 1


def test_a_second_parallel_call_gets_what_is_left_not_a_402(admissions):
    admissions.credit("1001", 2 * EUR)
    assert admit_call(admissions, "c1", max_call_seconds=120).granted == 120  # reserves 1.20
    second = admit_call(admissions, "c2")
    assert second == adm.Grant(adm.ADMITTED, 60, 600_000, 800_000)
    assert admit_call(admissions, "c3") == adm.Grant(adm.INSUFFICIENT, 0, 0, 200_000)
    assert admissions.open_calls("1001") == 2 and admissions.available("1001", 0) == 200_000


def test_admit_call_keeps_the_spec_order_and_counts_refused_calls(admissions):
    admissions.credit("1001", 100 * EUR)
    assert admit_call(admissions, "c0", cps=2, max_calls=1).outcome == adm.ADMITTED
    assert admit_call(admissions, "c1", cps=2, max_calls=1).outcome == adm.CONCURRENCY_EXCEEDED
    assert admit_call(admissions, "c2", cps=2, max_calls=1).outcome == adm.CPS_EXCEEDED
    assert admit_call(admissions, "c3", now=NOW + 1, cps=2, decided=False, terms=()).outcome == adm.COUNTED
    assert admissions.open_calls("1001") == 1


def test_admit_call_reserves_once_and_settles_like_admit(admissions):
    admissions.credit("1001", 10 * EUR)
    first = admit_call(admissions, "c1", max_calls=1)
    assert admit_call(admissions, "c1", max_calls=1) == adm.Grant(adm.DUPLICATE)
    assert admissions.available("1001", 0) == 10 * EUR - first.reserve
    assert admissions.settle("1001", "c1", 600_000, CallEvent(call_id="c1", account="1001"))
    assert admissions.available("1001", 0) == 10 * EUR - 600_000 and admissions.open_calls("1001") == 0


def test_admit_call_without_reserving_checks_money_only(admissions):
    admissions.credit("1001", 700_000)
    assert admit_call(admissions, "c1", reserve=False) == adm.Grant(adm.ADMITTED, 60, 600_000, 700_000)
    assert admissions.open_calls("1001") == 0 and admissions.available("1001", 0) == 700_000
    assert admit_call(admissions, "c2", reserve=False, terms=(800_000, 0, 0, 1, 1)).outcome == adm.INSUFFICIENT


def test_a_free_call_is_granted_whatever_the_balance(admissions):
    admissions.credit("1001", -5 * EUR)
    assert admit_call(admissions, "c1", terms=(0, 0, 0, 1, 1)) == adm.Grant(adm.ADMITTED, 3_600, 0, -5 * EUR)


MONEY = st.one_of(st.just(0), st.integers(0, 10_000_000), st.integers(0, 10**12))
SECONDS = st.one_of(st.integers(1, 120), st.integers(1, 86_400))


@st.composite
def grant_cases(draw):
    terms = Terms(draw(MONEY), draw(st.one_of(st.just(0), st.integers(0, 86_400))), draw(MONEY), draw(SECONDS),
                  draw(SECONDS))
    max_call_seconds = draw(st.one_of(st.just(86_400), st.integers(0, 86_400)))
    around = draw(st.integers(1, max(max_call_seconds, 1)))
    available = draw(st.one_of(
        st.integers(-10**15, 10**15),
        st.integers(-10_000_000, 10**9),
        st.integers(-1, 1).map(lambda delta: cost(around, terms) + delta),  # exactly at a step's edge
    ))
    return terms, max_call_seconds, available


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=grant_cases(), credit=st.integers(0, 10**12))
@example(case=(Terms(10**12, 0, 10**12 - 1, 1, 1), 86_400, 10**15), credit=10**12)  # products beyond 2^53
@example(case=(Terms(999_999, 30, 10**12 - 7, 86_400, 7), 86_400, 15 * 10**14 + 59), credit=0)
@example(case=(Terms(0, 0, 1, 1, 1), 86_400, 1_440), credit=0)  # 1 micro per minute: exactly 86,400 s
def test_the_scripts_grant_is_exactly_the_reference_max_duration(admissions, case, credit):
    terms, max_call_seconds, available = case
    account = f"p{secrets.token_hex(6)}"
    admissions.credit(account, available - credit)  # balance + credit limit = available
    grant = admit_call(admissions, "c1", account=account, credit_limit=credit, max_call_seconds=max_call_seconds,
                       terms=(terms.connect_fee, terms.included_seconds, terms.rate_per_min,
                              terms.initial_increment, terms.increment))
    expected = max_duration(available, terms, max_call_seconds)
    assert grant.available == available
    if expected == 0:
        assert grant == adm.Grant(adm.INSUFFICIENT, 0, 0, available)
        assert admissions.open_calls(account) == 0
    else:
        assert (grant.outcome, grant.granted, grant.reserve) == (adm.ADMITTED, expected, cost(expected, terms))
        assert admissions.available(account, credit) == available - grant.reserve


def _as_hiredis_sends(command: str, call_id: str) -> list[str]:
    """What hiredis sends for `command` with one %s argument: words split on spaces, %s replaced whole
    (so a call id with spaces or '%' stays one argument)."""
    return [call_id if word == "%s" else word for word in command.split(" ")]


def test_admit_call_command_runs_the_same_script_with_the_same_outcomes(admissions, redis_client):
    """The ndb_redis path (Kamailio's client) and redis-py agree call by call, limits and money included."""
    twin = CallState(redis_client, admissions.keys.namespace)
    admissions.load_scripts()
    admissions.credit("2001", 3 * EUR)
    admissions.credit("2002", 3 * EUR)
    values = dict(now=NOW, cps=0, max_calls=2, credit_limit=0, terms=(EUR, 0, 0, 1, 1), max_call_seconds=60)
    through_command, through_redis_py = [], []
    for call in ("c 1%s", "c2", "c3"):
        command = admissions.admit_call_command("2001", **values)
        reply = redis_client.execute_command(*_as_hiredis_sends(command, call))
        through_command.append(adm.grant_from_reply(reply))
        through_redis_py.append(twin.admit_call("2002", call, **values))
    assert through_command == through_redis_py
    assert [g.outcome for g in through_command] == [adm.ADMITTED, adm.ADMITTED, adm.CONCURRENCY_EXCEEDED]
    assert admissions.available("2001", 0) == admissions.available("2002", 0) == EUR


@pytest.mark.parametrize("account", ["20 01", "20%d01"])
def test_admit_call_command_refuses_what_a_format_cannot_carry(admissions, account):
    values = dict(now=NOW, cps=0, max_calls=0, credit_limit=0, terms=(EUR, 0, 0, 1, 1), max_call_seconds=60)
    assert admissions.admit_call_command(account, **values) is None


def test_a_restarted_node_keeps_the_calls_it_loaded_and_the_others_are_charged_to_its_last_beat(
        admissions, redis_client):
    """A node writes its dialogs a second or two late: after a crash and restart it loads the older calls (they
    go on) but not the youngest; those are settled up to its last heartbeat before the restart, at once, not
    held until node_dead or charged their whole grant."""
    admissions.credit("3002", 10 * EUR)
    terms = (0, 0, 600_000, 1, 1)
    for call in ("loaded", "too-young", "after"):
        at = NOW + 60 if call == "after" else NOW
        grant = admissions.admit_call("3002", call, now=at, cps=0, max_calls=0, credit_limit=0, terms=terms,
                                      max_call_seconds=300, node="node-r")
        assert grant.outcome == adm.ADMITTED
        admissions.mark_answered("3002", call, at + 2)
    admissions.heartbeat("node-r", NOW + 30)  # then it crashed, and came back at NOW + 50
    admissions.node_started("node-r", NOW + 50)
    restarts = admissions.node_restarts()
    assert restarts == {"node-r": adm.NodeStart(NOW + 50, NOW + 30)}
    assert admissions.node_heartbeats() == {"node-r": NOW + 50}
    reaped = admissions.reap("3002", now=NOW + 70, grace_seconds=180, nodes=admissions.node_heartbeats(),
                             node_dead_seconds=60, restarts=restarts, survivors={"loaded"})
    assert reaped == [("too-young", "")]
    assert admissions.open_call("3002", "loaded") and admissions.open_call("3002", "after")  # going on
    (event,) = [CallEvent.decode(f) for _id, f in redis_client.xrange(admissions.events_key("3002"))]
    assert (event.call_id, event.billable_seconds, event.end_reason) == ("too-young", 28, ORPHANED)  # 2 -> 30


def test_calls_admitted_before_a_restarted_node_s_first_heartbeat_are_of_its_new_life(admissions):
    """The node notes its start at its first heartbeat, up to an interval after the process started: the start
    it notes is the process's, so a call it admitted in between (ringing, not yet in its dialog table) is not
    taken for an orphan of its previous life (one was reaped as such, its CDR 'orphaned' instead of 408)."""
    admissions.credit("3003", 10 * EUR)
    admissions.heartbeat("node-s", NOW + 30)  # its previous life; it restarts at NOW + 50
    grant = admissions.admit_call("3003", "early", now=NOW + 52, cps=0, max_calls=0, credit_limit=0,
                                  terms=(0, 0, 600_000, 1, 1), max_call_seconds=300, node="node-s")
    assert grant.outcome == adm.ADMITTED
    admissions.node_started("node-s", NOW + 54, started=NOW + 50)  # its first heartbeat
    restarts = admissions.node_restarts()
    assert restarts == {"node-s": adm.NodeStart(NOW + 50, NOW + 30)}
    assert admissions.reap("3003", now=NOW + 56, grace_seconds=180, nodes=admissions.node_heartbeats(),
                           node_dead_seconds=60, restarts=restarts, survivors=set()) == []
    assert admissions.open_call("3003", "early")


def test_reap_charges_orphans_up_to_the_last_moment_they_were_known_alive(admissions, redis_client):
    """SPEC §9: a call whose node died is charged up to its node's last heartbeat (at least one second, at most
    its grant), never free; its provider's cost rides on the event. A node's calls wait `node_dead` seconds
    for it to come back. A call on a live node whose end was lost is charged its grant, an unanswered one
    nothing. Once each: the real end, arriving late, is a repeat."""
    admissions.credit("3001", 10 * EUR)
    terms = (10_000, 0, 600_000, 1, 1)  # 0.01 connect fee, 0.60 a minute per second
    provider_terms = (0, 0, 300_000, 1, 1)

    def admit_on(call: str, node: str, at: int = NOW) -> None:
        grant = admissions.admit_call("3001", call, now=at, cps=0, max_calls=0, credit_limit=0, terms=terms,
                                      max_call_seconds=60, node=node)
        assert grant.outcome == adm.ADMITTED

    route = adm.Route("9000", provider_terms, "fra1", "10.0.0.1:5060")
    for call in ("died-talking", "died-ringing"):
        admit_on(call, "node-a")
    admit_on("lost-end", "node-b")
    admit_on("talking", "node-b", NOW + 100)
    assert admissions.mark_answered("3001", "died-talking", NOW + 10.5, route) is True
    assert admissions.mark_answered("3001", "died-talking", NOW + 11, route) is False  # once
    assert admissions.mark_answered("3001", "lost-end", NOW + 5, route)
    assert admissions.mark_answered("3001", "talking", NOW + 101, route)
    heartbeats = {"node-a": NOW + 35, "node-b": NOW + 500}

    def reap(now):
        return admissions.reap("3001", now=now, grace_seconds=180, ring_seconds=120, nodes=heartbeats,
                               node_dead_seconds=60)

    assert reap(NOW + 35 + 60) == []  # node-a might still come back
    assert sorted(reap(NOW + 35 + 61)) == [("died-ringing", ""), ("died-talking", "fra1")]
    assert reap(NOW + 5 + 60 + 180) == []
    assert reap(NOW + 5 + 60 + 181) == [("lost-end", "fra1")]
    assert admissions.open_call("3001", "talking") is not None and admissions.open_calls("3001") == 1
    entries = [fields for _id, fields in redis_client.xrange(admissions.events_key("3001"))]
    assert not any(CallEvent.unknown_names(fields) for fields in entries)  # the reaper writes CallEvents
    events = {e["call_id"]: e for e in (json.loads(CallEvent.decode(fields).encode()) for fields in entries)}
    talked = math.ceil(NOW + 35 - (NOW + 10.5))  # 25 s: answer to the last heartbeat
    assert (events["died-talking"]["billable_seconds"], events["died-talking"]["customer_cost"],
            events["died-talking"]["provider_cost"], events["died-talking"]["provider"]) == (
        str(talked), str(cost(talked, Terms(*terms))), str(cost(talked, Terms(*provider_terms))), "9000")
    assert (events["died-ringing"]["billable_seconds"], events["died-ringing"]["customer_cost"]) == ("0", "0")
    assert events["lost-end"]["billable_seconds"] == "60"  # its node lived: it ran to its grant
    assert {e["end_reason"] for e in events.values()} == {ORPHANED}
    charged = cost(talked, Terms(*terms)) + cost(60, Terms(*terms))
    assert admissions.available("3001", 0) == 10 * EUR - charged - cost(60, Terms(*terms))  # talking reserves
    late_end = CallEvent(call_id="died-talking", account="3001")
    assert admissions.settle("3001", "died-talking", EUR, late_end) is False  # its real end, late


def test_a_paid_call_waits_for_the_account_to_be_restored_a_free_one_does_not(admissions):
    """After Redis lost its state, guessing the balance could overdraw (a postpaid account would get its used
    credit back): paid calls are refused until the control service restored the account from PostgreSQL."""
    paid = dict(now=NOW, cps=0, max_calls=0, credit_limit=EUR, terms=(0, 0, 600_000, 1, 1), max_call_seconds=60)
    assert admissions.admit_call("4001", "c1", **paid).outcome == adm.RESTORING
    assert admissions.admit_call("4001", "c2", **(paid | {"terms": (0, 0, 0, 1, 1)})).outcome == adm.ADMITTED
    admissions.settle("4001", "c9", 100_000, CallEvent(call_id="c9", account="4001"))  # a call that ended meanwhile
    open_call = adm.OpenCall(200_000, 20, NOW, "node-a", (0, 0, 600_000, 1, 1), NOW + 1.0)
    assert admissions.restore_account("4001", -500_000, [("talking", open_call)]) is True
    assert admissions.restore_account("4001", -500_000, [("talking", open_call)]) is False  # once
    assert admissions.open_call("4001", "talking") == open_call
    assert admissions.available("4001", EUR) == EUR - 500_000 - 100_000 - 200_000
    assert admissions.admit_call("4001", "c3", **paid).outcome == adm.ADMITTED


def test_trunk_channels_and_cps_are_counted_once_per_call_and_reaped_when_lost(admissions):
    seize = admissions.seize_trunk
    assert seize("fra1", "a/c1", now=NOW, max_calls=2, cps=0, hold_until=NOW + 100) == adm.TRUNK_SEIZED
    assert seize("fra1", "a/c1", now=NOW, max_calls=2, cps=0, hold_until=NOW + 100) == adm.TRUNK_SEIZED  # again
    assert seize("fra1", "a/c2", now=NOW, max_calls=2, cps=0, hold_until=NOW + 200) == adm.TRUNK_SEIZED
    assert seize("fra1", "a/c3", now=NOW, max_calls=2, cps=0, hold_until=NOW + 200) == adm.TRUNK_FULL
    assert admissions.busy_channels("fra1") == 2
    admissions.release_trunk("fra1", "a/c2")
    assert admissions.reap_trunks(NOW + 101) == 1  # c1's node died: its channel is freed after hold_until
    assert admissions.busy_channels("fra1") == 0
    outcomes = [seize("ams1", f"a/x{i}", now=NOW, max_calls=0, cps=2, hold_until=NOW + 9) for i in range(3)]
    assert outcomes == [adm.TRUNK_SEIZED, adm.TRUNK_SEIZED, adm.TRUNK_AT_CPS]


def test_settle_command_does_what_its_redis_py_twin_does(admissions, redis_client):
    admissions.load_scripts()
    admissions.credit("4001", 10 * EUR)
    admit(admissions, "c 1%", account="4001", reserve=4 * EUR)
    event = CallEvent("c 1%", "4001", customer_cost=1_500_000).encode()
    settle = admissions.settle_command("4001", 1_500_000)
    sends = settle.split(" ")
    sends[sends.index("%s")] = "c 1%"
    sends[sends.index("%s")] = event
    assert redis_client.execute_command(*sends) == 1
    assert redis_client.execute_command(*sends) == 0  # once
    assert admissions.available("4001", 0) == 10 * EUR - 1_500_000 and admissions.open_calls("4001") == 0
    (entry,) = redis_client.xrange(admissions.events_key("4001"))
    assert CallEvent.decode(entry[1]) == CallEvent("c 1%", "4001", customer_cost=1_500_000)
    assert admissions.settle_command("40 01", 0) is None and admissions.settle_command("4%01", 0) is None
