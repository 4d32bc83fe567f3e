"""ListAccounts filters and paging, and the CSV export sharing the same filter (SPEC §2)."""

from __future__ import annotations

import csv
import io
import uuid

import grpc
import pytest

from tests.helpers import failure, forged_page_tokens, unique_email
from tollgate.v1 import account_pb2 as pb


@pytest.fixture(scope="module")
def tagged(admin):
    """Seven accounts whose company carries a tag unique to this module run."""
    tag = uuid.uuid4().hex[:8]
    specs = [
        dict(type=pb.PROVIDER, profile=pb.Profile(company=f"{tag} Carrier A", first_name="Ann")),
        dict(type=pb.PROVIDER, profile=pb.Profile(company=f"{tag} Carrier B", first_name="Bob"),
             status=pb.INACTIVE),
        dict(profile=pb.Profile(company=f"=cmd|' /C calc'!A0 {tag}", first_name="@evil", city="-2+3")),
        dict(profile=pb.Profile(company=f"{tag} Retail", last_name="Smith"),
             billing=pb.Billing(account_type=pb.POSTPAID, credit_limit=10_000_000)),
        dict(profile=pb.Profile(company=f"{tag} Retail 2", last_name="Smithers")),
        dict(profile=pb.Profile(company=f"{tag} Retail 3")),
        dict(profile=pb.Profile(company=f"{tag} Retail 4")),
    ]
    created = [
        admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(email=unique_email(tag), **s)),
                                     metadata=admin.metadata)
        for s in specs
    ]
    return tag, created


def list_all(admin, filter_text: str, page_size: int = 0, show_deleted: bool = False) -> list[pb.Account]:
    found, token = [], ""
    while True:
        page = admin.accounts.ListAccounts(
            pb.ListAccountsRequest(filter=filter_text, page_size=page_size, page_token=token,
                                   show_deleted=show_deleted),
            metadata=admin.metadata)
        found += page.accounts
        token = page.next_page_token
        if not token:
            return found


def numbers(accounts) -> list[str]:
    return [a.account_number for a in accounts]


@pytest.mark.parametrize(("clause", "expected_indexes"), [
    ("type = PROVIDER", [0, 1]),
    ("type = provider AND status = ACTIVE", [0]),
    ("status != ACTIVE", [1]),
    ("account_type = POSTPAID", [3]),
    ('company : "retail"', [3, 4, 5, 6]),
    ("name : smith", [3, 4]),
    ("name : ann", [0]),
])
def test_filters_select_the_right_accounts(admin, tagged, clause, expected_indexes):
    tag, created = tagged
    result = list_all(admin, f"company : {tag} AND {clause}")
    assert numbers(result) == [created[i].account_number for i in expected_indexes]


def test_email_and_number_filters(admin, tagged):
    _, created = tagged
    assert numbers(list_all(admin, f"email = {created[2].email.upper()}")) == [created[2].account_number]
    assert numbers(list_all(admin, f"account_number = {created[5].account_number}")) == [created[5].account_number]


def test_balance_and_create_time_filters(admin, tagged):
    tag, _ = tagged
    assert len(list_all(admin, f"company : {tag} AND balance >= 0 AND balance <= 0")) == 7
    assert list_all(admin, f"company : {tag} AND balance > 0") == []
    assert list_all(admin, f"company : {tag} AND create_time < 2000-01-01T00:00:00Z") == []
    assert len(list_all(admin, f"company : {tag} AND create_time >= 2000-01-01T00:00:00Z")) == 7


def test_paging_walks_every_account_once_in_order(admin, tagged):
    tag, created = tagged
    first = admin.accounts.ListAccounts(pb.ListAccountsRequest(filter=f"company : {tag}", page_size=3),
                                        metadata=admin.metadata)
    assert len(first.accounts) == 3 and first.next_page_token and first.total_size == 7
    assert numbers(list_all(admin, f"company : {tag}", page_size=3)) == numbers(created)
    assert numbers(list_all(admin, f"company : {tag}", page_size=7)) == numbers(created)


def test_page_token_is_bound_to_its_filter(admin, tagged):
    tag, _ = tagged
    first = admin.accounts.ListAccounts(pb.ListAccountsRequest(filter=f"company : {tag}", page_size=2),
                                        metadata=admin.metadata)
    other = failure(lambda: admin.accounts.ListAccounts(
        pb.ListAccountsRequest(filter="type = PROVIDER", page_token=first.next_page_token), metadata=admin.metadata))
    assert (other.code, other.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])
    garbage = failure(lambda: admin.accounts.ListAccounts(pb.ListAccountsRequest(page_token="%%%"),
                                                          metadata=admin.metadata))
    assert garbage.fields == ["page_token"]
    # Tokens are sealed with the server's key: a changed or made-up one is refused, not an INTERNAL error.
    for forged in forged_page_tokens(first.next_page_token):
        result = failure(lambda t=forged: admin.accounts.ListAccounts(pb.ListAccountsRequest(
            filter=f"company : {tag}", page_size=2, page_token=t), metadata=admin.metadata))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"]), forged[:40]


def test_money_filters_take_currency_units(admin):
    """`balance > 1` is one unit of the company's currency (1.00), not one micro."""
    tag = uuid.uuid4().hex[:8]
    account = admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(
        email=unique_email(tag), profile=pb.Profile(company=tag))), metadata=admin.metadata)
    admin.accounts.PostPayment(pb.PostPaymentRequest(account=account.name, amount=1_500_000),
                               metadata=admin.metadata)
    for clause, found in [("balance > 1", 1), ("balance = 1.50", 1), ("balance > 1.5", 0), ("balance >= 1.500001", 0),
                          ("balance < 2", 1), ("balance > 1000", 0), ("balance != 1.5", 0)]:
        assert len(list_all(admin, f"company = {tag} AND {clause}")) == found, clause


@pytest.mark.parametrize("bad", ["colour = red", "type = ROBOT", "balance > lots", "company", "type = A AND",
                                 "create_time > yesterday", "balance : 5", "company > x", "balance > 1.0000001",
                                 "balance > 1e30", "balance > NaN", "type == PROVIDER", "balance => 1"])
def test_bad_filters_name_the_filter_field(admin, bad):
    result = failure(lambda: admin.accounts.ListAccounts(pb.ListAccountsRequest(filter=bad),
                                                         metadata=admin.metadata))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"])


@pytest.mark.parametrize("operator", ["==", "=>", "=<", "<>", "~"])
def test_an_unknown_operator_is_named_not_read_as_part_of_the_value(admin, operator):
    result = failure(lambda: admin.accounts.ListAccounts(pb.ListAccountsRequest(filter=f"type {operator} PROVIDER"),
                                                         metadata=admin.metadata))
    assert result.fields == ["filter"]
    assert f"unknown operator '{operator}'" in result.message
    assert "= != < <= > >= :" in result.message and "must be one of" not in result.message


def test_negative_page_size_is_invalid(admin):
    result = failure(lambda: admin.accounts.ListAccounts(pb.ListAccountsRequest(page_size=-1),
                                                         metadata=admin.metadata))
    assert result.fields == ["page_size"]


def export(admin, filter_text: str, show_deleted: bool = False) -> list[dict]:
    chunks = admin.accounts.ExportAccountsCsv(pb.ExportAccountsCsvRequest(filter=filter_text,
                                                                         show_deleted=show_deleted),
                                              metadata=admin.metadata)
    text = b"".join(c.data for c in chunks).decode()
    assert text.startswith("account_number,type,") and "\r\n" in text
    return list(csv.DictReader(io.StringIO(text)))


def test_export_equals_the_filtered_list(admin, tagged):
    tag, _ = tagged
    for clause in ("", " AND type = PROVIDER", ' AND company : "retail"'):
        listed = list_all(admin, f"company : {tag}{clause}")
        exported = export(admin, f"company : {tag}{clause}")
        assert [r["account_number"] for r in exported] == numbers(listed)


def test_export_neutralises_formula_cells_and_prints_money(admin, tagged):
    tag, created = tagged
    rows = {r["account_number"]: r for r in export(admin, f"company : {tag}")}
    evil = rows[created[2].account_number]
    assert evil["company"] == f"'=cmd|' /C calc'!A0 {tag}"
    assert (evil["first_name"], evil["city"]) == ("'@evil", "'-2+3")
    assert rows[created[0].account_number]["company"] == f"{tag} Carrier A"  # plain text untouched
    postpaid = rows[created[3].account_number]
    assert (postpaid["credit_limit"], postpaid["balance"]) == ("10.0000", "0.0000")


def test_deleted_accounts_only_with_show_deleted(admin, tagged):
    tag = uuid.uuid4().hex[:8]
    account = admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(
        email=unique_email(), profile=pb.Profile(company=f"{tag} gone"))), metadata=admin.metadata)
    admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[account.name]), metadata=admin.metadata)
    assert list_all(admin, f"company : {tag}") == []
    assert numbers(list_all(admin, f"company : {tag}", show_deleted=True)) == [account.account_number]
    assert export(admin, f"company : {tag}") == []
    exported = export(admin, f"company : {tag}", show_deleted=True)
    assert exported[0]["delete_time"] != ""
