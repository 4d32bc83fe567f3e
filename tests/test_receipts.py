"""Receipts (SPEC §10): one for every payment and non-call charge, made in the transaction that posts it,
numbered RCT_000001... without gaps in a series of their own; ReceiptService and `tollgate-admin receipts`."""

from __future__ import annotations

import secrets
import threading

import grpc
import psycopg
import pytest
from psycopg.rows import dict_row

from control.access.principals import operator
from control.billing import payments
from tests.helpers import failure, ok, ok_json, unique_email
from tollgate.v1 import account_pb2, auth_pb2, receipt_pb2

EUR = 1_000_000
PASSWORD = "receipt-reader-pass"


def customer(admin, **account) -> account_pb2.Account:
    return admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("rct"), password=PASSWORD, **account)), metadata=admin.metadata)


def pay(admin, account: account_pb2.Account, amount: int, **more) -> account_pb2.Payment:
    return admin.accounts.PostPayment(account_pb2.PostPaymentRequest(account=account.name, amount=amount, **more),
                                      metadata=admin.metadata)


def get(stubs, name: str, metadata: tuple | None = None) -> receipt_pb2.Receipt:
    return stubs.receipts.GetReceipt(receipt_pb2.GetReceiptRequest(name=name), metadata=metadata or stubs.metadata)


def list_all(stubs, filter_text: str = "", metadata: tuple | None = None, page_size: int = 0) -> list:
    found, token = [], ""
    for _ in range(1_000):
        page = stubs.receipts.ListReceipts(receipt_pb2.ListReceiptsRequest(
            filter=filter_text, page_token=token, page_size=page_size), metadata=metadata or stubs.metadata)
        found += page.receipts
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("paging never ended")


def serial(number: str) -> int:
    assert number.startswith("RCT_") and len(number) == 10, number
    return int(number[4:])


def test_every_payment_and_charge_gets_its_receipt_as_it_is_posted(admin):
    account = customer(admin)
    paid = pay(admin, account, 25 * EUR, note="bank ref 4711")
    charged = pay(admin, account, -5 * EUR, note="DID setup fee")
    receipt = get(admin, paid.receipt)
    assert (receipt.account, receipt.payment) == (account.name, paid.name)
    assert receipt.kind == receipt_pb2.RECEIPT_KIND_PAYMENT
    assert (receipt.amount, receipt.balance_after, receipt.note) == (25 * EUR, 25 * EUR, "bank ref 4711")
    assert receipt.name == f"receipts/{receipt.number}" and receipt.create_time == paid.create_time
    fee = get(admin, charged.receipt)
    assert (fee.kind, fee.amount, fee.balance_after) == (receipt_pb2.RECEIPT_KIND_CHARGE, 5 * EUR, 20 * EUR)
    assert serial(fee.number) == serial(receipt.number) + 1


def test_a_retried_request_id_makes_no_second_receipt(admin, control_server):
    account = customer(admin)
    key = secrets.token_hex(8)
    first = pay(admin, account, 7 * EUR, request_id=key)
    assert pay(admin, account, 7 * EUR, request_id=key).receipt == first.receipt
    assert [r.name for r in list_all(admin, f"account = {account.account_number}")] == [first.receipt]


def test_numbers_have_no_gap_under_concurrent_payments_and_rollbacks(admin, control_server):
    accounts = [customer(admin) for _ in range(4)]
    with psycopg.connect(control_server.dsn, row_factory=dict_row) as conn:
        before = conn.execute("SELECT last_number FROM receipt_counter").fetchone()["last_number"]
        # A payment whose transaction fails after its receipt was made gives the number back.
        with conn.transaction(force_rollback=True):
            request = account_pb2.PostPaymentRequest(account=accounts[0].name, amount=EUR)
            rolled_back = payments.post(conn, operator("test", "billing"), request)
        assert serial(rolled_back.receipt.removeprefix("receipts/")) == before + 1
    made: list[account_pb2.Payment] = []

    def post(account: account_pb2.Account) -> None:
        for _ in range(3):
            made.append(pay(admin, account, 2 * EUR))

    threads = [threading.Thread(target=post, args=(a,)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(serial(p.receipt.removeprefix("receipts/")) for p in made)
    assert numbers == list(range(before + 1, before + 1 + len(made)))  # the rolled-back number was reused
    for payment in made:  # each receipt is its own payment's
        assert get(admin, payment.receipt).payment == payment.name


def test_a_refused_payment_burns_no_number(admin):
    account = customer(admin)
    first = pay(admin, account, EUR)
    admin.accounts.DeleteAccounts(account_pb2.DeleteAccountsRequest(names=[account.name]), metadata=admin.metadata)
    assert failure(lambda: pay(admin, account, EUR)).code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure(lambda: pay(admin, account, 0)).code == grpc.StatusCode.INVALID_ARGUMENT
    other = pay(admin, customer(admin), EUR)
    assert serial(other.receipt[9:]) == serial(first.receipt[9:]) + 1


@pytest.fixture(scope="module")
def two_accounts(admin) -> dict:
    mine, theirs = customer(admin), customer(admin)
    for amount in (10 * EUR, -2 * EUR, 3 * EUR):
        pay(admin, mine, amount)
    pay(admin, theirs, 4 * EUR)
    token = admin.auth.Login(auth_pb2.LoginRequest(login=mine.email, password=PASSWORD)).token
    return {"mine": mine, "theirs": theirs, "token": (("authorization", f"Bearer {token}"),)}


def test_listing_filters_and_pages_in_number_order(admin, two_accounts):
    mine = two_accounts["mine"]
    listed = list_all(admin, f"account = {mine.account_number}", page_size=1)
    assert [r.amount for r in listed] == [10 * EUR, 2 * EUR, 3 * EUR]
    assert [serial(r.number) for r in listed] == sorted(serial(r.number) for r in listed)
    assert list_all(admin, f"account = {mine.account_number} AND kind = CHARGE") == [listed[1]]
    assert list_all(admin, f"number = {listed[2].number}") == [listed[2]]
    assert list_all(admin, f"account = {mine.account_number} AND amount >= 3") == [listed[0], listed[2]]  # units
    for bad in ("colour = red", "kind = REFUND", "amount > lots"):
        result = failure(lambda b=bad: list_all(admin, b))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"]), bad


def test_an_account_token_sees_only_its_own_receipts(admin, two_accounts):
    mine, theirs, token = two_accounts["mine"], two_accounts["theirs"], two_accounts["token"]
    own = list_all(admin, metadata=token)
    assert {r.account for r in own} == {mine.name} and len(own) == 3
    assert get(admin, own[0].name, token) == own[0]
    (other,) = list_all(admin, f"account = {theirs.account_number}")
    # A filter asking for another account is refused, whether that account exists or not.
    for number in (theirs.account_number, "Nobody123"):
        refused = failure(lambda n=number: list_all(admin, f"account = {n}", metadata=token))
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    for name in (other.name, "receipts/RCT_999999"):
        result = failure(lambda n=name: get(admin, n, token))
        assert (result.code, result.message) == (grpc.StatusCode.NOT_FOUND,
                                                 f"receipt {name.removeprefix('receipts/')} not found")
    for bad in ("RCT_000001", "receipts/", "invoices/INV_000001"):
        result = failure(lambda b=bad: get(admin, b))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["name"]), bad


def test_cli_lists_and_shows_receipts_and_pay_names_the_receipt(cli, admin, company_decimals):
    company_decimals(2)
    account = customer(admin)
    shown = ok(cli("accounts", "pay", account.account_number, "12.50", "--note", "wire 88"))
    receipt_line = next(line for line in shown.splitlines() if line.startswith("receipt"))
    number = receipt_line.split()[-1].removeprefix("receipts/")
    table = ok(cli("receipts", "list", "--account", account.account_number)).splitlines()
    assert table[0].split()[:3] == ["number", "account", "kind"]
    assert table[2].split()[:4] == [number, account.account_number, "PAYMENT", "12.50"]
    detail = ok(cli("receipts", "get", number))
    assert "wire 88" in detail and "12.50" in detail and "payments/" in detail
    (as_json,) = ok_json(cli("receipts", "list", "--account", account.account_number, "--json"))
    assert (as_json["number"], as_json["amount"]) == (number, "12500000")
    missing = cli("receipts", "get", "RCT_999999")
    assert missing.returncode == 4 and "NOT_FOUND" in missing.stderr
