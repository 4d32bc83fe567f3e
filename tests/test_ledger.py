"""control/billing/ledger.py: the switch's settled calls become CDRs and balance moves in PostgreSQL (SPEC §9),
once each, none lost while PostgreSQL is down; orphaned calls are reaped."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest

from callstate.store import CallState
from control.billing.ledger import Ledger
from tests.kamailio_harness import number, unique_email
from tollgate.v1 import account_pb2 as apb

EUR = 1_000_000
NOW = 1_800_000_000


def _account(admin, kind=apb.CUSTOMER) -> str:
    created = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("ledger"), type=kind)), metadata=admin.metadata)
    return number(created)


def _event(call_id: str, customer: str, provider: str, customer_cost: int, provider_cost: int) -> dict:
    return {
        "call_id": call_id, "account": customer, "direction": "outbound", "caller_id_received": "15550001111",
        "caller_id_presented": "15550002222", "destination_dialled": "99944201234", "destination_sent": "4420123",
        "rate_group": "rate-groups/g1", "prefix": "44", "rate_per_min": 600_000, "trunk": "trunks/t1",
        "provider": provider, "gateway": "127.0.0.1:5091", "setup_time": f"{NOW}.250",
        "answer_time": f"{NOW + 2}.000", "end_time": f"{NOW + 32}.500", "billable_seconds": 31, "sip_code": 200,
        "customer_cost": customer_cost, "provider_cost": provider_cost, "record": "yes",
    }


def _settle_call(money: CallState, call_id: str, customer: str, provider: str, customer_cost: int,
                 provider_cost: int) -> None:
    """What the KEMI script does at a call's end (kemi/tollgate_kemi.py _settle)."""
    event = _event(call_id, customer, provider, customer_cost, provider_cost)
    money.settle(customer, call_id, customer_cost, event)
    money.credit_provider(provider, customer, call_id, provider_cost, event)


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
    """A namespace the running control service's own ledger does not read: these tests drive a Ledger."""
    namespace = f"tgledger{secrets.token_hex(3)}"
    yield namespace
    for key in redis_client.scan_iter(f"{namespace}:*"):
        redis_client.delete(key)


def test_settled_calls_reach_postgresql_through_the_running_service(admin, control_server, redis_client):
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    _settle_call(CallState(redis_client, control_server.keys.namespace), "svc-call-1", customer, provider,
                 186_000, 93_000)
    deadline = time.monotonic() + 10
    while not _cdrs(control_server.dsn, customer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _cdrs(control_server.dsn, customer) == [("svc-call-1", provider, 31, 200, 186_000, 93_000, True, 32.25)]
    deadline = time.monotonic() + 5  # the provider's stream may be read a moment later
    while _balance(control_server.dsn, provider) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (_balance(control_server.dsn, customer), _balance(control_server.dsn, provider)) == (-186_000, 93_000)


def test_two_customers_reusing_one_call_id_get_a_cdr_each(admin, control_server, redis_client, private):
    """Call-IDs come from the callers' equipment: a reused one must not hide (or merge) anybody's CDR."""
    first, second, provider = _account(admin), _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    _settle_call(money, "same@callid", first, provider, 10_000, 4_000)
    _settle_call(money, "same@callid", second, provider, 20_000, 8_000)
    ledger = Ledger(control_server.dsn, control_server.redis_url, private)
    ledger.run_once(now=NOW)
    assert [row[4] for row in _cdrs(control_server.dsn, first)] == [10_000]
    assert [row[4] for row in _cdrs(control_server.dsn, second)] == [20_000]
    assert _balance(control_server.dsn, provider) == 12_000  # credited for both calls
    ledger.stop()


def test_nothing_is_lost_while_postgresql_is_down_and_nothing_counts_twice(admin, control_server, redis_client,
                                                                          private):
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    _settle_call(money, "c1", customer, provider, 100_000, 40_000)
    _settle_call(money, "c2", customer, provider, 50_000, 20_000)
    with pytest.raises(psycopg.OperationalError):  # PostgreSQL unreachable: nothing acknowledged
        Ledger("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", control_server.redis_url,
               private).run_once(now=NOW)
    assert _cdrs(control_server.dsn, customer) == []

    ledger = Ledger(control_server.dsn, control_server.redis_url, private)
    assert ledger.run_once(now=NOW) == (0, 4)  # two calls, each on the customer's and the provider's stream
    _settle_call(money, "c1", customer, provider, 100_000, 40_000)  # Kamailio reporting c1 again: a repeat
    assert ledger.run_once(now=NOW) == (0, 0)
    assert [row[0] for row in _cdrs(control_server.dsn, customer)] == ["c1", "c2"]
    assert _balance(control_server.dsn, customer) == -150_000
    assert _balance(control_server.dsn, provider) == 60_000
    # Streams still hold the entries (the replay buffer): replaying them all changes nothing.
    for stream in redis_client.scan_iter(f"{private}:*:events"):
        redis_client.xgroup_setid(stream, "ledger", id="0")
    assert ledger.run_once(now=NOW) == (0, 4)
    assert _balance(control_server.dsn, customer) == -150_000
    assert _balance(control_server.dsn, provider) == 60_000
    ledger.stop()


def test_entries_read_but_not_acknowledged_are_recorded_after_a_restart(admin, control_server, redis_client,
                                                                         private):
    """A crash between reading an entry and recording it leaves it pending: the next run records it."""
    customer, provider = _account(admin), _account(admin, apb.PROVIDER)
    money = CallState(redis_client, private)
    _settle_call(money, "lost-in-flight", customer, provider, 70_000, 0)
    ledger = Ledger(control_server.dsn, control_server.redis_url, private)
    stream = money.events_key(customer)
    redis_client.xgroup_create(stream, "ledger", id="0")
    redis_client.xreadgroup("ledger", ledger._consumer, {stream: ">"})  # read... and the service died here
    assert ledger.run_once(now=NOW) == (0, 2)  # that pending entry, and the provider stream's new one
    assert [row[0] for row in _cdrs(control_server.dsn, customer)] == ["lost-in-flight"]
    assert _balance(control_server.dsn, customer) == -70_000
    ledger.stop()


def test_an_orphaned_call_is_reaped_and_recorded(admin, control_server, redis_client, private):
    customer = _account(admin)
    money = CallState(redis_client, private)
    money.credit(customer, EUR)
    grant = money.admit_call(customer, "orphan", now=NOW, cps=0, max_calls=1, credit_limit=0,
                             terms=(0, 0, 600_000, 1, 1), max_call_seconds=60)
    assert grant.granted == 60
    money.mark_answered(customer, "orphan", NOW + 10)  # then its node died
    ledger = Ledger(control_server.dsn, control_server.redis_url, private, reap_grace_seconds=300)
    assert ledger.run_once(now=NOW + 10 + 60 + 300) == (0, 0)  # it might still be talking
    assert ledger.run_once(now=NOW + 10 + 60 + 301) == (1, 1)
    assert money.open_calls(customer) == 0 and money.available(customer, 0) == EUR  # the slot and money are free
    with psycopg.connect(control_server.dsn) as conn:
        row = conn.execute("SELECT end_reason, customer_cost, billable_seconds FROM cdrs "
                           "WHERE call_id = 'orphan' AND account_number = %s", (customer,))
        assert row.fetchone() == ("orphaned", 0, 0)
    ledger.stop()
