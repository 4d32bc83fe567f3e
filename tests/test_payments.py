"""Payments and charges: PostgreSQL's balance at once, the switch's live balance right after, once each."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from callstate.store import CallState
from tests.helpers import unique_email
from tollgate.v1 import account_pb2 as apb

EUR = 1_000_000


def _customer(admin) -> str:
    created = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("pay"))), metadata=admin.metadata)
    return created.name


def _pay(admin, account: str, amount: int, **more) -> apb.Payment:
    return admin.accounts.PostPayment(apb.PostPaymentRequest(account=account, amount=amount, **more),
                                      metadata=admin.metadata)


def _live_available(money: CallState, number: str, expected: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (value := money.available(number, 0)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_a_payment_moves_postgresql_at_once_and_the_switch_right_after(admin, control_server, redis_client):
    account = _customer(admin)
    number = account.split("/", 1)[1]
    money = CallState(redis_client, control_server.keys.namespace)
    payment = _pay(admin, account, 25 * EUR, note="bank transfer 4711")
    assert (payment.account, payment.amount, payment.balance_after) == (account, 25 * EUR, 25 * EUR)
    assert payment.name.startswith("payments/") and payment.create_time.seconds > 0
    charge = _pay(admin, account, -5 * EUR, note="DID setup fee")
    assert charge.balance_after == 20 * EUR
    got = admin.accounts.GetAccount(apb.GetAccountRequest(name=account), metadata=admin.metadata)
    assert got.balance == 20 * EUR
    assert _live_available(money, number, 20 * EUR) == 20 * EUR  # the switch may now spend it


def test_a_retried_payment_with_the_same_request_id_pays_once(admin, control_server, redis_client):
    account = _customer(admin)
    number = account.split("/", 1)[1]
    key = secrets.token_hex(8)
    first = _pay(admin, account, 7 * EUR, request_id=key)
    again = _pay(admin, account, 7 * EUR, request_id=key)
    assert again == first
    assert _live_available(CallState(redis_client, control_server.keys.namespace), number, 7 * EUR) == 7 * EUR
    with pytest.raises(grpc.RpcError) as caught:
        _pay(admin, account, 8 * EUR, request_id=key)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in caught.value.details()


def test_concurrent_retries_of_one_request_id_all_return_the_first_payment(admin, control_server, redis_client):
    """A client that times out and retries from several workers at once: every attempt lands together, and
    each must get the one payment back - not a second payment, not a unique-violation error."""
    account = _customer(admin)
    number = account.split("/", 1)[1]
    key = secrets.token_hex(8)
    attempts = 8
    start = threading.Barrier(attempts)

    def attempt(_: int) -> apb.Payment:
        start.wait()
        return _pay(admin, account, 3 * EUR, request_id=key)

    with ThreadPoolExecutor(attempts) as pool:
        payments = list(pool.map(attempt, range(attempts)))
    assert all(payment == payments[0] for payment in payments), {p.name for p in payments}
    assert payments[0].balance_after == 3 * EUR
    got = admin.accounts.GetAccount(apb.GetAccountRequest(name=account), metadata=admin.metadata)
    assert got.balance == 3 * EUR
    assert _live_available(CallState(redis_client, control_server.keys.namespace), number, 3 * EUR) == 3 * EUR


@pytest.mark.parametrize(("amount", "field"), [(0, "amount"), (10**13, "amount")])
def test_a_bad_amount_is_refused_naming_the_field(admin, amount, field):
    account = _customer(admin)
    with pytest.raises(grpc.RpcError) as caught:
        _pay(admin, account, amount)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in caught.value.details()


def test_unknown_and_deleted_accounts_take_no_payment(admin):
    with pytest.raises(grpc.RpcError) as caught:
        _pay(admin, "accounts/0000000001", EUR)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    account = _customer(admin)
    admin.accounts.DeleteAccounts(apb.DeleteAccountsRequest(names=[account]), metadata=admin.metadata)
    with pytest.raises(grpc.RpcError) as caught:
        _pay(admin, account, EUR)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_the_live_balance_moves_once_per_payment_id(redis_client):
    namespace = f"tgpay{secrets.token_hex(3)}"
    money = CallState(redis_client, namespace)
    try:
        assert money.apply_payment("5001", 41, 3 * EUR) is True
        assert money.apply_payment("5001", 41, 3 * EUR) is False  # pushed again after a crash: nothing moves
        assert money.apply_payment("5001", 42, -EUR) is True
        assert money.available("5001", 0) == 2 * EUR
    finally:
        for key in redis_client.scan_iter(f"{namespace}:*"):
            redis_client.delete(key)
