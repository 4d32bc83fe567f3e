"""Account sessions (SPEC §11, issue 10 finding 5): the current password to change it, other sessions ended,
Logout, a configurable lifetime, expired sessions purged."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from tests.helpers import failure, unique_email
from tollgate.v1 import account_pb2, auth_pb2, company_pb2

PASSWORD = "session-pass-1"


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def customer(admin) -> account_pb2.Account:
    return admin.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("session"), password=PASSWORD)), metadata=admin.metadata)


def login(stubs, who: str, password: str = PASSWORD) -> tuple:
    return bearer(stubs.auth.Login(auth_pb2.LoginRequest(login=who, password=password)).token)


def works(stubs, token: tuple) -> bool:
    try:
        stubs.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=token)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
    return True


def test_a_password_change_needs_the_current_one_and_ends_the_other_sessions(admin, customer):
    mine, stolen = login(admin, customer.email), login(admin, customer.email)

    def change(current: str, new: str, token: tuple = mine) -> auth_pb2.ChangePasswordResponse:
        return admin.auth.ChangePassword(auth_pb2.ChangePasswordRequest(current_password=current, new_password=new),
                                         metadata=token)

    for current, new, field in (("", "brand-new-pass", "current_password"),
                                ("not-the-password", "brand-new-pass", "current_password"),
                                (PASSWORD, "short", "new_password")):
        result = failure(lambda c=current, n=new: change(c, n))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert change(PASSWORD, "brand-new-pass").tokens_revoked == 1
    assert works(admin, mine) and not works(admin, stolen)
    assert failure(lambda: login(admin, customer.email)).code == grpc.StatusCode.UNAUTHENTICATED
    assert works(admin, login(admin, customer.email, "brand-new-pass"))


def test_a_stolen_session_can_neither_set_the_password_nor_redirect_notifications(admin, customer):
    stolen = login(admin, customer.email)
    for account, path in ((account_pb2.Account(name=customer.name, password="thiefs-password"), "password"),
                          (account_pb2.Account(name=customer.name, profile=account_pb2.Profile(
                              notification_email="thief@example.com")), "profile.notification_email")):
        request = account_pb2.UpdateAccountRequest(account=account, update_mask=field_mask_pb2.FieldMask(paths=[path]))
        assert failure(lambda r=request: admin.accounts.UpdateAccount(r, metadata=stolen)).code == \
            grpc.StatusCode.PERMISSION_DENIED
    assert works(admin, login(admin, customer.email))  # the owner still gets in


def test_an_operator_setting_the_password_ends_every_session(admin, customer):
    sessions = [login(admin, customer.email) for _ in range(2)]
    admin.accounts.UpdateAccount(account_pb2.UpdateAccountRequest(
        account=account_pb2.Account(name=customer.name, password="reset-by-operator"),
        update_mask=field_mask_pb2.FieldMask(paths=["password"])), metadata=admin.metadata)
    assert not any(works(admin, s) for s in sessions)


def test_logout_ends_the_session(admin, customer):
    token, other = login(admin, customer.email), login(admin, customer.email)
    admin.auth.Logout(auth_pb2.LogoutRequest(), metadata=token)
    assert not works(admin, token) and works(admin, other)
    assert failure(lambda: admin.auth.Logout(auth_pb2.LogoutRequest(), metadata=token)).code == \
        grpc.StatusCode.UNAUTHENTICATED
    # A break-glass token is configuration, not a session: it cannot log out.
    assert failure(lambda: admin.auth.Logout(auth_pb2.LogoutRequest(), metadata=admin.metadata)).code == \
        grpc.StatusCode.FAILED_PRECONDITION


def test_the_session_lifetime_is_configurable_and_expired_sessions_are_purged(server_factory, connect):
    server = server_factory(token_ttl_seconds=60, housekeeping_interval_seconds=0.2)
    stubs = connect(server)
    account = stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("ttl"), password=PASSWORD)), metadata=stubs.metadata)
    answer = stubs.auth.Login(auth_pb2.LoginRequest(login=account.email, password=PASSWORD))
    lifetime = answer.expire_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
    assert 50 < lifetime.total_seconds() <= 60
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second'"
                     " WHERE account_id = (SELECT id FROM accounts WHERE account_number = %s)",
                     (account.account_number,))
        assert not works(stubs, bearer(answer.token))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
                " WHERE a.account_number = %s", (account.account_number,)).fetchone()[0]:
            time.sleep(0.1)
        assert conn.execute("SELECT count(*) FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
                            " WHERE a.account_number = %s", (account.account_number,)).fetchone()[0] == 0
