"""control/billing: the switch's settled calls become CDRs and balance moves in PostgreSQL (SPEC §9), once each,
none lost while PostgreSQL is down; the provider credited from the customer's settlement; orphaned calls
settled up to their node's last heartbeat; a Redis that lost its state rebuilt from PostgreSQL before it
grants money again.

These tests drive a BillingWorker of their own on a private Redis namespace (the running service's own worker
does not read it), on the session's database.
"""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest

from callstate.dialogs import node_tables
from callstate.events import HANGUP, REFUSED, CallEvent
from callstate.plan import CallPlan, RoutePlan
from callstate.store import ADMITTED, RESTORING, CallState, OpenCall, Route
from control import db
from control.billing.worker import BillingWorker, Settings
from tests.kamailio_harness import number, unique_email
from tollgate.v1 import account_pb2 as apb

EUR = 1_000_000
NOW = 1_800_000_000


def _account(admin, kind=apb.CUSTOMER, **billing) -> str:
    created = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("ledger"), type=kind, billing=apb.Billing(**billing))), metadata=admin.metadata)
    return number(created)


def _event(call_id: str, customer: str, provider: str, customer_cost: int, provider_cost: int) -> CallEvent:
    return CallEvent(
        call_id=call_id, account=customer, direction="outbound", caller_id_received="15550001111",
        caller_id_presented="15550002222", destination_dialled="99944201234", destination_sent="4420123",
        rate_group="rate-groups/g1", prefix="44", rate_per_min=600_000, trunk="trunks/t1", provider=provider,
        gateway="127.0.0.1:5091", setup_time=NOW + 0.25, answer_time=NOW + 2.0, end_time=NOW + 32.5,
        billable_seconds=31, sip_code=200, sip_reason="OK", end_reason=HANGUP, customer_cost=customer_cost,
        provider_cost=provider_cost, record=True,
    )


def _settle_call(money: CallState, call_id: str, customer: str, provider: str, customer_cost: int,
                 provider_cost: int) -> bool:
    """What the KEMI script does at a call's end (kemi/tollgate_kemi.py _settle): one atomic settlement."""
    return money.settle(customer, call_id, customer_cost, _event(call_id, customer, provider, customer_cost,
                                                                 provider_cost))


def _balance(dsn: str, account: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT balance FROM accounts WHERE account_number = %s", (account,)).fetchone()[0]


def _cdrs(dsn: str, account: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT call_id, provider, billable_seconds, sip_code, customer_cost, provider_cost, recorded, "
            "extract(epoch FROM end_time - setup_time) FROM cdrs WHERE account_number = %s ORDER BY call_id",
            (account,)).fetchall()


@pytest.fixture
def private(redis_client):
    """A namespace the running control service's own worker does not read."""
    namespace = f"tgledger{secrets.token_hex(3)}"
    yield namespace
    for key in redis_client.scan_iter(f"{namespace}:*"):
        redis_client.delete(key)


@pytest.fixture
def worker(control_server, private):
    """A BillingWorker on the private namespace (not started: tests call run_once)."""
    pool = db.open_pool(control_server.dsn, 2)
    started = BillingWorker(pool, control_server.dsn, control_server.redis_url, private,
                            Settings(reap_grace_seconds=300, node_dead_seconds=60, restore_settle_seconds=0))
    yield started
    started.stop()
    pool.close()


def test_settled_calls_reach_postgresql_through_the_running_service(admin, control_server, redis_client):
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, control_server.keys.namespace)
    _settle_call(money, "svc-call-1", customer, provider, 186_000, 93_000)
    deadline = time.monotonic() + 10
    while (not _cdrs(control_server.dsn, customer) or money.available(provider, 0) == 0) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert _cdrs(control_server.dsn, customer) == [("svc-call-1", provider, 31, 200, 186_000, 93_000, True, 32.25)]
    assert (_balance(control_server.dsn, customer), _balance(control_server.dsn, provider)) == (-186_000, 93_000)
    assert money.available(provider, 0) == 93_000  # the provider's live balance, credited by the ledger


def test_two_customers_reusing_one_call_id_get_a_cdr_each(admin, control_server, redis_client, private, worker):
    """Call-IDs come from the callers' equipment: a reused one must not hide (or merge) anybody's CDR."""
    first, second, provider = _account(admin), _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    _settle_call(money, "same@callid", first, provider, 10_000, 4_000)
    _settle_call(money, "same@callid", second, provider, 20_000, 8_000)
    worker.run_once(now=NOW)
    assert [row[4] for row in _cdrs(control_server.dsn, first)] == [10_000]
    assert [row[4] for row in _cdrs(control_server.dsn, second)] == [20_000]
    assert _balance(control_server.dsn, provider) == 12_000  # credited for both calls
    assert money.available(provider, 0) == 12_000


def test_nothing_is_lost_while_postgresql_is_down_and_nothing_counts_twice(admin, control_server, redis_client,
                                                                          private, worker):
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    _settle_call(money, "c1", customer, provider, 100_000, 40_000)
    _settle_call(money, "c2", customer, provider, 50_000, 20_000)
    broken = psycopg.connect(control_server.dsn)
    broken.close()  # PostgreSQL unreachable: the write fails, nothing is acknowledged
    with pytest.raises(psycopg.OperationalError):
        worker.ledger.record(broken)
    assert _cdrs(control_server.dsn, customer) == [] and money.available(provider, 0) == 0

    assert worker.run_once(now=NOW).recorded == 2
    assert not _settle_call(money, "c1", customer, provider, 100_000, 40_000)  # Kamailio reporting c1 again
    assert worker.run_once(now=NOW).recorded == 0
    assert [row[0] for row in _cdrs(control_server.dsn, customer)] == ["c1", "c2"]
    assert (_balance(control_server.dsn, customer), _balance(control_server.dsn, provider)) == (-150_000, 60_000)
    # Recorded entries are gone from Redis; the same events delivered again change nothing, here or in Redis.
    stream = money.events_key(customer)
    assert redis_client.xlen(stream) == 0
    for call_id, customer_cost, provider_cost in (("c1", 100_000, 40_000), ("c2", 50_000, 20_000)):
        redis_client.xadd(stream, {"event": _event(call_id, customer, provider, customer_cost, provider_cost).encode()})
    assert worker.run_once(now=NOW).recorded == 2
    assert (_balance(control_server.dsn, customer), _balance(control_server.dsn, provider)) == (-150_000, 60_000)
    assert money.available(provider, 0) == 60_000


def test_entries_read_but_not_acknowledged_are_recorded_after_a_restart(admin, control_server, redis_client,
                                                                         private, worker):
    """A crash between reading an entry and recording it leaves it pending: the next run records it."""
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    _settle_call(money, "lost-in-flight", customer, provider, 70_000, 0)
    stream = money.events_key(customer)
    redis_client.xgroup_create(stream, "ledger", id="0")
    redis_client.xreadgroup("ledger", worker.ledger._consumer, {stream: ">"})  # read... and the service died
    assert worker.run_once(now=NOW).recorded == 1
    assert [row[0] for row in _cdrs(control_server.dsn, customer)] == ["lost-in-flight"]
    assert _balance(control_server.dsn, customer) == -70_000


def test_a_batch_is_committed_before_its_entries_are_acknowledged(admin, control_server, redis_client, private,
                                                                 worker, monkeypatch):
    """Acknowledged entries are trimmed from Redis: PostgreSQL must hold them for good by then. (A round's batches
    were savepoints of a transaction an earlier job had left open: a kill -9 mid-round lost them all.)"""
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    worker.run_once(now=NOW)  # restores the new accounts
    _settle_call(money, "committed-first", customer, provider, 30_000, 10_000)
    seen_at_ack = []
    acknowledge = worker.ledger._acknowledge

    def check_then_acknowledge(*args):
        seen_at_ack.append([row[0] for row in _cdrs(control_server.dsn, customer)])  # another session's view
        acknowledge(*args)

    monkeypatch.setattr(worker.ledger, "_acknowledge", check_then_acknowledge)
    assert worker.run_once(now=NOW).recorded == 1
    assert seen_at_ack == [["committed-first"]]


def test_a_dead_nodes_call_is_charged_to_its_last_heartbeat_and_its_channel_freed(admin, control_server,
                                                                                  redis_client, private, worker):
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    worker.run_once(now=NOW)  # restores the new accounts
    money.credit(customer, EUR)
    grant = money.admit_call(customer, "orphan", now=NOW, cps=0, max_calls=1, credit_limit=0,
                             terms=(0, 0, 600_000, 1, 1), max_call_seconds=60, node="node-x")
    assert grant.granted == 60
    seat = f"{customer}/orphan"
    money.seize_trunk("t-orphan", seat, now=NOW, max_calls=1, cps=0, hold_until=NOW + 10_000)
    money.mark_answered(customer, "orphan", NOW + 10, Route(provider, (0, 0, 300_000, 1, 1), "t-orphan", "gw"))
    money.heartbeat("node-x", NOW + 30)  # then it died
    assert worker.run_once(now=NOW + 30 + 60).reaped == 0  # it might still come back
    tick = worker.run_once(now=NOW + 30 + 61)
    assert (tick.reaped, tick.recorded) == (1, 1)
    assert money.open_calls(customer) == 0 and money.busy_channels("t-orphan") == 0  # slots free at once
    assert money.available(customer, 0) == EUR - 20 * 10_000  # 20 s: answer to the last heartbeat
    assert money.available(provider, 0) == 20 * 5_000
    with psycopg.connect(control_server.dsn) as conn:
        row = conn.execute("SELECT end_reason, customer_cost, provider_cost, billable_seconds FROM cdrs "
                           "WHERE call_id = 'orphan' AND account_number = %s", (customer,))
        assert row.fetchone() == ("orphaned", 200_000, 100_000, 20)


# ---------------------------------------------------------------------------------------------- Redis lost


def _wipe(redis_client, namespace: str) -> None:
    """Redis restarted empty: nothing of the namespace left."""
    for key in redis_client.scan_iter(f"{namespace}:*"):
        redis_client.delete(key)


def test_a_redis_that_lost_its_state_is_restored_from_postgresql_before_it_grants_money(
        admin, control_server, redis_client, private, worker):
    """SPEC §9: the prepaid account's money is spendable again, the postpaid one does not get its used credit
    back, payments not yet pushed are pushed once, and the ledger finds its streams again (NOGROUP)."""
    prepaid = _account(admin)
    postpaid = _account(admin, account_type=apb.POSTPAID, credit_limit=EUR)
    provider = _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    worker.run_once(now=NOW)
    for account, amount in ((prepaid, 3 * EUR), (postpaid, 0)):
        with psycopg.connect(control_server.dsn) as conn:  # what PostPayment does (then NOTIFY)
            conn.execute("UPDATE accounts SET balance = balance + %s WHERE account_number = %s", (amount, account))
    money.credit(prepaid, 3 * EUR)
    _settle_call(money, "before", postpaid, provider, 500_000, 100_000)
    assert worker.run_once(now=NOW).recorded == 1
    assert _balance(control_server.dsn, postpaid) == -500_000

    _wipe(redis_client, private)
    terms = (0, 0, 600_000, 1, 1)
    admit = dict(now=NOW, cps=0, max_calls=0, credit_limit=EUR, terms=terms, max_call_seconds=60)
    assert money.admit_call(postpaid, "while-lost", **admit).outcome == RESTORING  # never its used credit
    _settle_call(money, "after", postpaid, provider, 50_000, 10_000)  # a call that ended meanwhile
    with psycopg.connect(control_server.dsn) as conn:  # a payment posted while Redis was down, not yet pushed
        conn.execute("UPDATE accounts SET balance = balance + %s WHERE account_number = %s", (EUR, prepaid))
        conn.execute("INSERT INTO payments (account_number, amount, note, balance_after, posted_by) "
                     "VALUES (%s, %s, 'while down', 0, 'test')", (prepaid, EUR))

    tick = worker.run_once(now=NOW)
    assert tick.restored >= 3 and tick.pushed == 1 and tick.recorded == 1  # the new stream has a group again
    assert money.available(prepaid, 0) == 4 * EUR  # 3 restored + 1 pushed, not 5
    assert money.available(postpaid, EUR) == EUR - 500_000 - 50_000
    assert _balance(control_server.dsn, postpaid) == -550_000
    assert money.available(provider, 0) == 110_000 and _balance(control_server.dsn, provider) == 110_000
    assert money.admit_call(postpaid, "now", **admit).outcome == ADMITTED
    assert worker.run_once(now=NOW).restored == 0  # once


def test_calls_in_progress_are_reserved_again_from_kamailio_s_dialog_tables(admin, control_server, redis_client,
                                                                              private, worker):
    customer = _account(admin)
    money = CallState(redis_client, private)
    with psycopg.connect(control_server.dsn, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET balance = %s WHERE account_number = %s", (2 * EUR, customer))
        node = f"node-{secrets.token_hex(3)}"
        dialogs, variables = node_tables(conn, node, private)
        plan = CallPlan(f"talking-{secrets.token_hex(3)}", customer, "outbound", "1555", "1555", "44", "44", "g",
                        "44", 600_000, (0, 0, 600_000, 1, 1), 120, 1_200_000, NOW, False,
                        (RoutePlan("t", "p", (("gw", "udp"),), "44", "1555", "44", 300_000, (0, 0, 300_000, 1, 1),
                                   0, 0, 8, "", True),))
        conn.execute(f"INSERT INTO {dialogs} (hash_entry, hash_id, callid, from_uri, from_tag, to_uri, to_tag, "
                     "caller_cseq, callee_cseq, caller_contact, callee_contact, caller_sock, callee_sock, state, "
                     "start_time, req_uri) VALUES (1, 2, %s, 'a', 'b', 'c', 'd', '1', '1', 'e', 'f', 'g', 'h', 4, "
                     "0, 'i')", (plan.call_id,))
        for key, value in (("tollgate", plan.encode()), ("tollgate_answer", f"{NOW + 5}.5"), ("tollgate_route", "-")):
            conn.execute(f"INSERT INTO {variables} (hash_entry, hash_id, dialog_key, dialog_value) "
                         "VALUES (1, 2, %s, %s)", (key, value))
    worker.run_once(now=NOW)
    assert money.available(customer, 0) == 2 * EUR - 1_200_000  # its reservation holds again
    assert money.open_call(customer, plan.call_id) == OpenCall(1_200_000, 120, NOW, node, (0, 0, 600_000, 1, 1),
                                                               NOW + 5.5)


# ---------------------------------------------------------------------------------------------- refusals


def _refused(call_id: str, customer: str, at: float, code: int = 503, reason: str = "CPS limit exceeded",
             stage: str = "cps") -> CallEvent:
    return CallEvent(call_id, customer, direction="outbound", destination_dialled="4420123", setup_time=at,
                     end_time=at, sip_code=code, sip_reason=reason, stage=stage, end_reason=REFUSED)


def _cdr_outcomes(dsn: str, account: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT call_id, sip_code, sip_reason, stage, end_reason, customer_cost FROM cdrs "
                            "WHERE account_number = %s ORDER BY call_id", (account,)).fetchall()


def test_a_refused_call_is_a_cdr_that_moves_no_money(admin, control_server, redis_client, private, worker):
    customer = _account(admin)
    money = CallState(redis_client, private)
    money.record_refusal(customer, _refused("r1", customer, NOW, 402, "Insufficient balance", "balance"))
    assert worker.run_once(now=NOW).recorded == 1
    assert _cdr_outcomes(control_server.dsn, customer) == [("r1", 402, "Insufficient balance", "balance", REFUSED, 0)]
    with psycopg.connect(control_server.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_entries WHERE account_number = %s",
                            (customer,)).fetchone()[0] == 0
    assert _balance(control_server.dsn, customer) == 0


def test_a_call_id_retried_after_a_refusal_keeps_one_cdr_the_call_s_and_is_charged(admin, control_server,
                                                                                 redis_client, private, worker):
    """A caller retrying with the same Call-ID after 503 makes one call: its CDR says how it ended, and the
    refusal's CDR never stands in the way of the call's debit (nor of its provider's credit)."""
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    money.record_refusal(customer, _refused("retried", customer, NOW - 5))
    assert worker.run_once(now=NOW).recorded == 1  # the refusal alone, in its own batch
    money.record_refusal(customer, _refused("retried", customer, NOW - 3))
    _settle_call(money, "retried", customer, provider, 100_000, 40_000)  # then admitted: in one batch with it
    money.record_refusal(customer, _refused("retried", customer, NOW - 4))  # an old refusal, delivered late
    assert worker.run_once(now=NOW).recorded == 3
    assert _cdr_outcomes(control_server.dsn, customer) == [("retried", 200, "OK", "", HANGUP, 100_000)]
    assert (_balance(control_server.dsn, customer), _balance(control_server.dsn, provider)) == (-100_000, 40_000)
    assert money.available(provider, 0) == 40_000


def test_an_entry_that_is_not_a_call_event_is_kept_aside_and_blocks_nothing(admin, control_server, redis_client,
                                                                          private, worker):
    customer = _account(admin)
    money = CallState(redis_client, private)
    stream = money.events_key(customer)
    bad = redis_client.xadd(stream, {"event": '{"call_id": "no-account"}'})
    redis_client.xadd(stream, {"nonsense": "1"})
    money.record_refusal(customer, _refused("after", customer, NOW))
    assert worker.run_once(now=NOW).recorded == 3
    assert [row[0] for row in _cdr_outcomes(control_server.dsn, customer)] == ["after"]
    with psycopg.connect(control_server.dsn) as conn:
        kept = conn.execute("SELECT entry_id, fields->>'event' FROM rejected_events WHERE stream = %s ORDER BY "
                            "entry_id", (stream,)).fetchall()
    assert len(kept) == 2 and kept[0] == (bad.decode(), '{"call_id": "no-account"}')
    assert redis_client.xlen(stream) == 0
