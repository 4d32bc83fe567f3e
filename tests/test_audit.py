"""The audit log (SPEC §11, issue 10 finding 9): every mutating RPC records who, when, which RPC and resource,
the request id and the fields changed (secrets masked), in the change's own transaction; ListAuditEvents has
the filter language and paging of the other lists."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf import descriptor_pool, field_mask_pb2, json_format, timestamp_pb2

from control.server import SERVICE_NAMES
from tests.helpers import failure, unique_email
from tollgate.v1 import (
    account_pb2,
    audit_pb2,
    auth_pb2,
    common_pb2,
    company_pb2,
    directory_pb2,
    invoice_pb2,
    operator_pb2,
    rating_pb2,
    trunks_pb2,
)

PASSWORD = "audit-pass-1"


def mutating_rpcs() -> set[str]:
    """Every RPC that can change something: all but Get, List, Export, Simulate (reads) and Login (issues a session,
    which the session table records; logging every login would let a flood fill the audit log)."""
    pool = descriptor_pool.Default()
    names = set()
    for service_name in SERVICE_NAMES:
        service = pool.FindServiceByName(service_name)
        names |= {f"{service.full_name}/{m.name}" for m in service.methods
                  if not m.name.startswith(("Get", "List", "Export", "Simulate")) and m.name != "Login"}
    return names


def events(stubs, filter_text: str = "", page_size: int = 0) -> list[audit_pb2.AuditEvent]:
    found, token = [], ""
    while True:
        page = stubs.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(
            filter=filter_text, page_size=page_size, page_token=token), metadata=stubs.metadata)
        found += page.audit_events
        token = page.next_page_token
        if not token:
            return found


def changes(event: audit_pb2.AuditEvent) -> dict:
    return json_format.MessageToDict(event.changes)


@pytest.fixture(scope="module")
def scenario(server_factory, connect):
    """Every mutating RPC once, successfully, on a database of its own (GenerateInvoices invoices everyone)."""
    server = server_factory()
    s = connect(server)
    md = s.metadata
    traced = (*md, ("x-request-id", "audit-trace-1"))
    customer = s.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("audit"), password=PASSWORD, account_number="AUD001",
        billing=account_pb2.Billing(account_type=account_pb2.POSTPAID, generate_zero_invoice=True))),
        metadata=traced)
    provider = s.accounts.CreateAccount(account_pb2.CreateAccountRequest(account=account_pb2.Account(
        email=unique_email("audit-p"), type=account_pb2.PROVIDER, account_number="AUDP01")), metadata=md)
    s.accounts.UpdateAccount(account_pb2.UpdateAccountRequest(account=account_pb2.Account(
        name=customer.name, profile=account_pb2.Profile(city="Lisbon"))), metadata=md)
    s.accounts.PostPayment(account_pb2.PostPaymentRequest(account=customer.name, amount=2_500_000,
                                                          note="audit"), metadata=md)
    s.company.UpdateCompany(company_pb2.UpdateCompanyRequest(company=company_pb2.Company(name="Audited Ltd")),
                            metadata=md)
    session = (("authorization", "Bearer " + s.auth.Login(auth_pb2.LoginRequest(
        login=customer.email, password=PASSWORD)).token),)
    s.auth.ChangePassword(auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="audit-pass-2"),
                          metadata=session)
    s.auth.Logout(auth_pb2.LogoutRequest(), metadata=session)

    s.directory.CreateLocalization(directory_pb2.CreateLocalizationRequest(
        localization_id="aud-loc", localization=directory_pb2.Localization(destination=["00/"])), metadata=md)
    s.directory.UpdateLocalization(directory_pb2.UpdateLocalizationRequest(localization=directory_pb2.Localization(
        name="localizations/aud-loc", display_name="Audit")), metadata=md)
    s.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(trunk_id="aud-trunk", trunk=trunks_pb2.Trunk(
        provider=provider.name, gateways=[trunks_pb2.Gateway(address="192.0.2.7:5060")])), metadata=md)
    s.trunks.UpdateTrunk(trunks_pb2.UpdateTrunkRequest(trunk=trunks_pb2.Trunk(name="trunks/aud-trunk", cps=5)),
                         metadata=md)
    s.trunks.CreateTerminationRate(trunks_pb2.CreateTerminationRateRequest(
        parent="trunks/aud-trunk", termination_rate=trunks_pb2.TerminationRate(prefix="49", rate_per_min=10)),
        metadata=md)
    s.trunks.UpdateTerminationRate(trunks_pb2.UpdateTerminationRateRequest(termination_rate=trunks_pb2.TerminationRate(
        name="trunks/aud-trunk/rates/49", rate_per_min=11)), metadata=md)
    s.trunks.DeleteTerminationRate(trunks_pb2.DeleteTerminationRateRequest(name="trunks/aud-trunk/rates/49"),
                                   metadata=md)
    s.trunks.ImportTerminationRates(iter([common_pb2.ImportRatesRequest(
        parent="trunks/aud-trunk", csv_data=b"prefix,rate_per_min\n44,0.01\n")]), metadata=md)
    s.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(rate_group_id="aud-group", rate_group=(
        rating_pb2.RateGroup(trunks=["trunks/aud-trunk"]))), metadata=md)
    s.rate_groups.UpdateRateGroup(rating_pb2.UpdateRateGroupRequest(rate_group=rating_pb2.RateGroup(
        name="rateGroups/aud-group", markup_percent=3)), metadata=md)
    s.rate_groups.CreateOriginationRate(rating_pb2.CreateOriginationRateRequest(
        parent="rateGroups/aud-group", origination_rate=rating_pb2.OriginationRate(prefix="49", rate_per_min=20)),
        metadata=md)
    s.rate_groups.UpdateOriginationRate(rating_pb2.UpdateOriginationRateRequest(
        origination_rate=rating_pb2.OriginationRate(name="rateGroups/aud-group/rates/49", rate_per_min=21)),
        metadata=md)
    s.rate_groups.DeleteOriginationRate(rating_pb2.DeleteOriginationRateRequest(
        name="rateGroups/aud-group/rates/49"), metadata=md)
    s.rate_groups.ImportOriginationRates(iter([common_pb2.ImportRatesRequest(
        parent="rateGroups/aud-group", csv_data=b"prefix,rate_per_min\n44,0.02\n")]), metadata=md)
    s.rate_groups.DeleteRateGroup(rating_pb2.DeleteRateGroupRequest(name="rateGroups/aud-group"), metadata=md)
    s.trunks.DeleteTrunk(trunks_pb2.DeleteTrunkRequest(name="trunks/aud-trunk"), metadata=md)

    s.directory.CreateDid(directory_pb2.CreateDidRequest(did_id="4930555", did=directory_pb2.Did(
        account=customer.name)), metadata=md)
    s.directory.UpdateDid(directory_pb2.UpdateDidRequest(did=directory_pb2.Did(
        name="dids/4930555", status=common_pb2.STATUS_INACTIVE)), metadata=md)
    s.directory.DeleteDid(directory_pb2.DeleteDidRequest(name="dids/4930555"), metadata=md)
    s.directory.CreateCallerId(directory_pb2.CreateCallerIdRequest(parent=customer.name, caller_id=(
        directory_pb2.CallerId(number="4930556"))), metadata=md)
    s.directory.DeleteCallerId(directory_pb2.DeleteCallerIdRequest(name=f"{customer.name}/callerIds/4930556"),
                               metadata=md)
    s.directory.CreateSipDevice(directory_pb2.CreateSipDeviceRequest(sip_device_id="aud-phone", sip_device=(
        directory_pb2.SipDevice(account=customer.name, password="device-secret-1"))), metadata=md)
    s.directory.UpdateSipDevice(directory_pb2.UpdateSipDeviceRequest(sip_device=directory_pb2.SipDevice(
        name="sipDevices/aud-phone", password="device-secret-2"),
        update_mask=field_mask_pb2.FieldMask(paths=["password"])), metadata=md)
    s.directory.DeleteSipDevice(directory_pb2.DeleteSipDeviceRequest(name="sipDevices/aud-phone"), metadata=md)
    s.directory.CreateIpMap(directory_pb2.CreateIpMapRequest(ip_map_id="aud-ip", ip_map=directory_pb2.IpMap(
        account=customer.name, cidr="198.51.100.0/24")), metadata=md)
    s.directory.UpdateIpMap(directory_pb2.UpdateIpMapRequest(ip_map=directory_pb2.IpMap(
        name="ipMaps/aud-ip", description="office")), metadata=md)
    s.directory.DeleteIpMap(directory_pb2.DeleteIpMapRequest(name="ipMaps/aud-ip"), metadata=md)
    s.directory.DeleteLocalization(directory_pb2.DeleteLocalizationRequest(name="localizations/aud-loc"),
                                   metadata=md)

    as_of = timestamp_pb2.Timestamp()
    as_of.FromDatetime(datetime.now(UTC) + timedelta(days=40))
    assert s.invoices.GenerateInvoices(invoice_pb2.GenerateInvoicesRequest(as_of=as_of), metadata=md).invoices

    made = s.operators.CreateOperator(operator_pb2.CreateOperatorRequest(operator_id="aud-op", operator=(
        operator_pb2.Operator(role=operator_pb2.OPERATOR_ROLE_BILLING))), metadata=md)
    s.operators.UpdateOperator(operator_pb2.UpdateOperatorRequest(operator=operator_pb2.Operator(
        name="operators/aud-op", description="night shift")), metadata=md)
    token = s.operators.CreateOperatorToken(operator_pb2.CreateOperatorTokenRequest(parent="operators/aud-op"),
                                            metadata=md)
    s.operators.RevokeOperatorToken(operator_pb2.RevokeOperatorTokenRequest(name=token.name), metadata=md)
    s.operators.DeleteOperator(operator_pb2.DeleteOperatorRequest(name="operators/aud-op"), metadata=md)
    assert made.token.token
    assert failure(lambda: s.auth.Login(auth_pb2.LoginRequest(login=customer.email, password="wrong"))).code == \
        grpc.StatusCode.UNAUTHENTICATED
    s.operators.ClearLoginLock(operator_pb2.ClearLoginLockRequest(kind="login", key=customer.email), metadata=md)
    s.accounts.DeleteAccounts(account_pb2.DeleteAccountsRequest(names=[provider.name]), metadata=md)
    return {"server": server, "stubs": s, "customer": customer, "provider": provider}


def test_every_mutating_rpc_writes_an_event(scenario):
    recorded = {e.rpc for e in events(scenario["stubs"])}
    assert mutating_rpcs() - recorded == set()


def test_an_event_says_who_when_what_and_which_request(scenario):
    s, customer = scenario["stubs"], scenario["customer"]
    created = events(s, f"resource = {customer.name} AND rpc : CreateAccount")
    assert len(created) == 1
    event = created[0]
    assert (event.principal, event.role, event.request_id) == ("operator:break-glass", "admin", "audit-trace-1")
    assert event.source.startswith("ipv4:127.0.0.1:")
    assert abs(event.create_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)
    fields = changes(event)
    assert fields["email"] == {"old": None, "new": customer.email}
    assert fields["password"] == {"old": None, "new": "***"} and fields["pin"]["new"] == "***"
    updated = events(s, f"resource = {customer.name} AND rpc : UpdateAccount")[0]
    assert changes(updated) == {"profile.city": {"old": "", "new": "Lisbon"}}
    by_account = events(s, f"resource = {customer.name} AND rpc : ChangePassword")[0]
    assert (by_account.principal, by_account.role) == (f"account:{customer.account_number}", "account")
    assert changes(by_account)["password"] == {"old": "***", "new": "***"}
    payment = events(s, "rpc : PostPayment")[0]
    assert changes(payment)["amount"]["new"] == 2_500_000 and payment.resource.startswith("payments/")


def test_secrets_never_reach_the_log(scenario):
    s = scenario["stubs"]
    device = events(s, "resource = sipDevices/aud-phone AND rpc : UpdateSipDevice")[0]
    assert changes(device)["ha1"] == {"old": "***", "new": "***"}
    with psycopg.connect(scenario["server"].dsn) as conn:
        dump = str(conn.execute("SELECT changes FROM audit_events").fetchall())
    for secret in (PASSWORD, "audit-pass-2", "device-secret-1", "device-secret-2", "$argon2"):
        assert secret not in dump


def test_the_event_is_written_in_the_changes_own_transaction(scenario):
    with psycopg.connect(scenario["server"].dsn) as conn:
        row = conn.execute("SELECT xmin::text FROM accounts WHERE account_number = 'AUDP01'").fetchone()
        event = conn.execute("SELECT xmin::text FROM audit_events WHERE resource = 'accounts/AUDP01'"
                             " AND rpc LIKE '%DeleteAccounts'").fetchone()
    assert row == event  # the same transaction wrote both


def test_a_change_that_fails_leaves_no_event(scenario):
    s, customer = scenario["stubs"], scenario["customer"]
    before = len(events(s, f"resource = {customer.name}"))
    bad = account_pb2.UpdateAccountRequest(account=account_pb2.Account(
        name=customer.name, billing=account_pb2.Billing(billing_day=31)))
    assert failure(lambda: s.accounts.UpdateAccount(bad, metadata=s.metadata)).code == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert len(events(s, f"resource = {customer.name}")) == before


def test_listing_filters_pages_newest_first_and_is_read_only_for_readonly(scenario):
    s = scenario["stubs"]
    everything = events(s)
    assert [int(e.name.split("/")[1]) for e in everything] == sorted(
        (int(e.name.split("/")[1]) for e in everything), reverse=True)
    assert events(s, page_size=3) == everything
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert len(events(s, f"create_time >= {since} AND role = admin")) == sum(e.role == "admin" for e in everything)
    assert events(s, "principal = nobody") == []
    bad = failure(lambda: s.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(filter="colour = red"),
                                                  metadata=s.metadata))
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["filter"])
    billing = s.operators.CreateOperator(operator_pb2.CreateOperatorRequest(operator_id=f"aud-b{time.time_ns()}",
                                         operator=operator_pb2.Operator(role=operator_pb2.OPERATOR_ROLE_BILLING)),
                                         metadata=s.metadata).token.token
    denied = failure(lambda: s.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(),
                                                     metadata=(("authorization", f"Bearer {billing}"),)))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
