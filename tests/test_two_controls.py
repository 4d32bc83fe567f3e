"""Two control services on one PostgreSQL and one Redis namespace (issue 14, README "Scaling out"): one leads -
runs the billing jobs (restore, payments, reaper, ledger, invoices) and the projection publisher - and both
serve RPCs and send the outbox; kill -9 the leader in a flood of settled calls and the follower takes over
within the stated time, with every CDR recorded exactly once and the money conserved; an invoice period is
invoiced once and a notification mailed once, whichever service does it.

The services are processes (tests/faults.py ControlProcess), so that the leader dies as a crash leaves it.
The calls are settled straight in Redis, as Kamailio's settlement script does (callstate.store.CallState).
"""

from __future__ import annotations

import email
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy

import grpc
import psycopg
import pytest
import redis
from aiosmtpd.controller import Controller
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from callstate.events import HANGUP, CallEvent
from callstate.store import CallState
from control.server import LEADER_HEALTH_NAME
from tests.faults import ControlProcess
from tests.helpers import Stubs, stubs_for, unique_email, unique_number
from tests.kamailio_harness import free_port, number
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import invoice_pb2

pytestmark = pytest.mark.faults
POLL_SECONDS = 1.0  # leader_poll_seconds and ledger_interval_seconds: the defaults
LEDGER_SECONDS = 1.0
# The stated bound (README "Scaling out"): the lock is free the moment the leader's process dies; the follower
# takes it at its next poll and records at its next round. One more second for a loaded test machine.
TAKEOVER_BOUND = POLL_SECONDS + LEDGER_SECONDS + 1.0
FLOOD_CALLS = 3000
FLOOD_SECONDS = 6.0
KILL_AFTER = 2.5
SENDER = "billing@tollgate.test"


# ---------------------------------------------------------------------------------------------- the stack


class Inbox:
    """aiosmtpd handler: the messages received."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@dataclass
class Pair:
    dsn: str
    namespace: str
    services: list[ControlProcess]
    stubs: list[Stubs]
    state: CallState
    inbox: Inbox
    channels: list[grpc.Channel] = field(default_factory=list)

    def leaders(self) -> list[bool]:
        return [_leads(service) for service in self.services]


def _leads(service: ControlProcess) -> bool:
    with grpc.insecure_channel(service.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=LEADER_HEALTH_NAME), timeout=1)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def mail() -> Iterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


@pytest.fixture(scope="module")
def pair(module_database, redis_url, mail, tmp_path_factory) -> Iterator[Pair]:
    """Services A and B on one database and one namespace; A started first, so A leads."""
    workdir = tmp_path_factory.mktemp("two-controls")
    namespace, token = f"tgpair{secrets.token_hex(3)}", "tga_" + secrets.token_urlsafe(16)
    settings = dict(dsn=module_database, redis_url=redis_url, namespace=namespace, token=token,
                    ledger_interval_seconds=LEDGER_SECONDS, leader_poll_seconds=POLL_SECONDS,
                    projection_interval_seconds=0.5, smtp_host="127.0.0.1", smtp_port=mail.port,
                    smtp_security="none", smtp_from=SENDER, notification_interval_seconds=0.2)
    services = [ControlProcess(workdir / name, **settings) for name in ("a", "b")]
    client = redis.Redis.from_url(redis_url)
    started = Pair(module_database, namespace, services, [], CallState(client, namespace), mail)
    try:
        services[0].start()
        _until(lambda: _leads(services[0]), 10, "A leads")
        services[1].start()
        for service in services:
            started.channels.append(grpc.insecure_channel(service.address))
            started.stubs.append(stubs_for(started.channels[-1], token))
        yield started
    finally:
        for channel in started.channels:
            channel.close()
        for service in services:
            service.stop()
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
        client.close()


def _account(stubs: Stubs, **billing) -> str:
    made = stubs.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        account_number=unique_number(), email=unique_email("pair"), settings=apb.AccountSettings(notifications=True),
        profile=apb.Profile(timezone="UTC"), billing=apb.Billing(**billing))), metadata=stubs.metadata)
    return number(made)


def _provider(stubs: Stubs) -> str:
    made = stubs.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        account_number=unique_number(), email=unique_email("carrier"), type=apb.PROVIDER)), metadata=stubs.metadata)
    return number(made)


def _event(call_id: str, customer: str, provider: str, cost: int, provider_cost: int, setup: float) -> CallEvent:
    return CallEvent(
        call_id=call_id, account=customer, direction="outbound", caller_id_received="15550001111",
        caller_id_presented="15550002222", destination_dialled="4420123", destination_sent="4420123",
        rate_group="rate-groups/g1", prefix="44", rate_per_min=600_000, trunk="trunks/t1", provider=provider,
        gateway="127.0.0.1:5091", setup_time=setup, answer_time=setup + 1, end_time=setup + 31,
        billable_seconds=30, sip_code=200, sip_reason="OK", end_reason=HANGUP, customer_cost=cost,
        provider_cost=provider_cost, record=True)


def _log(service: ControlProcess) -> str:
    return (service.workdir / "control.log").read_text()


def _scalar(dsn: str, query: str, params: tuple = ()):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchone()[0]


# ---------------------------------------------------------------------------------------------- tests


def test_one_leads_and_both_serve_rpcs(pair):
    assert pair.leaders() == [True, False]
    assert "became leader" in _log(pair.services[0]) and "became leader" not in _log(pair.services[1])
    a, b = pair.stubs
    made_on_b = _account(b)
    assert a.accounts.GetAccount(apb.GetAccountRequest(name=f"accounts/{made_on_b}"),
                                 metadata=a.metadata).account_number == made_on_b
    made_on_a = _account(a)
    assert b.accounts.GetAccount(apb.GetAccountRequest(name=f"accounts/{made_on_a}"),
                                 metadata=b.metadata).account_number == made_on_a


@dataclass
class Flood:
    """Settles calls in Redis, as Kamailio's settlement does, at a steady pace from a thread."""

    state: CallState
    customers: list[str]
    provider: str
    settled: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # call id -> customer, costs

    def run(self) -> None:
        started = time.monotonic()
        for i in range(FLOOD_CALLS):
            customer = self.customers[i % len(self.customers)]
            call_id, cost, provider_cost = f"flood-{i}@pair", 10_000 + i, 4_000 + i // 2
            now = time.time()
            assert self.state.settle(customer, call_id, cost, _event(call_id, customer, self.provider, cost,
                                                                    provider_cost, now - 31))
            self.settled[call_id] = (customer, cost, provider_cost)
            ahead = started + FLOOD_SECONDS * (i + 1) / FLOOD_CALLS - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def test_the_leader_killed_in_a_cdr_flood_hands_over_within_the_bound_and_loses_nothing(pair):
    a, b = pair.stubs
    customers, provider = [_account(a), _account(b), _account(a), _account(b)], _provider(b)
    # Postpaid, created two months ago, with one call a month ago: its invoice is due at the next leader's round.
    invoiced = _account(a, account_type=apb.POSTPAID, billing_day=1, credit_limit=100_000_000)
    with psycopg.connect(pair.dsn) as conn:
        conn.execute("UPDATE accounts SET created_at = now() - interval '70 days' WHERE account_number = %s",
                     (invoiced,))
    every = [*customers, provider, invoiced]
    _until(lambda: all(pair.state.restored(account) for account in every), 10, "the leader restored the accounts")
    month_ago = (datetime.now(UTC) - timedelta(days=40)).timestamp()
    pair.state.settle(invoiced, "invoiced-call@pair", 2_500_000,
                      _event("invoiced-call@pair", invoiced, provider, 2_500_000, 1_000_000, month_ago))

    flood = Flood(pair.state, customers, provider)
    flooding = threading.Thread(target=flood.run, daemon=True)
    flooding.start()
    time.sleep(KILL_AFTER)
    before = _scalar(pair.dsn, "SELECT count(*) FROM cdrs")
    pair.services[0].kill()
    killed = time.monotonic()
    _until(lambda: _leads(pair.services[1]), TAKEOVER_BOUND, "B leads")
    took_lead = time.monotonic() - killed
    _until(lambda: _scalar(pair.dsn, "SELECT count(*) FROM cdrs") > before, TAKEOVER_BOUND, "B records CDRs")
    recording = time.monotonic() - killed
    flooding.join(timeout=FLOOD_SECONDS + 10)
    assert len(flood.settled) == FLOOD_CALLS
    _until(lambda: not _missing(pair, flood), 30, "every flooded call has its CDR")
    drained = time.monotonic() - killed
    print(f"\nleader killed during {FLOOD_CALLS} settlements ({before} recorded by then): B led after "
          f"{took_lead:.2f} s, recorded after {recording:.2f} s, all recorded after {drained:.2f} s")
    assert "became leader" in _log(pair.services[1])
    _assert_books(pair, flood, customers, provider)
    _assert_one_invoice(pair, invoiced)

    pair.services[0].start()  # back, as the follower
    time.sleep(2 * POLL_SECONDS)
    assert pair.leaders() == [False, True]
    _assert_one_invoice(pair, invoiced)


def _missing(pair: Pair, flood: Flood) -> list[str]:
    with psycopg.connect(pair.dsn) as conn:
        recorded = {row[0] for row in conn.execute("SELECT call_id FROM cdrs WHERE call_id LIKE 'flood-%'")}
    return [call_id for call_id in flood.settled if call_id not in recorded]


def _assert_books(pair: Pair, flood: Flood, customers: list[str], provider: str) -> None:
    """Every CDR once, Σ debits = Σ CDR customer costs, Σ credits = Σ CDR provider costs, Redis = PostgreSQL."""
    with psycopg.connect(pair.dsn) as conn:
        cdrs = conn.execute("SELECT call_id, account_number, customer_cost, provider_cost FROM cdrs "
                            "WHERE call_id LIKE 'flood-%%'").fetchall()
        entries = dict(conn.execute("SELECT account_number, sum(amount) FROM ledger_entries WHERE call_id LIKE "
                                    "'flood-%%' OR call_id LIKE '%%flood-%%' GROUP BY account_number").fetchall())
        balances = dict(conn.execute("SELECT account_number, balance FROM accounts WHERE account_number = ANY(%s)",
                                     ([*customers, provider],)).fetchall())
    assert len(cdrs) == FLOOD_CALLS
    assert {row[0]: (row[1], row[2], row[3]) for row in cdrs} == flood.settled  # exactly once, as settled
    for customer in customers:
        costs = sum(row[2] for row in cdrs if row[1] == customer)
        assert entries[customer] == -costs == balances[customer]
        assert pair.state.available(customer, 0) == balances[customer]
    provider_costs = sum(row[3] for row in cdrs)
    invoiced_credit = 1_000_000  # the invoiced account's call
    assert entries[provider] == provider_costs
    assert balances[provider] == provider_costs + invoiced_credit
    assert pair.state.available(provider, 0) == balances[provider]  # credited once in Redis too


def _assert_one_invoice(pair: Pair, account: str) -> None:
    _until(lambda: _scalar(pair.dsn, "SELECT count(*) FROM invoices WHERE account_number = %s", (account,)), 10,
           "the new leader invoiced")
    assert _scalar(pair.dsn, "SELECT count(*) FROM invoices WHERE account_number = %s", (account,)) == 1
    assert _scalar(pair.dsn, "SELECT total FROM invoices WHERE account_number = %s", (account,)) == 2_500_000


def test_concurrent_invoice_runs_on_both_services_issue_each_period_once(pair):
    a, b = pair.stubs
    accounts = [_account(a, account_type=apb.POSTPAID, billing_day=1) for _ in range(5)]
    with psycopg.connect(pair.dsn) as conn:
        conn.execute("UPDATE accounts SET created_at = %s WHERE account_number = ANY(%s)",
                     (datetime(2031, 1, 10, tzinfo=UTC), accounts))
    for i, account in enumerate(accounts):
        for month in (1, 2):
            setup = datetime(2031, month, 20, tzinfo=UTC).timestamp()
            pair.state.settle(account, f"run-{i}-{month}@pair", 1_000_000,
                              _event(f"run-{i}-{month}@pair", account, "", 1_000_000, 0, setup))
    _until(lambda: _scalar(pair.dsn, "SELECT count(*) FROM cdrs WHERE account_number = ANY(%s)", (accounts,)) == 10,
           10, "the CDRs recorded")
    as_of = Timestamp()
    as_of.FromDatetime(datetime(2031, 3, 5, tzinfo=UTC))
    start = threading.Barrier(4)
    made: list[str] = []
    failed: list[grpc.RpcError] = []

    def run(stubs: Stubs) -> None:
        start.wait()
        try:
            reply = stubs.invoices.GenerateInvoices(invoice_pb2.GenerateInvoicesRequest(as_of=as_of),
                                                    metadata=stubs.metadata)
        except grpc.RpcError as exc:  # before the fix: ALREADY_EXISTS on the unique period
            failed.append(exc)
            return
        made.extend(i.name for i in reply.invoices if i.account.removeprefix("accounts/") in accounts)

    runs = [threading.Thread(target=run, args=(stubs,)) for stubs in (a, b, a, b)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=60)
    assert not failed, [f"{e.code()}: {e.details()}" for e in failed]
    assert len(made) == len(set(made)) == 2 * len(accounts)  # two periods each, every one made by one run only
    periods = _scalar(pair.dsn, "SELECT count(DISTINCT (account_number, period_end)) = count(*) FROM invoices "
                                "WHERE account_number = ANY(%s)", (accounts,))
    assert periods


def test_every_notification_is_mailed_once_with_both_services_sending(pair):
    """Both services send the outbox (its rows are leased, not led): each message reaches the server once."""
    a, b = pair.stubs
    for stubs in (a, b) * 10:
        _account(stubs)
    _until(lambda: _scalar(pair.dsn, "SELECT count(*) FROM notifications WHERE status <> 'SENT'") == 0, 30,
           "the outbox sent")
    ids = Counter(int(re.search(r"\.tollgate\.(\d+)@", m["Message-ID"]).group(1)) for m in pair.inbox.messages)
    with psycopg.connect(pair.dsn) as conn:
        sent = {row[0] for row in conn.execute("SELECT id FROM notifications").fetchall()}
    assert set(ids) == sent
    assert max(ids.values()) == 1
