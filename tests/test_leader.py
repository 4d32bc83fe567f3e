"""control/leader.py and the projection's compare-and-set: one leader among control services sharing a database,
fenced off the moment its lock session is gone; two publishers that overlap never move a pointer back.

On a database of the module's own (the session's control service leads on the session's database).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
import redis

from control import db
from control.leader import Leadership, NotLeader
from control.projection import Publisher, mark_dirty
from fastpath import snapshot_format as fmt

POLL = 0.2


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.02)


@pytest.fixture
def contenders(module_database) -> Iterator[list[Leadership]]:
    db.migrate(module_database)
    started = [Leadership(module_database, POLL) for _ in range(2)]
    for leadership in started:
        leadership.start()
    yield started
    for leadership in started:
        leadership.stop()


def _fence(dsn: str, leadership: Leadership) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        leadership.fence(conn)


def test_one_leads_and_only_its_transactions_pass_the_fence(module_database, contenders):
    first, second = contenders
    assert (first.leading, second.leading) == (True, False)
    _fence(module_database, first)
    with pytest.raises(NotLeader):
        _fence(module_database, second)


def test_a_leader_whose_lock_session_ends_is_fenced_off_at_once_and_the_other_takes_over(module_database,
                                                                                        contenders):
    first, second = contenders
    with psycopg.connect(module_database, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                     "'tollgate-leader' AND datname = current_database() AND pid = %s", (first._pid,))
    with pytest.raises(NotLeader):  # before it noticed: its batches no longer commit
        _fence(module_database, first)
    _until(lambda: second.leading and not first.leading, POLL * 3 + 1, "the other takes over")
    _fence(module_database, second)


def test_stopping_the_leader_hands_over_within_a_poll(contenders):
    first, second = contenders
    first.stop()
    stopped = time.monotonic()
    _until(lambda: second.leading, POLL + 1, "the other takes over")
    assert time.monotonic() - stopped <= POLL + 0.5


@pytest.fixture
def namespace(redis_url) -> Iterator[str]:
    name = f"tgleader{secrets.token_hex(3)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)
    client.close()


def test_a_publisher_level_with_the_live_data_is_refused_and_newer_data_swaps(module_database, redis_url, namespace):
    """Two publishers that built one family from the same data: the second swap is refused and its snapshot
    deleted, so the pointer never goes back to an older version of the same data."""
    db.migrate(module_database)
    with psycopg.connect(module_database) as conn:
        mark_dirty(conn, "callerids")
    ahead, behind = (Publisher(module_database, redis_url, namespace=namespace) for _ in range(2))
    client, keys = redis.Redis.from_url(redis_url), fmt.Keys(namespace)
    try:
        live = ahead.publish("callerids")
        late = behind.publish("callerids")  # the same data, a later version: nothing to gain, refused
        assert late > live and int(client.hget(keys.pointer, "callerids")) == live
        assert not client.exists(keys.snapshot("callerids", late))
        with psycopg.connect(module_database) as conn:
            mark_dirty(conn, "callerids")
        newest = behind.publish("callerids")  # built from newer data: swapped
        assert int(client.hget(keys.pointer, "callerids")) == newest
    finally:
        ahead.close()
        behind.close()
        client.close()
