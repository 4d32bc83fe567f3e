"""Operators with roles (SPEC §11, issue 10 finding 9): named, tokens shown once and stored hashed, expiring
and revocable; roles checked for every RPC from one table; break-glass admin tokens from the configuration.
"""

from __future__ import annotations

import hashlib
import time

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, field_mask_pb2, message_factory

from control.api import permissions
from control.server import SERVICE_NAMES
from tests.helpers import failure, unique_email
from tollgate.v1 import account_pb2, auth_pb2, company_pb2, operator_pb2, rating_pb2, trunks_pb2

PASSWORD = "operator-test-pass"
ROLES = {"admin": operator_pb2.OPERATOR_ROLE_ADMIN, "config": operator_pb2.OPERATOR_ROLE_CONFIG,
         "billing": operator_pb2.OPERATOR_ROLE_BILLING, "readonly": operator_pb2.OPERATOR_ROLE_READONLY}


@pytest.fixture(scope="module")
def server(server_factory):
    """A database of its own: the role matrix below calls every RPC, GenerateInvoices included."""
    return server_factory()


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def make_operator(stubs, ident: str, role: str, **more) -> operator_pb2.CreateOperatorResponse:
    return stubs.operators.CreateOperator(operator_pb2.CreateOperatorRequest(
        operator_id=ident, operator=operator_pb2.Operator(role=ROLES[role], description=f"{role} test"), **more),
        metadata=stubs.metadata)


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_the_permission_table_names_every_rpc():
    pool = descriptor_pool.Default()
    methods = {f"{name.rsplit('.', 1)[-1]}/{m.name}" for name in SERVICE_NAMES
               for m in pool.FindServiceByName(name).methods}
    public = {m for m in methods if permissions.is_public(f"/tollgate.v1.{m}")}
    assert public == {"AuthService/Login"}
    assert methods - public == set(permissions.ALLOWED)


def _rpcs(stubs) -> dict[str, tuple]:
    """Every RPC of the tollgate services: "Service/Method" -> (its stub method, its descriptor)."""
    by_service = {type(s).__name__.removesuffix("Stub"): s for k, s in vars(stubs).items() if k != "metadata"}
    pool = descriptor_pool.Default()
    found = {}
    for name in SERVICE_NAMES:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            found[f"{service.name}/{method.name}"] = (getattr(by_service[service.name], method.name), method)
    return found


def _invoke(stub_method, descriptor, token: tuple):
    """The RPC with an empty request (a nonsense deck name for an upload): nothing to find or change."""
    request_type = message_factory.GetMessageClass(descriptor.input_type)
    if descriptor.client_streaming:
        return stub_method(iter([request_type(parent="rateGroups/does-not-exist")]), metadata=token, timeout=10)
    if descriptor.server_streaming:
        return list(stub_method(request_type(), metadata=token, timeout=10))
    return stub_method(request_type(), metadata=token, timeout=10)


def test_every_role_reaches_exactly_the_rpcs_of_its_role(server, connect):
    stubs = connect(server)
    principals = {role: bearer(make_operator(stubs, f"matrix-{role}", role).token.token) for role in ROLES}
    account = stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("matrix"), password=PASSWORD)), metadata=stubs.metadata)
    principals["account"] = bearer(stubs.auth.Login(auth_pb2.LoginRequest(login=account.email,
                                                                          password=PASSWORD)).token)
    for rpc, (method, descriptor) in sorted(_rpcs(stubs).items()):
        if rpc in ("AuthService/Login", "AuthService/Logout"):  # public; and Logout would end the sessions
            continue
        for role, token in principals.items():
            code = code_of(lambda m=method, d=descriptor, t=token: _invoke(m, d, t))
            allowed = role in permissions.ALLOWED[rpc]
            assert (code != grpc.StatusCode.PERMISSION_DENIED) == allowed, (rpc, role, code)
            assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (rpc, role, code)


def test_roles_in_practice(server, connect):
    stubs = connect(server)
    config = bearer(make_operator(stubs, "ops-config", "config").token.token)
    billing = bearer(make_operator(stubs, "ops-billing", "billing").token.token)
    readonly = bearer(make_operator(stubs, "ops-readonly", "readonly").token.token)
    provider = stubs.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("prov"), type=account_pb2.PROVIDER)), metadata=config)
    stubs.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(trunk_id="ops-trunk", trunk=trunks_pb2.Trunk(
        provider=provider.name, gateways=[trunks_pb2.Gateway(address="192.0.2.1:5060")])), metadata=config)
    payment = stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(account=provider.name, amount=1_000_000),
                                         metadata=billing)
    assert payment.posted_by == "operator:ops-billing"
    assert code_of(lambda: stubs.accounts.PostPayment(account_pb2.PostPaymentRequest(
        account=provider.name, amount=1), metadata=config)) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: stubs.trunks.ListTrunks(trunks_pb2.ListTrunksRequest(), metadata=billing)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert stubs.trunks.GetTrunk(trunks_pb2.GetTrunkRequest(name="trunks/ops-trunk"), metadata=readonly).provider
    assert code_of(lambda: stubs.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id="nope", rate_group=rating_pb2.RateGroup()), metadata=readonly)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: make_operator(stubs.__class__(**{**vars(stubs), "metadata": config}), "x", "admin")) == \
        grpc.StatusCode.PERMISSION_DENIED


def test_tokens_are_shown_once_stored_hashed_expire_and_can_be_revoked(server, connect):
    stubs = connect(server)
    created = make_operator(stubs, "alice", "config")
    secret = created.token.token
    assert secret.startswith("tgo_") and created.operator.name == "operators/alice"
    listed = stubs.operators.ListOperatorTokens(operator_pb2.ListOperatorTokensRequest(parent="operators/alice"),
                                                metadata=stubs.metadata).tokens
    assert [t.name for t in listed] == [created.token.name] and listed[0].token == ""
    with psycopg.connect(server.dsn) as conn:
        stored = conn.execute("SELECT token_sha256 FROM operator_tokens t JOIN operators o ON o.id = t.operator_id"
                              " WHERE o.name = 'alice'").fetchone()[0]
        assert bytes(stored) == hashlib.sha256(secret.encode()).digest()
        dump = str(conn.execute("SELECT * FROM operator_tokens").fetchall())
        assert secret not in dump

    short = stubs.operators.CreateOperatorToken(operator_pb2.CreateOperatorTokenRequest(
        parent="operators/alice", ttl_seconds=1, description="one second"), metadata=stubs.metadata)
    assert code_of(lambda: stubs.company.GetCompany(company_pb2.GetCompanyRequest(),
                                                    metadata=bearer(short.token))) == grpc.StatusCode.OK
    time.sleep(1.2)
    assert code_of(lambda: stubs.company.GetCompany(company_pb2.GetCompanyRequest(),
                                                    metadata=bearer(short.token))) == grpc.StatusCode.UNAUTHENTICATED

    revoked = stubs.operators.RevokeOperatorToken(operator_pb2.RevokeOperatorTokenRequest(name=created.token.name),
                                                  metadata=stubs.metadata)
    assert revoked.HasField("revoke_time")
    assert code_of(lambda: stubs.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=bearer(secret))) == \
        grpc.StatusCode.UNAUTHENTICATED


def test_a_role_change_applies_at_the_next_call_and_deletion_revokes_everything(server, connect):
    stubs = connect(server)
    token = bearer(make_operator(stubs, "bob", "readonly").token.token)
    second = bearer(stubs.operators.CreateOperatorToken(operator_pb2.CreateOperatorTokenRequest(
        parent="operators/bob"), metadata=stubs.metadata).token)
    update = company_pb2.UpdateCompanyRequest(company=company_pb2.Company(name="Bob's edit"))
    assert code_of(lambda: stubs.company.UpdateCompany(update, metadata=token)) == grpc.StatusCode.PERMISSION_DENIED
    stubs.operators.UpdateOperator(operator_pb2.UpdateOperatorRequest(
        operator=operator_pb2.Operator(name="operators/bob", role=operator_pb2.OPERATOR_ROLE_CONFIG),
        update_mask=field_mask_pb2.FieldMask(paths=["role"])), metadata=stubs.metadata)
    assert stubs.company.UpdateCompany(update, metadata=token).name == "Bob's edit"
    deleted = stubs.operators.DeleteOperator(operator_pb2.DeleteOperatorRequest(name="operators/bob"),
                                             metadata=stubs.metadata)
    assert deleted.HasField("delete_time")
    for t in (token, second):
        assert code_of(lambda t=t: stubs.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=t)) == \
            grpc.StatusCode.UNAUTHENTICATED
    again = failure(lambda: make_operator(stubs, "bob", "readonly"))  # ids are never reused
    assert (again.code, again.fields) == (grpc.StatusCode.ALREADY_EXISTS, ["operator_id"])


def test_an_operator_token_can_log_out(server, connect):
    stubs = connect(server)
    token = bearer(make_operator(stubs, "carol", "readonly").token.token)
    stubs.auth.Logout(auth_pb2.LogoutRequest(), metadata=token)
    assert code_of(lambda: stubs.company.GetCompany(company_pb2.GetCompanyRequest(), metadata=token)) == \
        grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("request_", "field"), [
    (operator_pb2.CreateOperatorRequest(operator_id="Bad Name", operator=operator_pb2.Operator(
        role=operator_pb2.OPERATOR_ROLE_ADMIN)), "operator_id"),
    (operator_pb2.CreateOperatorRequest(operator_id="norole", operator=operator_pb2.Operator()), "operator.role"),
    (operator_pb2.CreateOperatorRequest(operator_id="badrole", operator=operator_pb2.Operator(role=42)),
     "operator.role"),
    (operator_pb2.CreateOperatorRequest(operator_id="ttl", operator=operator_pb2.Operator(
        role=operator_pb2.OPERATOR_ROLE_ADMIN), token_ttl_seconds=-1), "token_ttl_seconds"),
    (operator_pb2.CreateOperatorRequest(operator_id="ttl2", operator=operator_pb2.Operator(
        role=operator_pb2.OPERATOR_ROLE_ADMIN), token_ttl_seconds=2**62), "token_ttl_seconds"),
])
def test_operator_mistakes_name_the_field(server, connect, request_, field):
    stubs = connect(server)
    result = failure(lambda: stubs.operators.CreateOperator(request_, metadata=stubs.metadata))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
