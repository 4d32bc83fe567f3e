"""Login throttling (SPEC §11, issue 10 finding 6): per login and per source, the same for unknown logins,
visible to operators; Argon2 checks bounded so that a login flood cannot take the service.

Each server here has a database of its own: the counts live in PostgreSQL, and a locked 127.0.0.1 would lock
every other test of the session out.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.helpers import failure, unique_email
from tollgate.v1 import account_pb2, auth_pb2, operator_pb2

PASSWORD = "throttle-pass-1"
LOCK_SECONDS = 3


@pytest.fixture(scope="module")
def per_login(server_factory):
    """5 free failures, then 1 s, 2 s…; locked for LOCK_SECONDS at the 8th. No per-source limit."""
    return server_factory(login_free_attempts=5, login_max_attempts=8,
                          login_lock_seconds=LOCK_SECONDS)


def _account(stubs) -> account_pb2.Account:
    return stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("throttle"), password=PASSWORD)), metadata=stubs.metadata)


def _login(stubs, who: str, password: str) -> grpc.StatusCode:
    try:
        stubs.auth.Login(auth_pb2.LoginRequest(login=who, password=password))
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _retry_delay(stubs, who: str) -> float:
    try:
        stubs.auth.Login(auth_pb2.LoginRequest(login=who, password=PASSWORD))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for detail in rpc_status.from_call(err).details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("not throttled")


def _wait_unlocked(stubs, who: str) -> None:
    time.sleep(_retry_delay(stubs, who) + 0.1)


@pytest.mark.parametrize("known", [True, False], ids=["known login", "unknown login"])
def test_failures_lock_the_login_exponentially_then_for_the_lock_time(per_login, connect, known):
    stubs = connect(per_login)
    who = _account(stubs).email if known else unique_email("nobody")
    assert [_login(stubs, who, "wrong") for _ in range(5)] == [grpc.StatusCode.UNAUTHENTICATED] * 5
    assert _login(stubs, who, "wrong") == grpc.StatusCode.UNAUTHENTICATED  # the 6th failure: locked 1 s
    assert 0 < _retry_delay(stubs, who) <= 1  # even the right password waits: nothing is checked meanwhile
    _wait_unlocked(stubs, who)
    assert _login(stubs, who, "wrong") == grpc.StatusCode.UNAUTHENTICATED  # the 7th: 2 s
    assert 1 < _retry_delay(stubs, who) <= 2
    _wait_unlocked(stubs, who)
    assert _login(stubs, who, "wrong") == grpc.StatusCode.UNAUTHENTICATED  # the 8th: the full lock
    assert LOCK_SECONDS - 1 < _retry_delay(stubs, who) <= LOCK_SECONDS
    # 200 more guesses get nowhere, and cost no password check.
    started = time.monotonic()
    assert {_login(stubs, who, "wrong") for _ in range(200)} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert time.monotonic() - started < 10
    assert _login(stubs, who, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_operators_see_the_lock_and_can_clear_it(per_login, connect):
    stubs = connect(per_login)
    account = _account(stubs)
    for _ in range(6):  # in any case: the count is per login, whatever its spelling
        _login(stubs, account.email.upper(), "wrong")
    assert _login(stubs, account.email, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED
    locks = stubs.operators.ListLoginLocks(operator_pb2.ListLoginLocksRequest(locked_only=True),
                                           metadata=stubs.metadata).locks
    mine = [lock for lock in locks if lock.key == account.email.lower()]
    assert len(mine) == 1 and mine[0].kind == "login" and mine[0].failures >= 6 and mine[0].HasField("locked_until")
    stubs.operators.ClearLoginLock(operator_pb2.ClearLoginLockRequest(kind="login", key=account.email),
                                   metadata=stubs.metadata)
    assert _login(stubs, account.email, PASSWORD) == grpc.StatusCode.OK
    missing = failure(lambda: stubs.operators.ClearLoginLock(operator_pb2.ClearLoginLockRequest(
        kind="login", key=account.email), metadata=stubs.metadata))
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_a_success_clears_the_logins_count(per_login, connect):
    stubs = connect(per_login)
    account = _account(stubs)
    for _ in range(5):
        _login(stubs, account.email, "wrong")
    assert _login(stubs, account.email, PASSWORD) == grpc.StatusCode.OK
    assert [_login(stubs, account.email, "wrong") for _ in range(5)] == [grpc.StatusCode.UNAUTHENTICATED] * 5


def test_failures_are_counted_per_source_across_logins(server_factory, connect):
    server = server_factory(login_source_free_attempts=3, login_source_max_attempts=4,
                            login_lock_seconds=60)
    stubs = connect(server)
    account = _account(stubs)
    for _ in range(4):  # four different logins from one address
        assert _login(stubs, unique_email("spray"), "wrong") == grpc.StatusCode.UNAUTHENTICATED
    # The address is locked: even a good login from it waits.
    assert _login(stubs, account.email, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED
    locks = stubs.operators.ListLoginLocks(operator_pb2.ListLoginLocksRequest(), metadata=stubs.metadata).locks
    assert [lock.key for lock in locks if lock.kind == "source"] == ["127.0.0.1"]
    stubs.operators.ClearLoginLock(operator_pb2.ClearLoginLockRequest(kind="source", key="127.0.0.1"),
                                   metadata=stubs.metadata)
    assert _login(stubs, account.email, PASSWORD) == grpc.StatusCode.OK


def test_unknown_and_known_logins_cost_the_same(server_factory, connect):
    """No login oracle: a wrong password took 233 ms and an unknown login 3 ms; both now check one hash."""
    server = server_factory(login_free_attempts=100, login_max_attempts=200)
    stubs = connect(server)
    known = _account(stubs).email

    def timed(who: str) -> float:
        started = time.monotonic()
        assert _login(stubs, who, "wrong-password") == grpc.StatusCode.UNAUTHENTICATED
        return time.monotonic() - started

    rounds = [(timed(known), timed(unique_email("ghost"))) for _ in range(7)]
    known_median = statistics.median(k for k, _ in rounds)
    unknown_median = statistics.median(u for _, u in rounds)
    assert 0.5 < unknown_median / known_median < 2, (known_median, unknown_median)


def test_password_checks_are_bounded(server_factory, connect):
    """One check at a time and two waiting: a flood of twelve gets most of itself refused at once."""
    server = server_factory(password_checks=1, password_checks_waiting=2,
                            login_free_attempts=1000, login_max_attempts=1000)
    stubs = connect(server)
    who = _account(stubs).email
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: _login(stubs, who, "wrong"), range(12)))
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED}
    assert _login(stubs, who, PASSWORD) == grpc.StatusCode.OK
