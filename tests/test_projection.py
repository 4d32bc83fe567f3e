"""The Redis projection: changes over gRPC reach a feed reader within 1 s, decks swap whole (SPEC §11)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import psycopg
import pytest

from control.projection import mark_dirty
from fastpath import snapshot_format as fmt
from fastpath.feed import ProjectionFeed, Snapshot
from tests.helpers import unique_email
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import common_pb2, rating_pb2


@pytest.fixture
def keys(control_server) -> fmt.Keys:
    return control_server.keys


@pytest.fixture
def feed(redis_client, keys) -> ProjectionFeed:
    reader = ProjectionFeed(redis_client, keys.namespace)
    reader.load()
    return reader


def wait_for(feed: ProjectionFeed, family: str, predicate, seconds: float = 1.0) -> tuple[Snapshot, float]:
    """The first snapshot of `family` satisfying predicate, and how long it took to arrive."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        for snapshot in feed.changes(block_ms=max(1, int((seconds - elapsed) * 1000))):
            if snapshot.family == family and predicate(snapshot):
                return snapshot, time.monotonic() - started
    raise AssertionError(f"{family}: no matching snapshot within {seconds} s")


def account_record(snapshot: Snapshot, number: str) -> dict | None:
    return next((r for r in snapshot.records() if r["number"] == number), None)


def upload(admin, parent: str, text: str):
    return admin.rate_groups.ImportOriginationRates(
        iter([common_pb2.ImportRatesRequest(parent=parent, csv_data=text.encode())]), metadata=admin.metadata)


def test_initial_load_has_every_base_family(feed, redis_client, keys):
    families = set(ProjectionFeed(redis_client, keys.namespace).load())
    assert set(fmt.BASE_FAMILIES) <= families


def test_new_account_reaches_the_feed_within_a_second(admin, feed):
    account = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email(), settings=apb.AccountSettings(max_concurrent_calls=7, cps=3))), metadata=admin.metadata)
    snapshot, elapsed = wait_for(feed, "accounts", lambda s: account_record(s, account.account_number))
    record = account_record(snapshot, account.account_number)
    assert (record["max_concurrent_calls"], record["cps"], record["deleted"], record["status"]) == (7, 3, False,
                                                                                                     "ACTIVE")
    assert elapsed < 1.0


def test_delete_and_disable_reach_the_feed_at_once(admin, feed):
    a, b = (admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(email=unique_email())),
                                         metadata=admin.metadata) for _ in range(2))
    admin.accounts.DeleteAccounts(apb.DeleteAccountsRequest(names=[a.name]), metadata=admin.metadata)
    wait_for(feed, "accounts", lambda s: (account_record(s, a.account_number) or {}).get("deleted"))
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(name=b.name, status=apb.INACTIVE)),
                                 metadata=admin.metadata)
    wait_for(feed, "accounts", lambda s: (account_record(s, b.account_number) or {}).get("status") == "INACTIVE")


def test_deck_import_publishes_the_whole_deck(admin, feed):
    group = admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=f"rg-{uuid.uuid4().hex[:8]}", rate_group=rating_pb2.RateGroup()), metadata=admin.metadata)
    rows = 12_345  # three chunks
    text = "prefix,connect_fee,rate_per_min,initial_increment,increment\n" + "".join(
        f"{1_000_000 + i},0.01,0.0125,30,6\n" for i in range(rows))
    upload(admin, group.name, text)
    family = fmt.origination_deck(group.name.split("/")[1])
    snapshot, _ = wait_for(feed, family, lambda s: len(s.rows) == rows, seconds=3)
    first = next(snapshot.records())
    assert first == {"prefix": "1000000", "connect_fee": 10_000, "included_seconds": 0, "rate_per_min": 12_500,
                     "initial_increment": 30, "increment": 6, "forced_trunks": [], "priority": 0}


def test_readers_never_see_half_a_deck(admin, feed, redis_client, keys):
    group = admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=f"rg-{uuid.uuid4().hex[:8]}", rate_group=rating_pb2.RateGroup()), metadata=admin.metadata)
    family = fmt.origination_deck(group.name.split("/")[1])
    decks = {n: "prefix,rate_per_min\n" + "".join(f"{2_000_000 + i},0.01\n" for i in range(n)) for n in (9_000, 21_000)}
    seen: set[int] = set()
    stop = threading.Event()

    def read_continuously() -> None:
        reader = ProjectionFeed(redis_client, keys.namespace)
        while not stop.is_set():
            live = redis_client.hget(keys.pointer, family)
            if live is not None:
                seen.add(len(reader.read(family, int(live)).rows))

    thread = threading.Thread(target=read_continuously)
    thread.start()
    try:
        for n in (9_000, 21_000, 9_000, 21_000):
            upload(admin, group.name, decks[n])
            wait_for(feed, family, lambda s, n=n: len(s.rows) == n, seconds=5)
    finally:
        stop.set()
        thread.join()
    assert seen <= {0, 9_000, 21_000} and {9_000, 21_000} <= seen


def test_projection_heals_after_redis_loses_everything(admin, redis_client, keys):
    for key in redis_client.scan_iter(keys.prefix + "*"):  # as after a Redis restart without persistence
        redis_client.delete(key)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not set(fmt.BASE_FAMILIES) <= {
        k.decode() for k in redis_client.hkeys(keys.pointer)
    }:
        time.sleep(0.1)
    assert set(fmt.BASE_FAMILIES) <= {k.decode() for k in redis_client.hkeys(keys.pointer)}
    account = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(email=unique_email())),
                                           metadata=admin.metadata)
    reader = ProjectionFeed(redis_client, keys.namespace)
    reader.load()
    wait_for(reader, "accounts", lambda s: account_record(s, account.account_number))


def test_a_projection_from_another_database_is_replaced(admin, redis_client, keys):
    # As if a dropped database with higher change counters had written this Redis before.
    redis_client.set(keys.epoch, "another-database")
    redis_client.hset(keys.sources, mapping={family: 10**9 for family in fmt.BASE_FAMILIES})
    account = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(email=unique_email())),
                                           metadata=admin.metadata)
    reader = ProjectionFeed(redis_client, keys.namespace)
    reader.load()
    wait_for(reader, "accounts", lambda s: account_record(s, account.account_number), seconds=3)
    assert redis_client.get(keys.epoch) != b"another-database"


def test_a_deck_the_format_cannot_hold_keeps_its_live_version(server_factory, connect, redis_client, caplog):
    """A row written around the API (a forced trunk with ',') cannot go into an image: that deck keeps its live
    version, the error names it, and every other family is still published."""
    server = server_factory()
    stubs = connect(server)
    group = stubs.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id="held", rate_group=rating_pb2.RateGroup()), metadata=stubs.metadata)
    upload(stubs, group.name, "prefix,rate_per_min\n44,0.01\n")
    feed = ProjectionFeed(redis_client, server.keys.namespace)
    feed.load()
    wait_for(feed, "odeck:held", lambda s: len(s.rows) == 1, seconds=3)
    live = redis_client.hget(server.keys.pointer, "odeck:held")
    caplog.set_level(logging.ERROR, logger="control.projection")
    with psycopg.connect(server.dsn) as conn:
        conn.execute("UPDATE origination_rates SET forced_trunks = %s WHERE rate_group_id = 'held'", (["a,b"],))
        mark_dirty(conn, "odeck:held")
    deadline = time.monotonic() + 3

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "odeck:held" in r.getMessage()]

    while not refusals() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(refusals()) == 1 and "forced trunk 'a,b'" in refusals()[0]
    account = stubs.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(email=unique_email())),
                                           metadata=stubs.metadata)  # after the refusal: the publisher goes on
    wait_for(feed, "accounts", lambda s: account_record(s, account.account_number), seconds=3)
    assert redis_client.hget(server.keys.pointer, "odeck:held") == live
    assert len(refusals()) == 1  # once, though every reconcile meets it again
