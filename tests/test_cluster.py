"""tollgate on a Redis Cluster (3 masters, 3 replicas: tests/redis_cluster.py), the whole call path on it.

A control service of its own (its own database, a redis+cluster:// URL) publishes the projection to the cluster
and runs its ledger's consumer group on the accounts' streams, which live on different masters; two Kamailio
relay nodes read the projection and run the admission and settlement scripts there, through ndb_redis in cluster
mode and redis-py's RedisCluster. Checked: the scripts on keys of many slots; one account's channel and CPS
limits held across both nodes; a master killed during calls (its replica promoted) - calls in progress settle
once, new calls are admitted again within FAILOVER_BOUND_SECONDS, and no CDR or money is lost.

Run alone: `pytest -m cluster`. Its cluster and nodes use their own ports, beside the rest of the suite.
"""

from __future__ import annotations

import dataclasses
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from google.protobuf import field_mask_pb2

from callstate import connection
from callstate.events import CallEvent
from callstate.store import ADMITTED, TRUNK_FULL, TRUNK_SEIZED, CallState
from fastpath.runtime import FastPath, redis_client
from tests.faults import CallLoad, Placed
from tests.kamailio_harness import (
    CALLER,
    DESTINATION,
    EUR,
    Kamailio,
    customer_on,
    make_carrier,
    map_ip,
    number,
    run_sipp,
    start_kamailio,
    wait_routable,
)
from tests.redis_cluster import NODE_TIMEOUT_MS, RedisClusterProcesses
from tests.sip_wire import Gateway
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import company_pb2

pytestmark = pytest.mark.cluster
# New calls of the killed master's accounts are admitted again within this many seconds of the kill: the
# cluster's node timeout (1 s here), the replica's election, and the clients' next look at the slot map.
FAILOVER_BOUND_SECONDS = 10.0
QUIET_TIMEOUT = 30.0  # every call settled and recorded, PostgreSQL = Redis, within this after the load stops


@dataclass
class Stack:
    cluster: RedisClusterProcesses
    server: object  # tests.conftest.ControlServer, its redis_url the cluster's
    admin: object
    state: CallState
    fast: FastPath
    node_url: str  # what the Kamailio nodes are given: the cluster's nodes, ndb_redis's entry node first


@pytest.fixture(scope="module")
def stack(redis_cluster, server_factory, connect) -> Iterator[Stack]:
    server = server_factory(redis_url=redis_cluster.url, ledger_interval_seconds=0.5,
                            projection_interval_seconds=0.5, reap_grace_seconds=20, max_ring_seconds=30)
    server = dataclasses.replace(server, redis_url=redis_cluster.url)
    admin = connect(server)
    # Short grants: a prepaid call reserves what its grant costs, and the load keeps several up at once.
    admin.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
        company=company_pb2.Company(max_call_seconds=60),
        update_mask=field_mask_pb2.FieldMask(paths=["max_call_seconds"])), metadata=admin.metadata)
    client = connection.connect(redis_cluster.url, socket_timeout=2)
    with tempfile.TemporaryDirectory() as images:
        yield Stack(redis_cluster, server, admin, CallState(client, server.keys.namespace),
                    FastPath(redis_client(redis_cluster.url), images, server.keys.namespace), redis_cluster.url)
    client.close()


@pytest.fixture(scope="module")
def nodes(stack, tmp_path_factory) -> Iterator[list[Kamailio]]:
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_kamailio(tmp_path_factory.mktemp(f"cluster-node-{name}"), redis_url=stack.node_url,
                                          namespace=stack.server.keys.namespace, mode="relay", fr_timer_ms=1000,
                                          dialog_dsn=stack.server.dsn))
        yield started
    finally:
        for node in started:
            node.stop()
    tracebacks = [line for node in started for line in node.log().splitlines() if "Traceback" in line]
    assert not tracebacks, tracebacks


# ---------------------------------------------------------------------------------------------- the scripts


def _accounts_on_every_master(state: CallState, cluster: RedisClusterProcesses, each: int = 4) -> list[str]:
    """Random account numbers, `each` on every master (by the slot of their hash tag)."""
    by_master: dict[int, list[str]] = {}
    while len(by_master) < 3 or min(len(found) for found in by_master.values()) < each:
        account = f"9{secrets.randbelow(10**9):09d}"
        by_master.setdefault(cluster.master_of(state.keys.account(account, "money")).port, []).append(account)
    return [account for found in by_master.values() for account in found[:each]]


def test_every_script_runs_on_keys_of_one_slot_and_accounts_spread_over_the_masters(stack):
    state, now = stack.state, int(time.time())
    accounts = _accounts_on_every_master(state, stack.cluster)
    state.load_scripts()
    for account in accounts:
        state.credit(account, 10 * EUR)
        grant = state.admit_call(account, "c1", now=now, cps=5, max_calls=2, credit_limit=0,
                                 terms=(0, 0, 60_000, 1, 1), max_call_seconds=60, node="n1")
        assert grant.outcome == ADMITTED
        event = CallEvent("c1", account, customer_cost=1000, provider="prov", provider_cost=400)
        assert state.settle(account, "c1", 1000, event) and not state.settle(account, "c1", 1000, event)
        assert state.available(account, 0) == 10 * EUR - 1000
    # The providers' credits go through a cluster pipeline, one slot each; again after the promoted replicas
    # lost their scripts (SCRIPT FLUSH everywhere): loaded again, and still once per settlement.
    credits = [(account, "cust", f"call{i}", 7) for i, account in enumerate(accounts)]
    state.credit_providers(credits)
    state._redis.execute_command("SCRIPT FLUSH", target_nodes=connection.RedisCluster.ALL_NODES)
    state.credit_providers(credits)
    assert [state.available(a, 0) for a in accounts] == [10 * EUR - 1000 + 7] * len(accounts)
    assert state.seize_trunk("cl-trunk", "s1", now=now, max_calls=1, cps=0, hold_until=now + 60) == TRUNK_SEIZED
    assert state.seize_trunk("cl-trunk", "s2", now=now, max_calls=1, cps=0, hold_until=now + 60) == TRUNK_FULL
    state.heartbeat("n1", now)
    state.node_started("n1", now)
    assert "n1" in state.node_restarts()


def test_the_ledger_reads_streams_on_every_master_through_its_consumer_group(stack):
    """Events on accounts of all three masters become CDRs: one XREADGROUP per slot, one group per stream."""
    state = stack.state
    accounts = _accounts_on_every_master(state, stack.cluster, 3)
    for account in accounts:
        state.credit(account, EUR)
        state.settle(account, f"led-{account}", 0, CallEvent(f"led-{account}", account, end_reason="hangup"))
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(stack.server.dsn) as conn:
            recorded = conn.execute("SELECT count(*) FROM cdrs WHERE account_number = ANY(%s)",
                                    (accounts,)).fetchone()[0]
        if recorded == len(accounts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert recorded == len(accounts)
    assert all(state._redis.xlen(state.events_key(a)) == 0 for a in accounts)  # acknowledged and trimmed


# ---------------------------------------------------------------------------------------------- on the wire


def _at_the_start_of_a_second() -> None:
    time.sleep(1.02 - time.time() % 1)


def _both_at_once(nodes: list[Kamailio], tmp_path: Path, tech_prefix: str, calls: int, hold_ms: int) -> list:
    """`calls` parallel calls through each node at once; the sipp results of both."""
    results = []

    def fire(node: Kamailio, tag: str) -> None:
        results.append(run_sipp(node, "uac_call.xml", tmp_path / f"uac_{tag}", expect=503,
                                rows=[(CALLER, tech_prefix + DESTINATION)] * calls, rate=100, limit=calls,
                                timeout=10, values={"HOLD": hold_ms}))

    threads = [threading.Thread(target=fire, args=(node, tag)) for node, tag in zip(nodes, "ab", strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _answers(results: list) -> tuple[int, list[str]]:
    answered = len([m for r in results for m in r.received(200) if "INVITE" in "".join(m.headers("CSeq"))])
    return answered, [m.first_line for r in results for m in r.received(503)]


def test_one_accounts_channel_and_cps_limits_hold_across_two_nodes(stack, nodes, gateways, tmp_path):
    gateway = gateways("uas_answer.xml", calls=4, BYE_TIMEOUT=10_000)
    rate_group, _trunks, _provider = make_carrier(
        stack.admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
    _busy, channels = customer_on(stack.admin, stack.state, stack.fast, rate_group, max_concurrent_calls=2,
                                  balance=30 * EUR)
    _fast, cps = customer_on(stack.admin, stack.state, stack.fast, rate_group, cps=2, balance=30 * EUR)
    answered, refused = _answers(_both_at_once(nodes, tmp_path / "channels", channels, calls=3, hold_ms=2000))
    assert (answered, refused) == (2, ["SIP/2.0 503 Concurrent call limit"] * 4)
    _at_the_start_of_a_second()
    answered, refused = _answers(_both_at_once(nodes, tmp_path / "cps", cps, calls=3, hold_ms=200))
    assert (answered, refused) == (2, ["SIP/2.0 503 CPS limit exceeded"] * 4)


# ---------------------------------------------------------------------------------------------- failover


def _prepaid_customer(stack: Stack, rate_group: str, avoid_port: int) -> tuple[str, str]:
    """(account, tech prefix) of a prepaid customer funded by a payment (PostgreSQL holds its money), whose
    keys live on a master other than `avoid_port` (ndb_redis's entry node: see README "Redis Cluster")."""
    admin = stack.admin
    while True:
        customer = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
            email=f"cluster-{secrets.token_hex(4)}@example.com",
            billing=apb.Billing(rate_group=rate_group, account_type=apb.PREPAID))), metadata=admin.metadata)
        account = number(customer)
        if stack.cluster.master_of(stack.state.keys.account(account, "money")).port != avoid_port:
            break
    admin.accounts.PostPayment(apb.PostPaymentRequest(account=customer.name, amount=50 * EUR),
                               metadata=admin.metadata)
    return account, map_ip(admin, customer)


def _books(dsn: str, customer: str, provider: str) -> dict:
    with psycopg.connect(dsn) as conn:
        balances = dict(conn.execute("SELECT account_number, balance FROM accounts WHERE account_number = ANY(%s)",
                                     ([customer, provider],)).fetchall())
        cdrs = conn.execute("SELECT call_id, customer_cost, provider_cost, end_reason FROM cdrs "
                            "WHERE account_number = %s", (customer,)).fetchall()
        entries = dict(conn.execute("SELECT account_number, coalesce(sum(amount), 0) FROM ledger_entries "
                                    "WHERE account_number = ANY(%s) GROUP BY account_number",
                                    ([customer, provider],)).fetchall())
        paid = conn.execute("SELECT coalesce(sum(amount), 0) FROM payments WHERE account_number = %s",
                            (customer,)).fetchone()[0]
    return {"balances": balances, "cdrs": cdrs, "entries": entries, "paid": paid}


def _quiet(stack: Stack, customer: str, provider: str) -> bool:
    """No call open, and PostgreSQL's balances = Redis's live ones (every settlement recorded)."""
    try:
        if stack.state.open_calls(customer):
            return False
        live = {a: stack.state.available(a, 0) for a in (customer, provider)}
    except redis.RedisError:
        return False
    return live == _books(stack.server.dsn, customer, provider)["balances"]


def _readmitted_after(placed: list[Placed], killed: float) -> float | None:
    """Seconds from the kill to the INVITE of the first call answered after it that was placed after it."""
    after = [c.started for c in placed if c.started >= killed and c.answer == 200]
    return round(min(after) - killed, 2) if after else None


def test_a_master_killed_during_calls_loses_no_call_cdr_or_money(stack, nodes):
    entry_port = connection.cluster_nodes(stack.node_url)[0][1]
    gateway = Gateway("answer")
    try:
        rate_group, _trunks, provider = make_carrier(
            stack.admin, [([gateway.address], "prefix,rate_per_min\n44,0.30\n")], "prefix,rate_per_min\n44,0.60\n")
        customer, tech_prefix = _prepaid_customer(stack, rate_group, entry_port)
        wait_routable(stack.fast, customer)
        load = CallLoad(nodes, tech_prefix + DESTINATION, rate=4.0, hold=1.5)
        load.start()
        time.sleep(3)
        victim = stack.cluster.master_of(stack.state.keys.account(customer, "money"))
        in_progress = len([c for c in load.placed if c.answer == 200 and not c.ended])
        stack.cluster.kill(victim)
        killed = time.time()
        stack.cluster.wait_promoted(stack.state.keys.account(customer, "money"), victim)
        promoted = time.time() - killed
        time.sleep(5)  # calls go on through the promoted replica
        load.stop()
        placed = load.placed
    finally:
        gateway.stop()
    readmitted = _readmitted_after(placed, killed)
    print(f"\ncluster failover: node timeout {NODE_TIMEOUT_MS} ms, {in_progress} call(s) up at the kill, replica "
          f"promoted after {promoted:.1f} s, new calls admitted again after {readmitted} s; "
          f"{len(placed)} placed, {sum(c.answer == 200 for c in placed)} answered, "
          f"{sum(c.answer != 200 for c in placed if c.started >= killed)} refused after the kill")
    assert in_progress > 0, "no call was up when the master died"
    assert readmitted is not None and readmitted <= FAILOVER_BOUND_SECONDS
    _assert_books_balance(stack, customer, provider, placed)
    stack.cluster.restart(victim)  # it rejoins as a replica of the promoted one


def _assert_books_balance(stack: Stack, customer: str, provider: str, placed: list[Placed]) -> None:
    deadline = time.monotonic() + QUIET_TIMEOUT
    while not _quiet(stack, customer, provider):
        assert time.monotonic() < deadline, (
            f"not quiet within {QUIET_TIMEOUT:g} s: open calls {stack.state.open_calls(customer)}, live "
            f"{ {a: stack.state.available(a, 0) for a in (customer, provider)} }, "
            f"book {_books(stack.server.dsn, customer, provider)['balances']}")
        time.sleep(0.3)
    books = _books(stack.server.dsn, customer, provider)
    by_call: dict[str, int] = {}
    for call_id, *_rest in books["cdrs"]:
        by_call[call_id] = by_call.get(call_id, 0) + 1
    assert all(count == 1 for count in by_call.values()), "a call with two CDRs"
    completed = [c.call_id for c in placed if c.answer == 200 and c.hung_up]
    assert [c for c in completed if c not in by_call] == [], "an answered call without a CDR"
    assert not [row for row in books["cdrs"] if row[3] == "orphaned"], "a call the reaper had to settle"
    customer_costs = sum(row[1] for row in books["cdrs"])
    assert books["entries"].get(customer, 0) == -customer_costs  # Σ customer debits = Σ CDR customer costs
    assert books["entries"].get(provider, 0) == sum(row[2] for row in books["cdrs"])  # Σ provider credits
    assert books["balances"][customer] == books["paid"] - customer_costs >= 0
