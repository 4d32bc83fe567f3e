"""Tokens and scoping (SPEC §11), reflection, health, migrations and configuration."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from control import db
from control.config import load_config
from tests.helpers import failure, unique_email
from tollgate.v1 import account_pb2 as pb
from tollgate.v1 import auth_pb2, company_pb2

PASSWORD = "s3cret-enough"


@pytest.fixture
def customer(admin) -> pb.Account:
    return admin.accounts.CreateAccount(
        pb.CreateAccountRequest(account=pb.Account(email=unique_email("login"), password=PASSWORD)),
        metadata=admin.metadata)


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def login(admin, who: str, password: str = PASSWORD) -> auth_pb2.LoginResponse:
    return admin.auth.Login(auth_pb2.LoginRequest(login=who, password=password))


def test_login_by_email_or_number(admin, customer):
    by_email = login(admin, customer.email.upper())
    by_number = login(admin, customer.account_number)
    assert by_email.account == by_number.account == customer.name
    assert by_email.token != by_number.token and by_email.expire_time.seconds > 0


def test_login_failures_look_the_same(admin, customer):
    wrong = failure(lambda: login(admin, customer.email, "wrong-password"))
    unknown = failure(lambda: login(admin, "nobody@example.com"))
    assert wrong.code == unknown.code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.message == unknown.message


def test_inactive_account_cannot_log_in(admin, customer):
    admin.accounts.UpdateAccount(pb.UpdateAccountRequest(account=pb.Account(name=customer.name, status=pb.INACTIVE)),
                                 metadata=admin.metadata)
    assert failure(lambda: login(admin, customer.email)).code == grpc.StatusCode.UNAUTHENTICATED


def test_account_token_sees_only_its_own_account(admin, customer):
    other = admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(email=unique_email())),
                                         metadata=admin.metadata)
    mine = bearer(login(admin, customer.email).token)
    assert admin.accounts.GetAccount(pb.GetAccountRequest(name=customer.name), metadata=mine).email == customer.email
    # Another account is NOT_FOUND, word for word like a number nobody has (SPEC §11): no probing for numbers.
    for name in (other.name, "accounts/DOESNOTEXIST"):
        hidden = failure(lambda n=name: admin.accounts.GetAccount(pb.GetAccountRequest(name=n), metadata=mine))
        assert (hidden.code, hidden.message) == (grpc.StatusCode.NOT_FOUND,
                                                 f"account {name.removeprefix('accounts/')} not found")
        update = pb.UpdateAccountRequest(account=pb.Account(name=name, profile=pb.Profile(city="Oslo")))
        assert failure(lambda u=update: admin.accounts.UpdateAccount(u, metadata=mine)).code == \
            grpc.StatusCode.NOT_FOUND
    listed = admin.accounts.ListAccounts(pb.ListAccountsRequest(page_size=1000), metadata=mine)
    assert [a.name for a in listed.accounts] == [customer.name] and listed.total_size == 1
    exported = b"".join(c.data for c in admin.accounts.ExportAccountsCsv(pb.ExportAccountsCsvRequest(),
                                                                         metadata=mine))
    assert exported.count(b"\r\n") == 2  # header + own row


def test_account_token_may_edit_only_its_profile_and_password(admin, customer):
    mine = bearer(login(admin, customer.email).token)
    updated = admin.accounts.UpdateAccount(
        pb.UpdateAccountRequest(account=pb.Account(name=customer.name, profile=pb.Profile(city="Oslo"))),
        metadata=mine)
    assert updated.profile.city == "Oslo"
    for change in (pb.Account(name=customer.name, billing=pb.Billing(account_type=pb.POSTPAID,
                                                                      credit_limit=10**12)),
                   pb.Account(name=customer.name, settings=pb.AccountSettings(cps=1000))):
        denied = failure(lambda c=change: admin.accounts.UpdateAccount(pb.UpdateAccountRequest(account=c),
                                                                       metadata=mine))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    # The password and the notification address are not changed with a bare session (control/access/sessions.py).
    for change, mask in ((pb.Account(name=customer.name, password="brand-new-pass"), "password"),
                         (pb.Account(name=customer.name, profile=pb.Profile(notification_email="x@evil.example")),
                          "profile.notification_email")):
        denied = failure(lambda c=change, m=mask: admin.accounts.UpdateAccount(
            pb.UpdateAccountRequest(account=c, update_mask=field_mask_pb2.FieldMask(paths=[m])), metadata=mine))
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED, mask
    assert login(admin, customer.email).account == customer.name


@pytest.mark.parametrize("rpc", ["create", "delete", "company"])
def test_account_token_cannot_administer(admin, customer, rpc):
    mine = bearer(login(admin, customer.email).token)
    calls = {
        "create": lambda: admin.accounts.CreateAccount(
            pb.CreateAccountRequest(account=pb.Account(email=unique_email())), metadata=mine),
        "delete": lambda: admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[customer.name]),
                                                        metadata=mine),
        "company": lambda: admin.company.UpdateCompany(
            company_pb2.UpdateCompanyRequest(company=company_pb2.Company(decimals=2)), metadata=mine),
    }
    assert failure(calls[rpc]).code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer not-a-token"),),
                                      (("authorization", "Basic abc"),)])
def test_every_rpc_needs_a_valid_token(admin, metadata):
    result = failure(lambda: admin.accounts.ListAccounts(pb.ListAccountsRequest(), metadata=metadata))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED


def test_an_inactive_account_token_stops_working(admin, customer):
    mine = bearer(login(admin, customer.email).token)
    admin.accounts.UpdateAccount(pb.UpdateAccountRequest(account=pb.Account(name=customer.name, status=pb.INACTIVE)),
                                 metadata=admin.metadata)
    result = failure(lambda: admin.accounts.GetAccount(pb.GetAccountRequest(name=customer.name), metadata=mine))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED


def test_deleting_an_account_revokes_its_tokens(admin, customer):
    mine = bearer(login(admin, customer.email).token)
    admin.accounts.DeleteAccounts(pb.DeleteAccountsRequest(names=[customer.name]), metadata=admin.metadata)
    result = failure(lambda: admin.accounts.GetAccount(pb.GetAccountRequest(name=customer.name), metadata=mine))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED


def test_company_profile_update_and_validation(admin):
    current = admin.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=admin.metadata)
    assert current.max_call_seconds == 10_800 and current.sip_realm
    bad = failure(lambda: admin.company.UpdateCompany(
        company_pb2.UpdateCompanyRequest(company=company_pb2.Company(currency="XYZ")), metadata=admin.metadata))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["company.currency"])
    changed = admin.company.UpdateCompany(
        company_pb2.UpdateCompanyRequest(company=company_pb2.Company(name="Acme Telecom", currency="eur")),
        metadata=admin.metadata)
    assert (changed.name, changed.currency, changed.decimals) == ("Acme Telecom", "EUR", current.decimals)


def test_pin_length_follows_the_company_profile(admin):
    def set_pin_length(n: int) -> None:
        admin.company.UpdateCompany(company_pb2.UpdateCompanyRequest(
            company=company_pb2.Company(pin_length=n), update_mask=field_mask_pb2.FieldMask(paths=["pin_length"])),
            metadata=admin.metadata)

    set_pin_length(8)
    try:
        account = admin.accounts.CreateAccount(pb.CreateAccountRequest(account=pb.Account(email=unique_email())),
                                               metadata=admin.metadata)
        assert len(account.pin) == 8 and account.pin.isdigit()
    finally:
        set_pin_length(6)


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"tollgate.v1.AccountService", "tollgate.v1.CompanyService", "tollgate.v1.AuthService",
            "grpc.health.v1.Health"} <= names


def test_health_is_serving_without_a_token(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tollgate.v1.AccountService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_migrations_apply_once(control_server):
    assert db.migrate(control_server.dsn) == []  # the server already applied them; a rerun is a no-op


def test_config_file_and_environment(tmp_path):
    path = tmp_path / "control.toml"
    path.write_text('listen = "127.0.0.1:6000"\nadmin_tokens = ["a", "b"]\n')
    config = load_config(str(path), {"TOLLGATE_DSN": "postgresql:///x"})
    assert (config.listen, config.dsn, config.admin_tokens) == ("127.0.0.1:6000", "postgresql:///x", ("a", "b"))
    overridden = load_config(str(path), {"TOLLGATE_ADMIN_TOKENS": "c, d"})
    assert overridden.admin_tokens == ("c", "d")
    path.write_text('listne = "typo"\n')
    with pytest.raises(SystemExit, match="unknown keys"):
        load_config(str(path), {})


def test_every_key_has_an_environment_variable_of_its_type(tmp_path):
    config = load_config(str(tmp_path / "missing.toml"), {
        "TOLLGATE_PLAINTEXT": "yes", "TOLLGATE_STATEMENT_TIMEOUT_SECONDS": "2.5", "TOLLGATE_WORKERS": "3",
        "TOLLGATE_TLS_CLIENT_CA_FILE": "/etc/ca.pem"})
    assert (config.plaintext, config.statement_timeout_seconds, config.workers, config.tls_client_ca_file) == (
        True, 2.5, 3, "/etc/ca.pem")
    for variable, value in (("TOLLGATE_PLAINTEXT", "maybe"), ("TOLLGATE_WORKERS", "many")):
        with pytest.raises(SystemExit, match=variable):
            load_config(str(tmp_path / "missing.toml"), {variable: value})
    path = tmp_path / "control.toml"
    path.write_text('workers = "16"\n')
    with pytest.raises(SystemExit, match="workers must be of type int"):
        load_config(str(path), {})


def test_the_example_configuration_documents_every_key_with_its_default():
    import dataclasses
    import tomllib
    from pathlib import Path

    from control.config import Config, env_name

    example = Path(__file__).resolve().parents[1] / "config" / "control.example.toml"
    text = example.read_text()
    values = tomllib.loads(text)
    defaults = {f.name: getattr(Config(), f.name) for f in dataclasses.fields(Config)}
    assert set(values) == set(defaults)
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()} == defaults
    assert all(env_name(key) in text for key in defaults)
