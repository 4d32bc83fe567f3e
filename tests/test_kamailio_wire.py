"""tollgate in Kamailio's relay mode, what the gateway gets on the wire: caller-id policy, localization, refusals.

One Kamailio (relay mode, as in tests/test_kamailio_relay.py) for the module. Gateways are sipp UAS that
refuse every INVITE with 486 (no failover, nothing to hang up) and record what they received (-trace_msg):
the R-URI user and From user each call reached them with, found by its Call-ID. Customers are
IP-authenticated from 127.0.0.1 with a tech prefix of their own; SIP devices register from 127.0.0.3 and
127.0.0.4, where a sipp UAS then listens on the registered contact.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import field_mask_pb2

from tests.kamailio_harness import (
    CALLER,
    DESTINATION,
    Kamailio,
    SippResult,
    SippServer,
    add_device,
    events,
    free_udp_port,
    make_carrier,
    make_customer,
    map_ip,
    number,
    run_sipp,
    suffix,
    user_of,
)
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import directory_pb2, trunks_pb2

OUTSIDER = "15550009999"  # a caller id in no account's pool
SETTLE_SECONDS = 3.0  # how long a call is retried while Kamailio's workers may still hold the previous world


# ---------------------------------------------------------------------------------------------- helpers


def _call_id(result: SippResult) -> str:
    return next(m.headers("Call-ID")[0] for m in result.messages if m.direction == "sent")


def _final(result: SippResult) -> str:
    """The first line of the last final answer the caller received ("" when none)."""
    finals = [m for m in result.received() if (m.status or 0) >= 200]
    return finals[-1].first_line if finals else ""


def _event(redis_client, control_server, account: str, call_id: str, timeout: float = 3.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events(redis_client, control_server, account) if e["call_id"] == call_id]
        if found or time.monotonic() > deadline:
            return found[-1] if found else None
        time.sleep(0.05)


def _group_id(name: str) -> str:
    return name.split("/", 1)[1]


@dataclass
class Seen:
    """One call as the caller, the gateway and the settled event saw it."""

    answer: str  # the caller's final answer, first line
    call_id: str
    gateway: str = ""  # address of the gateway that got the INVITE
    ruri_user: str = ""
    from_user: str = ""
    headers: dict = field(default_factory=dict)
    event: dict = field(default_factory=dict)


def place(relay: Kamailio, workdir: Path, caller_id: str, dialled: str, expect: int,
          servers: list[SippServer], redis_client, control_server, account: str) -> Seen:
    """One INVITE from 127.0.0.1 expecting `expect`; what the caller, the gateways and Redis saw of it."""
    result = run_sipp(relay, "uac_expect.xml", workdir, expect=expect, rows=[(caller_id, dialled)], timeout=3)
    seen = Seen(_final(result), _call_id(result))
    if result.returncode != 0 or expect != 486:  # refused by Kamailio (or not as expected): no gateway involved
        return seen
    event = _event(redis_client, control_server, account, seen.call_id)
    seen.event = event or {}
    for server in servers:
        if server.address == seen.event.get("gateway"):
            invite = server.invite(seen.call_id)
            if invite is not None:
                seen.gateway = server.address
                seen.ruri_user = invite.first_line.split("sip:", 1)[1].split("@", 1)[0]
                seen.from_user = user_of(invite.headers("From")[0])
                seen.headers = {name: invite.headers(name) for name in ("P-Asserted-Identity", "X-Tollgate-Record")}
    return seen


def until(attempt, accept, timeout: float = SETTLE_SECONDS):
    """attempt() again while accept(result) is false and the world may still be on its way to Kamailio."""
    deadline = time.monotonic() + timeout
    while True:
        seen = attempt()
        if accept(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def wait_decision(fast, account: str, caller_id: str, accept, destination: str = DESTINATION,
                  available: int = 10**12, timeout: float = 5.0):
    """Until the projection in Redis decides the call as accept(decision) wants (Kamailio follows within ~0.3 s)."""
    deadline = time.monotonic() + timeout
    while True:
        fast.load()
        decision = fast.engine.decide(account, caller_id, destination, available, int(time.time()))
        if accept(decision):
            return decision
        assert time.monotonic() < deadline, f"the projection never decided as expected: {decision}"
        time.sleep(0.05)


def refusing_gateway(workdir: Path, calls: int = 200) -> SippServer:
    return SippServer("uas_refuse.xml", workdir, free_udp_port(), calls=calls, values={"CODE": 486}, timeout=120)


# ---------------------------------------------------------------------------------------------- CLI pool (SPEC §6)


@dataclass
class CliWorld:
    account: str
    tech_prefix: str
    dids: tuple[str, str]
    cids: tuple[str, str]
    rate_group: str  # id
    non_cli: str  # id
    main: SippServer  # the rate group's gateway
    other: SippServer  # the non-CLI rate group's gateway
    option: int = -1


@pytest.fixture(scope="module")
def cli_world(admin, money, tmp_path_factory) -> CliWorld:
    workdir = tmp_path_factory.mktemp("cli")
    main, other = refusing_gateway(workdir), refusing_gateway(workdir)
    rate_group, _trunks, _provider = make_carrier(admin, [([main.address], "prefix,rate_per_min\n44,0.01\n")],
                                                  "prefix,rate_per_min\n44,0.05\n")
    non_cli, _trunks, _provider = make_carrier(admin, [([other.address], "prefix,rate_per_min\n44,0.02\n")],
                                               "prefix,rate_per_min\n44,0.08\n")
    customer = make_customer(admin, money, rate_group)
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(
        name=customer.name, billing=apb.Billing(non_cli_rate_group=non_cli))), metadata=admin.metadata)
    base = str(uuid.uuid4().int)[:9]
    dids = (f"31{base}1", f"31{base}2")
    cids = (f"32{base}1", f"32{base}2")
    for did in dids:
        admin.directory.CreateDid(directory_pb2.CreateDidRequest(did_id=did, did=directory_pb2.Did(
            account=customer.name)), metadata=admin.metadata)
    for cid in cids:
        admin.directory.CreateCallerId(directory_pb2.CreateCallerIdRequest(
            parent=customer.name, caller_id=directory_pb2.CallerId(number=cid)), metadata=admin.metadata)
    world = CliWorld(number(customer), map_ip(admin, customer), dids, cids, _group_id(rate_group), _group_id(non_cli),
                     main, other)
    yield world
    main.stop()
    other.stop()


# option -> (the caller id "in the set" for it, what happens in the set, what happens out of it).
# Outcomes: "keep" / "did" / "cid" (the From user: the caller's own, or one of the account's DIDs / caller ids)
# on the rate group ("rg") or the non-CLI rate group ("non"); or 403.
_IN, _OUT = True, False
CLI_OPTIONS = {
    0: ("cid", ("keep", "rg"), ("keep", "rg")),
    1: ("did", ("keep", "rg"), ("did", "rg")),
    2: ("cid", ("keep", "rg"), ("cid", "rg")),
    3: ("did", ("keep", "rg"), ("keep", "non")),
    4: ("cid", ("keep", "rg"), ("keep", "non")),
    5: ("cid", ("keep", "rg"), ("keep", "non")),
    6: ("did", ("keep", "rg"), 403),
    7: ("cid", ("keep", "rg"), 403),
    8: ("did", ("keep", "rg"), 403),
}


def _set_cli_pool(admin, fast, world: CliWorld, option: int) -> None:
    """The account's CLI pool := option, once the projection in Redis decides by it."""
    if world.option == option:
        return
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=apb.Account(name=f"accounts/{world.account}", billing=apb.Billing(cli_pool=option)),
        update_mask=field_mask_pb2.FieldMask(paths=["billing.cli_pool"])), metadata=admin.metadata)
    expected = CLI_OPTIONS[option][2]

    def decided(decision) -> bool:
        if expected == 403:
            return decision.code == 403
        presented, group = expected
        pool = {"keep": (OUTSIDER,), "did": world.dids, "cid": world.cids}[presented]
        return (decision.code == 200 and decision.caller_id in pool
                and decision.rate_group == (world.rate_group if group == "rg" else world.non_cli))

    wait_decision(fast, world.account, OUTSIDER, decided)
    world.option = option


@pytest.mark.parametrize("in_set", [_IN, _OUT], ids=["in-set", "not-in-set"])
@pytest.mark.parametrize("option", sorted(CLI_OPTIONS))
def test_cli_pool_option_on_the_wire(option, in_set, admin, fast, relay, cli_world, tmp_path, redis_client,
                                     control_server):
    world = cli_world
    _set_cli_pool(admin, fast, world, option)
    pool_kind, inside, outside = CLI_OPTIONS[option]
    caller_id = (world.dids if pool_kind == "did" else world.cids)[1] if in_set else OUTSIDER
    expected = inside if in_set else outside
    servers = [world.main, world.other]

    def attempt() -> Seen:
        return place(relay, tmp_path, caller_id, world.tech_prefix + DESTINATION, 403 if expected == 403 else 486,
                     servers, redis_client, control_server, world.account)

    if expected == 403:
        seen = until(attempt, lambda s: s.answer.startswith("SIP/2.0 403"))
        assert seen.answer == "SIP/2.0 403 CLI not allowed"
        assert world.main.invite(seen.call_id, timeout=0) is None
        assert world.other.invite(seen.call_id, timeout=0) is None
        refused = _event(redis_client, control_server, world.account, seen.call_id)  # SPEC §9: its CDR
        assert refused is not None and (refused["sip_code"], refused["stage"], refused["end_reason"]) == (
            "403", "cli", "refused")
        assert refused["caller_id_received"] == caller_id and refused["customer_cost"] == "0"
        return
    presented, group = expected
    pool = {"keep": (caller_id,), "did": world.dids, "cid": world.cids}[presented]
    gateway, group_id, rate = ((world.main, world.rate_group, "50000") if group == "rg"
                               else (world.other, world.non_cli, "80000"))
    seen = until(attempt, lambda s: s.from_user in pool and s.gateway == gateway.address)
    assert seen.answer.startswith("SIP/2.0 486"), seen
    assert seen.gateway == gateway.address, seen  # the rate group's trunk, or the non-CLI rate group's
    assert seen.from_user in pool, seen
    assert seen.headers["P-Asserted-Identity"] == [f"<sip:{seen.from_user}@tollgate>"]
    assert seen.headers["X-Tollgate-Record"] == []  # allow_recording is off
    assert seen.ruri_user == DESTINATION
    event = seen.event
    assert (event["rate_group"], event["rate_per_min"]) == (group_id, rate)
    assert (event["caller_id_received"], event["caller_id_presented"]) == (caller_id, seen.from_user)


# ---------------------------------------------------------------------------------------------- localization (SPEC §7)


def test_account_and_trunk_localization_on_the_wire(admin, money, fast, relay, tmp_path, redis_client,
                                                    control_server):
    gateway = refusing_gateway(tmp_path, calls=2)
    tag = suffix()
    trunk_rules = admin.directory.CreateLocalization(directory_pb2.CreateLocalizationRequest(
        localization_id=f"trunk{tag}", localization=directory_pb2.Localization(
            termination_destination=["44/0044"], termination_caller_id=[r"/^44(\d+)$/0044\1/"])),
        metadata=admin.metadata)
    rate_group, (trunk,), _provider = make_carrier(
        admin, [([gateway.address], "prefix,rate_per_min,strip,prepend\n0044,0.01,2,9\n")],
        "prefix,rate_per_min\n44,0.05\n")
    admin.trunks.UpdateTrunk(trunks_pb2.UpdateTrunkRequest(
        trunk=trunks_pb2.Trunk(name=f"trunks/{trunk}", localization=trunk_rules.name),
        update_mask=field_mask_pb2.FieldMask(paths=["localization"])), metadata=admin.metadata)
    account_rules = admin.directory.CreateLocalization(directory_pb2.CreateLocalizationRequest(
        localization_id=f"acct{tag}", localization=directory_pb2.Localization(
            destination=["00/", r"/^0(\d{8,})$/44\1/"], caller_id_outbound=["0/44"])), metadata=admin.metadata)
    customer = make_customer(admin, money, rate_group, localization=account_rules.name)
    account, tech_prefix = number(customer), map_ip(admin, customer)
    # National caller id 07700900123 -> 447700900123 (account) -> 00447700900123 (trunk, regex);
    # destination 00 4420123456 (prefix rule) or 0 20123456 (regex) -> 4420123456 -> 004420123456 (trunk),
    # whose termination rate strips 2 digits and prepends 9: the gateway gets 94420123456.
    wait_decision(fast, account, "07700900123", lambda d: d.code == 200 and d.routes
                  and d.routes[0].caller_id == "00447700900123", destination="00" + DESTINATION)

    for dialled in ("00" + DESTINATION, "0" + DESTINATION[2:]):
        seen = until(lambda dialled=dialled: place(relay, tmp_path, "07700900123", tech_prefix + dialled, 486,
                                                   [gateway], redis_client, control_server, account),
                     lambda s: s.gateway == gateway.address)
        assert (seen.ruri_user, seen.from_user) == ("9" + DESTINATION, "00447700900123"), seen
        assert seen.event["destination_dialled"] == dialled and seen.event["caller_id_received"] == "07700900123"
        assert seen.event["destination_sent"] == "9" + DESTINATION
    gateway.stop()


# ---------------------------------------------------------------------------------------------- SPEC §8 refusals


@pytest.mark.parametrize(("case", "answer", "stage"), [
    ("no money", "402 Insufficient balance", "balance"),
    ("rate but no trunk rate", "503 No route available", "route"),
    ("no rate", "404 No rate for destination", "rate"),
    ("too long", "484 Address Incomplete", "number"),
])
def test_refusals_in_relay_mode(case, answer, stage, admin, money, fast, relay, tmp_path, redis_client,
                                control_server):
    """Each refusal of SPEC §8 answers as the table says and leaves one CDR naming its check, at no cost."""
    gateway_deck = f"prefix,rate_per_min\n{33 if case == 'rate but no trunk rate' else 44},0.01\n"
    rate_group, _trunks, _provider = make_carrier(admin, [([f"127.0.0.1:{free_udp_port()}"], gateway_deck)],
                                                  "prefix,rate_per_min\n44,0.05\n")
    customer = make_customer(admin, money, rate_group, balance=0 if case == "no money" else 10**7)
    account, tech_prefix = number(customer), map_ip(admin, customer)
    dialled = {"no rate": "33123456", "too long": DESTINATION + "0" * 12}.get(case, DESTINATION)
    code = int(answer.split()[0])
    wait_decision(fast, account, CALLER, lambda d: d.code == code, destination=dialled,
                  available=money.available(account, 0))
    result = until(lambda: run_sipp(relay, "uac_expect.xml", tmp_path, expect=code,
                                    rows=[(CALLER, tech_prefix + dialled)], timeout=3),
                   lambda r: r.returncode == 0)
    assert result.returncode == 0, result.explain()
    assert _final(result) == f"SIP/2.0 {answer}"
    assert money.open_calls(account) == 0 and money.available(account, 0) == (0 if case == "no money" else 10**7)
    cdr = _event(redis_client, control_server, account, _call_id(result))
    assert cdr is not None, "no CDR for the refused call"
    code, reason = answer.split(" ", 1)
    assert (cdr["sip_code"], cdr["sip_reason"], cdr["stage"], cdr["end_reason"]) == (code, reason, stage, "refused")
    assert (cdr["customer_cost"], cdr["provider_cost"], cdr["billable_seconds"]) == ("0", "0", "0")
    assert cdr["destination_dialled"] == dialled and cdr["caller_id_received"] == CALLER


# ---------------------------------------------------------------------------------------------- local, DID, recording


def _register(relay: Kamailio, tmp_path: Path, username: str, password: str, host: str, port: int) -> None:
    result = until(lambda: run_sipp(relay, "register.xml", tmp_path, expect=200, rows=[(username,)], local_ip=host,
                                    auth=(username, password), timeout=3, local_port=port),
                   lambda r: r.returncode == 0)
    assert result.returncode == 0, result.explain()


def test_local_and_did_calls_are_relayed_to_the_registered_device(admin, money, fast, relay, tmp_path, redis_client,
                                                                 control_server):
    rate_group, _trunks, _provider = make_carrier(admin, [([f"127.0.0.1:{free_udp_port()}"],
                                                           "prefix,rate_per_min\n44,0.01\n")],
                                                  "prefix,rate_per_min\n44,0.05\n")
    owner = make_customer(admin, money, rate_group)
    dialler = make_customer(admin, money, rate_group, allow_local_calls=True, lc_charge_per_min=60_000,
                            allow_recording=True)
    callee = add_device(admin, owner, "callee-password-1")
    caller = add_device(admin, dialler, "caller-password-1")
    did = "39" + str(uuid.uuid4().int)[:9]
    admin.directory.CreateDid(directory_pb2.CreateDidRequest(did_id=did, did=directory_pb2.Did(account=owner.name)),
                              metadata=admin.metadata)
    outsider = make_customer(admin, money, rate_group)
    tech_prefix = map_ip(admin, outsider)
    wait_decision(fast, number(outsider), CALLER, lambda d: d.code == 200 and d.direction == "inbound",
                  destination=did)
    callee_port, caller_port = free_udp_port("127.0.0.3"), free_udp_port("127.0.0.4")
    _register(relay, tmp_path, callee, "callee-password-1", "127.0.0.3", callee_port)
    _register(relay, tmp_path, caller, "caller-password-1", "127.0.0.4", caller_port)
    phone = SippServer("uas_answer.xml", tmp_path / "phone", callee_port, host="127.0.0.3", calls=2,
                       values={"BYE_TIMEOUT": 5_000})
    try:
        local = run_sipp(relay, "uac_auth_call.xml", tmp_path, expect=200, rows=[(caller, callee)],
                         local_ip="127.0.0.4", auth=(caller, "caller-password-1"), timeout=5, values={"HOLD": 300})
        assert local.returncode == 0, local.explain()
        inbound = run_sipp(relay, "uac_call.xml", tmp_path, expect=200, rows=[(CALLER, tech_prefix + did)],
                           timeout=5, values={"HOLD": 300})
        assert inbound.returncode == 0, inbound.explain()
        assert phone.result(timeout=5).returncode == 0
    finally:
        phone.stop()
    local_invite, did_invite = phone.received("INVITE")
    assert local_invite.first_line.startswith(f"INVITE sip:{callee}@127.0.0.3:{callee_port}")
    assert user_of(local_invite.headers("From")[0]) == caller
    assert local_invite.headers("X-Tollgate-Record") == ["yes"]  # the dialler's account allows recording
    assert did_invite.first_line.startswith(f"INVITE sip:{callee}@127.0.0.3:{callee_port}")
    assert user_of(did_invite.headers("From")[0]) == CALLER
    assert did_invite.headers("X-Tollgate-Record") == []  # the outsider's does not
    assert len(phone.received("BYE")) == 2

    (local_event,) = events(redis_client, control_server, number(dialler))
    assert local_event["direction"] == "local" and local_event["sip_code"] == "200"
    assert int(local_event["customer_cost"]) == 60_000  # one 60-second step at lc_charge_per_min
    (did_event,) = events(redis_client, control_server, number(outsider))
    assert did_event["direction"] == "inbound" and did_event["customer_cost"] == "0"
    assert money.open_calls(number(dialler)) == 0 and money.open_calls(number(outsider)) == 0


def test_recording_marks_the_relayed_invite_and_a_callers_own_mark_is_removed(admin, money, fast, relay, tmp_path,
                                                                              redis_client, control_server):
    gateway = refusing_gateway(tmp_path, calls=2)
    rate_group, _trunks, _provider = make_carrier(admin, [([gateway.address], "prefix,rate_per_min\n44,0.01\n")],
                                                  "prefix,rate_per_min\n44,0.05\n")
    recorded = make_customer(admin, money, rate_group, allow_recording=True)
    plain = make_customer(admin, money, rate_group)
    prefixes = {number(c): map_ip(admin, c) for c in (recorded, plain)}
    for account in prefixes:
        wait_decision(fast, account, CALLER, lambda d: d.code == 200)
    marks = {}
    for account, tech_prefix in prefixes.items():
        seen = until(lambda a=account, p=tech_prefix: place(relay, tmp_path, CALLER, p + DESTINATION, 486, [gateway],
                                                            redis_client, control_server, a),
                     lambda s: s.gateway == gateway.address)
        marks[account] = seen.headers.get("X-Tollgate-Record")
    assert marks == {number(recorded): ["yes"], number(plain): []}
    gateway.stop()
