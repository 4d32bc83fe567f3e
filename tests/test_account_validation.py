"""Every validation rule of SPEC §2 answers INVALID_ARGUMENT naming the field, and stores nothing."""

from __future__ import annotations

import grpc
import pytest

from tests.helpers import failure, unique_email
from tollgate.v1 import account_pb2 as pb

P, S, B = pb.Profile, pb.AccountSettings, pb.Billing

CASES = [
    ("email missing", dict(email=""), "email"),
    ("email malformed", dict(email="not-an-email"), "email"),
    ("notification email malformed", dict(profile=P(notification_email="x@")), "profile.notification_email"),
    ("password short", dict(password="short"), "password"),
    ("custom number too short", dict(account_number="abc"), "account_number"),
    ("custom number too long", dict(account_number="A" * 21), "account_number"),
    ("custom number bad chars", dict(account_number="ab-123"), "account_number"),
    ("pin not digits", dict(pin="12ab56"), "pin"),
    ("pin wrong length", dict(pin="1234"), "pin"),
    ("unknown country", dict(profile=P(country="XX")), "profile.country"),
    ("country alpha-3", dict(profile=P(country="GBR")), "profile.country"),
    ("unknown timezone", dict(profile=P(timezone="Mars/Olympus")), "profile.timezone"),
    ("credit limit on prepaid", dict(billing=B(account_type=pb.PREPAID, credit_limit=1)), "billing.credit_limit"),
    ("credit limit negative", dict(billing=B(account_type=pb.POSTPAID, credit_limit=-5)), "billing.credit_limit"),
    ("billing day 29", dict(billing=B(billing_day=29)), "billing.billing_day"),
    ("billing day negative", dict(billing=B(billing_day=-1)), "billing.billing_day"),
    ("cli pool out of range", dict(billing=B(cli_pool=9)), "billing.cli_pool"),
    ("non-cli group needed", dict(billing=B(cli_pool=pb.CLI_POOL_NON_CLI_RATE_GROUP_IF_NOT_DID)),
     "billing.non_cli_rate_group"),
    ("rate group malformed", dict(billing=B(rate_group="gold")), "billing.rate_group"),
    ("rate group unknown", dict(billing=B(rate_group="rateGroups/no-such-group")), "billing.rate_group"),
    ("localization unknown", dict(settings=S(localization="localizations/none")), "settings.localization"),
    ("negative concurrent calls", dict(settings=S(max_concurrent_calls=-1)), "settings.max_concurrent_calls"),
    ("negative cps", dict(settings=S(cps=-2)), "settings.cps"),
    ("negative local call charge", dict(settings=S(lc_charge_per_min=-1)), "settings.lc_charge_per_min"),
    ("overlong company", dict(profile=P(company="x" * 256)), "profile.company"),
    ("unknown type", dict(type=7), "type"),
    ("unknown status", dict(status=9), "status"),
]


@pytest.mark.parametrize(("fields", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_create_rejects_with_the_field_named(admin, fields, field):
    fields = {"email": unique_email("bad"), **fields}
    result = failure(lambda: admin.accounts.CreateAccount(
        pb.CreateAccountRequest(account=pb.Account(**fields)), metadata=admin.metadata))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT, result.message
    assert result.fields == [field]
    assert result.reason == "INVALID_ARGUMENT"
    assert field in result.message
    if fields["email"]:
        listed = admin.accounts.ListAccounts(pb.ListAccountsRequest(filter=f'email = "{fields["email"]}"',
                                                                    show_deleted=True), metadata=admin.metadata)
        assert listed.accounts == []  # nothing was stored


def test_create_needs_the_account_message(admin):
    result = failure(lambda: admin.accounts.CreateAccount(pb.CreateAccountRequest(), metadata=admin.metadata))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["account"])


def test_bad_resource_name(admin):
    result = failure(lambda: admin.accounts.GetAccount(pb.GetAccountRequest(name="customers/1"),
                                                        metadata=admin.metadata))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["name"])


def test_update_validates_the_merged_account(admin):
    account = admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(email=unique_email())),
                                           metadata=admin.metadata)
    result = failure(lambda: admin.accounts.UpdateAccount(
        pb.UpdateAccountRequest(account=pb.Account(name=account.name, profile=P(timezone="Nowhere/Land"))),
        metadata=admin.metadata))
    assert result.fields == ["profile.timezone"]
    unchanged = admin.accounts.GetAccount(pb.GetAccountRequest(name=account.name), metadata=admin.metadata)
    assert unchanged.profile.timezone == "UTC"


def test_valid_values_are_normalised(admin):
    account = admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(
        email="Someone.Else@EXAMPLE.com".replace("Else", unique_email("n").split("@")[0]),
        profile=P(country="de", timezone="Europe/Berlin"))), metadata=admin.metadata)
    assert account.profile.country == "DE"
    assert account.email.endswith("@example.com")
