"""AccountService over a real gRPC server and PostgreSQL (SPEC §2, §11)."""

from __future__ import annotations

import hashlib
import re

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.helpers import failure, unique_email, unique_number
from tollgate.v1 import account_pb2 as pb


def create(admin, **fields) -> pb.Account:
    fields.setdefault("email", unique_email())
    return admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(**fields)), metadata=admin.metadata)


def get(admin, name: str) -> pb.Account:
    return admin.accounts.GetAccount(pb.GetAccountRequest(name=name), metadata=admin.metadata)


def update(admin, account: pb.Account, paths: list[str] | None = None) -> pb.Account:
    mask = field_mask_pb2.FieldMask(paths=paths) if paths is not None else None
    return admin.accounts.UpdateAccount(pb.UpdateAccountRequest(account=account, update_mask=mask),
                                        metadata=admin.metadata)


def full_account(rate_group: str | None = None) -> pb.Account:
    expiry = timestamp_pb2.Timestamp(seconds=2_000_000_000)
    return pb.Account(
        account_number=unique_number(),
        type=pb.CUSTOMER,
        password="correct horse",
        pin="",
        email=unique_email("full"),
        settings=pb.AccountSettings(
            max_concurrent_calls=30, cps=5, allow_local_calls=True, notifications=True,
            payment_gateway_permission=True, allow_loss_less_routing=True, lc_charge_per_min=12_500,
            allow_recording=True,
        ),
        profile=pb.Profile(
            first_name="Ada", last_name="Lovelace", company="Analytical Ltd", phone="+44 20 7946 0000",
            notification_email="billing@analytical.example", address1="12 Engine St", address2="Floor 2",
            city="London", province="Greater London", zip="N1 9GU", country="GB", timezone="Europe/London",
        ),
        billing=pb.Billing(
            account_type=pb.POSTPAID, credit_limit=250_000_000, cli_pool=pb.CLI_POOL_REJECT_IF_NOT_DID,
            tax_number="GB123456789", generate_zero_invoice=True, invoice_note="Net 30", reference="crm-42",
            billing_day=15, invoice_with_cdr=pb.INVOICE_WITH_CDR_CSV,
        ),
        status=pb.ACTIVE,
        expire_time=expiry,
    )


# ------------------------------------------------------------------------------------------ create / get


def test_customer_with_every_field_reads_back(admin):
    sent = full_account()
    created = create(admin, **{f.name: v for f, v in sent.ListFields()})
    read = get(admin, created.name)
    assert read.name == f"accounts/{sent.account_number}"
    for part in ("settings", "profile", "billing", "expire_time"):
        assert getattr(read, part) == getattr(sent, part), part
    assert read.email == sent.email and read.type == pb.CUSTOMER and read.status == pb.ACTIVE
    assert read.password == "" and read.balance == 0 and read.create_time.seconds > 0
    assert re.fullmatch(r"\d{6}", read.pin)


def test_provider_is_an_account_on_the_same_list(admin):
    provider = create(admin, type=pb.PROVIDER, profile=pb.Profile(company="Carrier One"))
    assert get(admin, provider.name).type == pb.PROVIDER
    listed = admin.accounts.ListAccounts(
        pb.ListAccountsRequest(filter=f"account_number = {provider.account_number}"), metadata=admin.metadata
    )
    assert [a.type for a in listed.accounts] == [pb.PROVIDER]


def test_generated_number_is_ten_digits_not_starting_with_zero(admin):
    numbers = {create(admin).account_number for _ in range(5)}
    assert len(numbers) == 5
    assert all(re.fullmatch(r"[1-9]\d{9}", n) for n in numbers)


def test_custom_number_is_kept_and_never_reused(admin):
    number = unique_number()
    account = create(admin, account_number=number)
    assert account.account_number == number
    again = failure(lambda: create(admin, account_number=number.lower()))
    assert (again.code, again.fields) == (grpc.StatusCode.ALREADY_EXISTS, ["account_number"])
    admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[account.name]), metadata=admin.metadata)
    after_delete = failure(lambda: create(admin, account_number=number))
    assert after_delete.code == grpc.StatusCode.ALREADY_EXISTS


def test_email_and_pin_are_unique_among_live_accounts(admin):
    first = create(admin, pin="")
    dup_email = failure(lambda: create(admin, email=first.email.upper()))
    assert (dup_email.code, dup_email.fields) == (grpc.StatusCode.ALREADY_EXISTS, ["email"])
    dup_pin = failure(lambda: create(admin, pin=first.pin))
    assert (dup_pin.code, dup_pin.fields) == (grpc.StatusCode.ALREADY_EXISTS, ["pin"])
    admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[first.name]), metadata=admin.metadata)
    reuse = create(admin, email=first.email, pin=first.pin)  # a deleted account frees both
    assert reuse.email == first.email


def test_sip_device_is_created_with_digest_credentials_only(admin, control_server):
    account = create(admin, create_sip_device=True, password="portal-pass-1")
    assert account.sip_devices == [account.account_number]
    assert len(account.sip_device_password) >= 20
    assert get(admin, account.name).sip_device_password == ""  # shown once
    with psycopg.connect(control_server.dsn) as conn:
        ha1, realm = conn.execute("SELECT ha1, realm FROM sip_devices WHERE username = %s",
                                  (account.account_number,)).fetchone()
        pw_hash = conn.execute("SELECT password_hash FROM accounts WHERE account_number = %s",
                               (account.account_number,)).fetchone()[0]
    expected = hashlib.md5(f"{account.account_number}:{realm}:{account.sip_device_password}".encode()).hexdigest()
    assert ha1 == expected
    assert pw_hash.startswith("$argon2id$") and "portal-pass-1" not in pw_hash


def test_no_sip_device_unless_asked(admin):
    assert create(admin).sip_devices == []


def test_company_default_invoice_with_cdr_applies_at_creation(admin):
    from tollgate.v1 import company_pb2

    original = admin.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=admin.metadata)
    admin.company.UpdateCompany(
        company_pb2.UpdateCompanyRequest(company=company_pb2.Company(invoice_with_cdr=pb.INVOICE_WITH_CDR_PDF),
                                         update_mask=field_mask_pb2.FieldMask(paths=["invoice_with_cdr"])),
        metadata=admin.metadata,
    )
    try:
        assert create(admin).billing.invoice_with_cdr == pb.INVOICE_WITH_CDR_PDF
        explicit = create(admin, billing=pb.Billing(invoice_with_cdr=pb.INVOICE_WITH_CDR_NONE))
        assert explicit.billing.invoice_with_cdr == pb.INVOICE_WITH_CDR_NONE
    finally:
        admin.company.UpdateCompany(
            company_pb2.UpdateCompanyRequest(company=original,
                                             update_mask=field_mask_pb2.FieldMask(paths=["invoice_with_cdr"])),
            metadata=admin.metadata,
        )


# ---------------------------------------------------------------------------------------------- update


def test_update_with_mask_changes_only_masked_fields(admin):
    account = create(admin, profile=pb.Profile(city="Paris", company="Old Co"))
    change = pb.Account(name=account.name, profile=pb.Profile(city="Lyon", company="Ignored Co"))
    updated = update(admin, change, ["profile.city"])
    assert (updated.profile.city, updated.profile.company) == ("Lyon", "Old Co")
    assert updated.update_time.ToNanoseconds() > account.update_time.ToNanoseconds()


def test_update_without_mask_uses_populated_fields(admin):
    account = create(admin, profile=pb.Profile(city="Paris", company="Keep Co"),
                     settings=pb.AccountSettings(cps=3))
    updated = update(admin, pb.Account(name=account.name, settings=pb.AccountSettings(max_concurrent_calls=7)))
    assert (updated.settings.max_concurrent_calls, updated.settings.cps) == (7, 3)
    assert updated.profile.company == "Keep Co"


def test_update_can_clear_a_field_through_the_mask(admin):
    account = create(admin, profile=pb.Profile(company="Gone Co"), settings=pb.AccountSettings(cps=9))
    updated = update(admin, pb.Account(name=account.name), ["profile.company", "settings.cps"])
    assert (updated.profile.company, updated.settings.cps) == ("", 0)


def test_update_star_replaces_every_mutable_field(admin):
    account = create(admin, profile=pb.Profile(city="Rome"), settings=pb.AccountSettings(cps=4))
    replacement = pb.Account(name=account.name, email=unique_email("star"), pin=account.pin,
                             billing=pb.Billing(account_type=pb.PREPAID, billing_day=3,
                                                invoice_with_cdr=pb.INVOICE_WITH_CDR_NONE),
                             profile=pb.Profile(timezone="UTC"), status=pb.INACTIVE)
    updated = update(admin, replacement, ["*"])
    assert (updated.profile.city, updated.settings.cps, updated.status) == ("", 0, pb.INACTIVE)
    assert updated.billing.billing_day == 3 and updated.email == replacement.email


@pytest.mark.parametrize("path", ["account_number", "type", "balance", "name", "create_time"])
def test_update_refuses_immutable_fields(admin, path):
    account = create(admin)
    result = failure(lambda: update(admin, pb.Account(name=account.name), [path]))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"])


def test_update_unknown_mask_path_and_missing_account(admin):
    account = create(admin)
    unknown = failure(lambda: update(admin, pb.Account(name=account.name), ["profile.shoe_size"]))
    assert (unknown.code, unknown.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"])
    missing = failure(lambda: update(admin, pb.Account(name="accounts/NOPE0000", email=unique_email())))
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_switching_to_prepaid_needs_the_credit_limit_cleared(admin):
    account = create(admin, billing=pb.Billing(account_type=pb.POSTPAID, credit_limit=5_000_000))
    refused = failure(lambda: update(admin, pb.Account(name=account.name,
                                                       billing=pb.Billing(account_type=pb.PREPAID))))
    assert refused.fields == ["billing.credit_limit"]
    done = update(admin, pb.Account(name=account.name, billing=pb.Billing(account_type=pb.PREPAID)),
                  ["billing.account_type", "billing.credit_limit"])
    assert (done.billing.account_type, done.billing.credit_limit) == (pb.PREPAID, 0)


# ---------------------------------------------------------------------------------------------- delete


def test_delete_is_atomic_one_bad_name_deletes_nothing(admin):
    a, b = create(admin), create(admin)
    result = failure(lambda: admin.accounts.DeleteAccounts(
        pb.DeleteAccountsRequest(names=[a.name, "accounts/DOESNOTEXIST", b.name]), metadata=admin.metadata))
    assert result.code == grpc.StatusCode.NOT_FOUND
    assert not get(admin, a.name).HasField("delete_time")
    assert not get(admin, b.name).HasField("delete_time")


def test_delete_is_soft_and_removes_devices_and_login(admin, control_server):
    a = create(admin, create_sip_device=True, password="delete-me-1")
    b = create(admin)
    deleted = admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[a.name, b.name]),
                                            metadata=admin.metadata)
    assert sorted(x.name for x in deleted.accounts) == sorted([a.name, b.name])
    kept = get(admin, a.name)
    assert kept.HasField("delete_time") and kept.sip_devices == []
    with psycopg.connect(control_server.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM accounts WHERE account_number = %s",
                            (a.account_number,)).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM sip_devices WHERE username = %s",
                            (a.account_number,)).fetchone()[0] == 0
    from tollgate.v1 import auth_pb2

    login = failure(lambda: admin.auth.Login(auth_pb2.LoginRequest(login=a.email, password="delete-me-1")))
    assert login.code == grpc.StatusCode.UNAUTHENTICATED
    twice = failure(lambda: admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[a.name]),
                                                          metadata=admin.metadata))
    assert twice.code == grpc.StatusCode.NOT_FOUND
    update_deleted = failure(lambda: update(admin, pb.Account(name=a.name, profile=pb.Profile(city="X"))))
    assert update_deleted.code == grpc.StatusCode.FAILED_PRECONDITION


def test_delete_needs_names(admin):
    result = failure(lambda: admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(), metadata=admin.metadata))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["names"])


def test_company_number_hygiene_settings_are_checked(admin):
    from tollgate.v1 import company_pb2

    def update(**fields):
        return admin.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
            company=company_pb2.Company(**fields), update_mask=field_mask_pb2.FieldMask(paths=list(fields))),
            metadata=admin.metadata)

    original = admin.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=admin.metadata)
    assert (original.max_destination_digits, original.caller_id_fallback) == (
        15, company_pb2.CALLER_ID_FALLBACK_DEFAULT_CALLER_ID)
    try:
        changed = update(max_destination_digits=18, caller_id_fallback=company_pb2.CALLER_ID_FALLBACK_ANONYMOUS)
        assert (changed.max_destination_digits, changed.caller_id_fallback) == (
            18, company_pb2.CALLER_ID_FALLBACK_ANONYMOUS)
        assert update(min_destination_digits=7).min_destination_digits == 7
        assert failure(lambda: update(max_destination_digits=6)).fields == ["company.min_destination_digits"]
        for fields, field in ((dict(max_destination_digits=19), "company.max_destination_digits"),
                              (dict(min_destination_digits=0), "company.min_destination_digits"),
                              (dict(max_destination_digits=0), "company.max_destination_digits"),
                              (dict(caller_id_fallback=0), "company.caller_id_fallback"),
                              (dict(caller_id_fallback=9), "company.caller_id_fallback")):
            assert failure(lambda f=fields: update(**f)).fields == [field], fields
    finally:
        update(max_destination_digits=original.max_destination_digits, min_destination_digits=1,
               caller_id_fallback=original.caller_id_fallback)


@pytest.mark.parametrize("value", ["+4930", "49 30", "\u0664\u0669", "1" * 19])
def test_default_caller_id_must_be_ascii_digits(admin, value):
    result = failure(lambda: create(admin, settings=pb.AccountSettings(default_caller_id=value)))
    assert result.fields == ["settings.default_caller_id"]


def test_default_caller_id_round_trips(admin):
    assert create(admin, settings=pb.AccountSettings(default_caller_id="4930111")).settings.default_caller_id == \
        "4930111"
