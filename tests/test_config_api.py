"""The configuration model over gRPC (SPEC §3, §6, §7): CRUD, validation, deck import."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from tests.helpers import failure, unique_email
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import common_pb2, directory_pb2, rating_pb2, trunks_pb2


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def digits() -> str:
    return str(uuid.uuid4().int)[:12]


@pytest.fixture
def provider(admin) -> apb.Account:
    return admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("carrier"), type=apb.PROVIDER)), metadata=admin.metadata)


@pytest.fixture
def customer(admin) -> apb.Account:
    return admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(email=unique_email())),
                                        metadata=admin.metadata)


def make_trunk(admin, provider, **fields) -> trunks_pb2.Trunk:
    fields.setdefault("gateways", [trunks_pb2.Gateway(address="127.0.0.1:5080")])
    return admin.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(
        trunk_id=uid(), trunk=trunks_pb2.Trunk(provider=provider.name, **fields)), metadata=admin.metadata)


def make_group(admin, **fields) -> rating_pb2.RateGroup:
    return admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=uid("rg"), rate_group=rating_pb2.RateGroup(**fields)), metadata=admin.metadata)


def upload(stub_method, admin, parent: str, text: str, mode=common_pb2.IMPORT_MODE_REPLACE, piece: int = 1000):
    data = text.encode()
    requests = [common_pb2.ImportRatesRequest(parent=parent, mode=mode, csv_data=data[:piece])]
    requests += [common_pb2.ImportRatesRequest(csv_data=data[i:i + piece]) for i in range(piece, len(data), piece)]
    return stub_method(iter(requests), metadata=admin.metadata)


# ------------------------------------------------------------------------------------------ rate groups


def test_rate_group_crud(admin, provider):
    trunk = make_trunk(admin, provider)
    group = make_group(admin, display_name="Gold", markup_percent=10,
                       routing_strategy=rating_pb2.ROUTING_STRATEGY_COST, trunks=[trunk.name])
    assert (group.markup_percent, group.routing_strategy, list(group.trunks)) == (
        10, rating_pb2.ROUTING_STRATEGY_COST, [trunk.name])
    assert (group.default_increment, group.status) == (1, common_pb2.STATUS_ACTIVE)
    updated = admin.rate_groups.UpdateRateGroup(rating_pb2.UpdateRateGroupRequest(
        rate_group=rating_pb2.RateGroup(name=group.name, markup_percent=5, display_name="ignored"),
        update_mask=field_mask_pb2.FieldMask(paths=["markup_percent"])), metadata=admin.metadata)
    assert (updated.markup_percent, updated.display_name) == (5, "Gold")
    listed = admin.rate_groups.ListRateGroups(rating_pb2.ListRateGroupsRequest(page_size=1000),
                                              metadata=admin.metadata)
    assert group.name in [g.name for g in listed.rate_groups]
    admin.rate_groups.DeleteRateGroup(rating_pb2.DeleteRateGroupRequest(name=group.name), metadata=admin.metadata)
    gone = failure(lambda: admin.rate_groups.GetRateGroup(rating_pb2.GetRateGroupRequest(name=group.name),
                                                          metadata=admin.metadata))
    assert gone.code == grpc.StatusCode.NOT_FOUND


def test_rate_group_validation(admin):
    cases = [
        (dict(markup_percent=-1), "markup_percent"),
        (dict(trunks=["trunks/no-such-trunk"]), "trunks"),
        (dict(trunks=["gold"]), "trunks[0]"),
        (dict(default_increment=-5), "default_increment"),
        (dict(default_increment=86_401), "default_increment"),
    ]
    for fields, field in cases:
        result = failure(lambda f=fields: make_group(admin, **f))
        assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), fields
    bad_id = failure(lambda: admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id="Not Valid", rate_group=rating_pb2.RateGroup()), metadata=admin.metadata))
    assert bad_id.fields == ["rate_group_id"]


def test_rate_group_in_use_cannot_be_deleted_and_accounts_can_reference_it(admin):
    group = make_group(admin)
    account = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email(), billing=apb.Billing(rate_group=group.name))), metadata=admin.metadata)
    assert account.billing.rate_group == group.name
    refused = failure(lambda: admin.rate_groups.DeleteRateGroup(rating_pb2.DeleteRateGroupRequest(name=group.name),
                                                                metadata=admin.metadata))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and account.account_number in refused.message


def test_duplicate_id_is_already_exists(admin):
    ident = uid("rg")
    admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(rate_group_id=ident,
                                                                        rate_group=rating_pb2.RateGroup()),
                                      metadata=admin.metadata)
    again = failure(lambda: admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=ident, rate_group=rating_pb2.RateGroup()), metadata=admin.metadata))
    assert again.code == grpc.StatusCode.ALREADY_EXISTS


# ------------------------------------------------------------------------------------------ rates


def test_origination_rate_crud_and_deck_summary(admin, provider):
    trunk = make_trunk(admin, provider)
    group = make_group(admin)
    rate = admin.rate_groups.CreateOriginationRate(rating_pb2.CreateOriginationRateRequest(
        parent=group.name, origination_rate=rating_pb2.OriginationRate(
            prefix="4420", connect_fee=10_000, rate_per_min=12_500, initial_increment=30, increment=6,
            forced_trunks=[trunk.name])), metadata=admin.metadata)
    assert rate.name == f"{group.name}/rates/4420" and list(rate.forced_trunks) == [trunk.name]
    assert admin.rate_groups.GetRateGroup(rating_pb2.GetRateGroupRequest(name=group.name),
                                          metadata=admin.metadata).rate_count == 1
    updated = admin.rate_groups.UpdateOriginationRate(rating_pb2.UpdateOriginationRateRequest(
        origination_rate=rating_pb2.OriginationRate(name=rate.name, rate_per_min=9_000)), metadata=admin.metadata)
    assert (updated.rate_per_min, updated.connect_fee) == (9_000, 10_000)
    negative = failure(lambda: admin.rate_groups.CreateOriginationRate(rating_pb2.CreateOriginationRateRequest(
        parent=group.name, origination_rate=rating_pb2.OriginationRate(prefix="44", rate_per_min=-1)),
        metadata=admin.metadata))
    assert negative.fields == ["rate_per_min"]
    not_digits = failure(lambda: admin.rate_groups.CreateOriginationRate(rating_pb2.CreateOriginationRateRequest(
        parent=group.name, origination_rate=rating_pb2.OriginationRate(prefix="44x")), metadata=admin.metadata))
    assert not_digits.fields == ["prefix"]
    no_parent = failure(lambda: admin.rate_groups.CreateOriginationRate(rating_pb2.CreateOriginationRateRequest(
        parent="rateGroups/nope-nope", origination_rate=rating_pb2.OriginationRate(prefix="1")),
        metadata=admin.metadata))
    assert no_parent.code == grpc.StatusCode.NOT_FOUND
    admin.rate_groups.DeleteOriginationRate(rating_pb2.DeleteOriginationRateRequest(name=rate.name),
                                            metadata=admin.metadata)
    assert admin.rate_groups.GetRateGroup(rating_pb2.GetRateGroupRequest(name=group.name),
                                          metadata=admin.metadata).rate_count == 0


ORIGINATION_CSV = "prefix,description,connect_fee,rate_per_min,initial_increment,increment\n" + "".join(
    f"{44_000 + i},UK {i},0.01,0.0125,30,6\n" for i in range(300))


def test_import_deck_replace_then_merge(admin):
    group = make_group(admin)
    result = upload(admin.rate_groups.ImportOriginationRates, admin, group.name, ORIGINATION_CSV)
    assert (result.rows_imported, result.rows_in_deck) == (300, 300) and len(result.deck_sha256) == 64
    rate = admin.rate_groups.GetOriginationRate(rating_pb2.GetOriginationRateRequest(name=f"{group.name}/rates/44007"),
                                                metadata=admin.metadata)
    assert (rate.connect_fee, rate.rate_per_min, rate.initial_increment, rate.description) == (
        10_000, 12_500, 30, "UK 7")
    merged = upload(admin.rate_groups.ImportOriginationRates, admin, group.name,
                    "prefix,rate_per_min\n44007,0.02\n1,0.5\n", mode=common_pb2.IMPORT_MODE_MERGE)
    assert (merged.rows_imported, merged.rows_in_deck, merged.deck_sha256) == (2, 301, "")
    replaced = upload(admin.rate_groups.ImportOriginationRates, admin, group.name, "prefix,rate_per_min\n33,0.1\n")
    assert replaced.rows_in_deck == 1
    pages = admin.rate_groups.ListOriginationRates(rating_pb2.ListOriginationRatesRequest(parent=group.name),
                                                   metadata=admin.metadata)
    assert [r.prefix for r in pages.origination_rates] == ["33"]


@pytest.mark.parametrize(("body", "line"), [
    ("44,0.01\n45,abc\n", 3),
    ("44,0.01\n44,0.02\n", 3),
    ("44,0.01\n4x5,0.02\n", 3),
    ("44,0.01\n45,0.0000001\n", 3),
    ("44,0.01\n45,-1\n", 3),
    ("44,0.01\n45,1000000.000001\n", 3),
    ("44,0.01,extra\n", 2),
])
def test_bad_row_rejects_the_whole_deck_with_its_line(admin, body, line):
    group = make_group(admin)
    upload(admin.rate_groups.ImportOriginationRates, admin, group.name, ORIGINATION_CSV)
    result = failure(lambda: upload(admin.rate_groups.ImportOriginationRates, admin, group.name,
                                    "prefix,rate_per_min\n" + body))
    assert (result.code, result.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["csv_data"])
    assert f"line {line}:" in result.message
    after = admin.rate_groups.GetRateGroup(rating_pb2.GetRateGroupRequest(name=group.name), metadata=admin.metadata)
    assert after.rate_count == 300  # nothing applied


def test_bad_header_and_unknown_deck(admin):
    group = make_group(admin)
    header = failure(lambda: upload(admin.rate_groups.ImportOriginationRates, admin, group.name, "prefix,price\n1,2\n"))
    assert "line 1" in header.message
    missing = failure(lambda: upload(admin.rate_groups.ImportOriginationRates, admin, "rateGroups/none-here",
                                     "prefix,rate_per_min\n1,1\n"))
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_termination_import_with_strip_and_prepend(admin, provider):
    trunk = make_trunk(admin, provider)
    text = "prefix,rate_per_min,strip,prepend\n44,0.008,2,0044\n1,0.002,0,\n"
    result = upload(admin.trunks.ImportTerminationRates, admin, trunk.name, text)
    assert result.rows_in_deck == 2
    rate = admin.trunks.GetTerminationRate(trunks_pb2.GetTerminationRateRequest(name=f"{trunk.name}/rates/44"),
                                           metadata=admin.metadata)
    assert (rate.rate_per_min, rate.strip, rate.prepend) == (8_000, 2, "0044")
    bad = failure(lambda: upload(admin.trunks.ImportTerminationRates, admin, trunk.name,
                                 "prefix,rate_per_min,strip\n44,0.1,40\n"))
    assert "line 2:" in bad.message


# ------------------------------------------------------------------------------------------ trunks


def test_trunk_crud_and_validation(admin, provider, customer):
    trunk = make_trunk(admin, provider, gateways=[trunks_pb2.Gateway(address="10.0.0.1:5060"),
                                                  trunks_pb2.Gateway(address="gw.example.net:5061",
                                                                     transport=trunks_pb2.TRANSPORT_TLS)],
                       max_concurrent_calls=50, cps=5, priority=2)
    assert [g.address for g in trunk.gateways] == ["10.0.0.1:5060", "gw.example.net:5061"]
    assert trunk.gateways[1].transport == trunks_pb2.TRANSPORT_TLS
    listed = admin.trunks.ListTrunks(trunks_pb2.ListTrunksRequest(provider=provider.name), metadata=admin.metadata)
    assert [t.name for t in listed.trunks] == [trunk.name]
    cases = [
        (dict(gateways=[]), "gateways"),
        (dict(gateways=[trunks_pb2.Gateway(address="no-port")]), "gateways[0].address"),
        (dict(gateways=[trunks_pb2.Gateway(address="1.2.3.4:99999")]), "gateways[0].address"),
        (dict(cps=-1), "cps"),
        (dict(localization="localizations/none"), "localization"),
    ]
    for fields, field in cases:
        result = failure(lambda f=fields: make_trunk(admin, provider, **f))
        assert result.fields == [field], fields
    not_provider = failure(lambda: make_trunk(admin, customer))
    assert not_provider.fields == ["provider"]
    immutable = failure(lambda: admin.trunks.UpdateTrunk(trunks_pb2.UpdateTrunkRequest(
        trunk=trunks_pb2.Trunk(name=trunk.name, provider=customer.name),
        update_mask=field_mask_pb2.FieldMask(paths=["provider"])), metadata=admin.metadata))
    assert immutable.fields == ["update_mask"]


def test_trunk_sip_edge_settings_round_trip_and_are_checked(admin, provider):
    trunk = make_trunk(admin, provider)
    assert (trunk.pdd_timeout_seconds, trunk.pass_diversion, trunk.topology_hiding) == (0, False,
                                                                                        trunks_pb2.TOPOLOGY_HIDING_ON)
    changed = admin.trunks.UpdateTrunk(trunks_pb2.UpdateTrunkRequest(trunk=trunks_pb2.Trunk(
        name=trunk.name, pdd_timeout_seconds=5, pass_diversion=True, pass_privacy=True, pass_history_info=True,
        topology_hiding=trunks_pb2.TOPOLOGY_HIDING_OFF)), metadata=admin.metadata)
    assert (changed.pdd_timeout_seconds, changed.pass_diversion, changed.pass_privacy, changed.pass_history_info,
            changed.topology_hiding) == (5, True, True, True, trunks_pb2.TOPOLOGY_HIDING_OFF)
    for fields, field in ((dict(pdd_timeout_seconds=121), "pdd_timeout_seconds"),
                          (dict(pdd_timeout_seconds=-1), "pdd_timeout_seconds"),
                          (dict(topology_hiding=7), "topology_hiding")):
        assert failure(lambda f=fields: make_trunk(admin, provider, **f)).fields == [field], fields


def test_trunk_used_by_a_rate_group_cannot_be_deleted(admin, provider):
    trunk = make_trunk(admin, provider)
    group = make_group(admin, trunks=[trunk.name])
    refused = failure(lambda: admin.trunks.DeleteTrunk(trunks_pb2.DeleteTrunkRequest(name=trunk.name),
                                                       metadata=admin.metadata))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and group.name.split("/")[1] in refused.message


# ------------------------------------------------------------------------------------------ directory


def test_did_caller_id_device_ip_map(admin, provider, customer, control_server):
    number = digits()
    did = admin.directory.CreateDid(directory_pb2.CreateDidRequest(did_id=number, did=directory_pb2.Did(
        account=customer.name, provider=provider.name)), metadata=admin.metadata)
    assert (did.name, did.number, did.account) == (f"dids/{number}", number, customer.name)
    wrong_provider = failure(lambda: admin.directory.CreateDid(directory_pb2.CreateDidRequest(
        did_id=digits(), did=directory_pb2.Did(provider=customer.name)), metadata=admin.metadata))
    assert wrong_provider.fields == ["provider"]

    cid = admin.directory.CreateCallerId(directory_pb2.CreateCallerIdRequest(
        parent=customer.name, caller_id=directory_pb2.CallerId(number="15551234567")), metadata=admin.metadata)
    assert cid.name == f"{customer.name}/callerIds/15551234567"
    bad_cid = failure(lambda: admin.directory.CreateCallerId(directory_pb2.CreateCallerIdRequest(
        parent=customer.name, caller_id=directory_pb2.CallerId(number="+1555")), metadata=admin.metadata))
    assert bad_cid.fields == ["number"]

    username = uid("dev")
    device = admin.directory.CreateSipDevice(directory_pb2.CreateSipDeviceRequest(
        sip_device_id=username, sip_device=directory_pb2.SipDevice(account=customer.name, password="devpass-123")),
        metadata=admin.metadata)
    assert device.password == "" and device.realm
    short = failure(lambda: admin.directory.CreateSipDevice(directory_pb2.CreateSipDeviceRequest(
        sip_device_id=uid("dev"), sip_device=directory_pb2.SipDevice(account=customer.name, password="short")),
        metadata=admin.metadata))
    assert short.fields == ["password"]
    with psycopg.connect(control_server.dsn) as conn:
        ha1 = conn.execute("SELECT ha1 FROM sip_devices WHERE username = %s", (username,)).fetchone()[0]
    assert ha1 == hashlib.md5(f"{username}:{device.realm}:devpass-123".encode()).hexdigest()

    ip_map = admin.directory.CreateIpMap(directory_pb2.CreateIpMapRequest(
        ip_map_id=uid("ip"), ip_map=directory_pb2.IpMap(account=customer.name, cidr="192.0.2.7/24", tech_prefix="123")),
        metadata=admin.metadata)
    assert ip_map.cidr == "192.0.2.0/24"
    bad_cidr = failure(lambda: admin.directory.CreateIpMap(directory_pb2.CreateIpMapRequest(
        ip_map_id=uid("ip"), ip_map=directory_pb2.IpMap(account=customer.name, cidr="300.1.1.1")),
        metadata=admin.metadata))
    assert bad_cidr.fields == ["cidr"]
    clash = failure(lambda: admin.directory.CreateIpMap(directory_pb2.CreateIpMapRequest(
        ip_map_id=uid("ip"), ip_map=directory_pb2.IpMap(account=customer.name, cidr="192.0.2.0/24",
                                                         tech_prefix="123")), metadata=admin.metadata))
    assert (clash.code, clash.fields) == (grpc.StatusCode.ALREADY_EXISTS, ["cidr"])

    # Deleting the account removes devices, caller ids and IP maps and releases the DID.
    admin.accounts.DeleteAccounts(apb.DeleteAccountsRequest(names=[customer.name]), metadata=admin.metadata)
    assert admin.directory.GetDid(directory_pb2.GetDidRequest(name=did.name), metadata=admin.metadata).account == ""
    for get in (lambda: admin.directory.GetCallerId(directory_pb2.GetCallerIdRequest(name=cid.name),
                                                    metadata=admin.metadata),
                lambda: admin.directory.GetSipDevice(directory_pb2.GetSipDeviceRequest(name=device.name),
                                                     metadata=admin.metadata),
                lambda: admin.directory.GetIpMap(directory_pb2.GetIpMapRequest(name=ip_map.name),
                                                 metadata=admin.metadata)):
        assert failure(get).code == grpc.StatusCode.NOT_FOUND


def test_deleting_a_provider_disables_its_trunks(admin, provider):
    trunk = make_trunk(admin, provider)
    admin.accounts.DeleteAccounts(apb.DeleteAccountsRequest(names=[provider.name]), metadata=admin.metadata)
    after = admin.trunks.GetTrunk(trunks_pb2.GetTrunkRequest(name=trunk.name), metadata=admin.metadata)
    assert after.status == common_pb2.STATUS_INACTIVE


def test_localization_rules_are_validated_on_save(admin):
    good = admin.directory.CreateLocalization(directory_pb2.CreateLocalizationRequest(
        localization_id=uid("loc"), localization=directory_pb2.Localization(
            destination=["00/", "*/1", "/^1(44)(.*)$/\\1\\2/"], caller_id_inbound=["+/"])), metadata=admin.metadata)
    assert list(good.destination) == ["00/", "*/1", "/^1(44)(.*)$/\\1\\2/"]
    for field, rule in (("destination", "/[/x/"), ("caller_id_outbound", "ab/1"), ("termination_destination", "1")):
        result = failure(lambda f=field, r=rule: admin.directory.CreateLocalization(
            directory_pb2.CreateLocalizationRequest(localization_id=uid("loc"), localization=directory_pb2.Localization(
                **{f: ["00/", r]})), metadata=admin.metadata))
        assert result.fields == [f"{field}[1]"], rule


def test_account_token_cannot_touch_configuration(admin):
    from tollgate.v1 import auth_pb2

    account = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email(), password="long-enough-1")), metadata=admin.metadata)
    token = admin.auth.Login(auth_pb2.LoginRequest(login=account.email, password="long-enough-1")).token
    denied = failure(lambda: admin.rate_groups.ListRateGroups(rating_pb2.ListRateGroupsRequest(),
                                                              metadata=(("authorization", f"Bearer {token}"),)))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
