"""The route simulator (RouteService.SimulateCall, `tollgate-admin route simulate`): the switch's own engine on the
live projection and call state, traced step by step, and the SIP answer it predicts (SPEC §5, §8).

Against the session's control server and Redis; no Kamailio here (tests/test_kamailio_wire.py holds the
predictions to the real switch's answers).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2

from control.routing.simulator import Answer, Live, predict
from fastpath.decision import Decision
from tests.helpers import failure, ok, ok_json, unique_email
from tests.kamailio_harness import EUR, dead_gateway, make_carrier, make_customer, number, update_trunk
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import auth_pb2, directory_pb2, operator_pb2, route_pb2

CALLER = "15550001111"
DESTINATION = "4420123456"
PASSWORD = "simulator-pass-1"


@dataclass
class World:
    account: str  # a customer on `rate_group`, 10.00 live, destination rule "00/"
    trunks: list[str]  # cheap (kept), dear (loss), elsewhere (no rate for 44)
    rate_group: str


def answer(response: route_pb2.SimulateCallResponse) -> tuple[int, str, str]:
    return response.sip_code, response.sip_reason, response.stage


@pytest.fixture(scope="module")
def world(admin, money) -> World:
    rate_group, trunks, _provider = make_carrier(admin, [
        ([dead_gateway()], "prefix,rate_per_min\n44,0.01\n"),
        ([dead_gateway()], "prefix,rate_per_min\n44,0.09\n"),
        ([dead_gateway()], "prefix,rate_per_min\n33,0.01\n"),
    ], "prefix,rate_per_min\n44,0.05\n")
    rules = admin.directory.CreateLocalization(directory_pb2.CreateLocalizationRequest(
        localization_id=f"sim{uuid.uuid4().hex[:8]}", localization=directory_pb2.Localization(destination=["00/"])),
        metadata=admin.metadata)
    customer = make_customer(admin, money, rate_group, localization=rules.name)
    return World(number(customer), trunks, rate_group)


def customer(admin, money, simulate, world: World, **settings) -> str:
    """Another customer of the world's rate group, once the simulator sees it (10.00 unless `balance`)."""
    account = number(make_customer(admin, money, world.rate_group, **settings))
    simulate.until(account, DESTINATION, lambda r: r.account_status == "ACTIVE")
    return account


# ---------------------------------------------------------------------------------------------- the trace


def test_a_routable_call_is_traced_step_by_step(admin, world, simulate):
    response = simulate.until(world.account, "00" + DESTINATION, lambda r: r.sip_code == 200)
    cheap, dear, elsewhere = world.trunks
    assert answer(response) == (200, "Relayed", "") and response.relayed_to == f"trunks/{cheap}"
    assert response.account_status == "ACTIVE" and response.engine == "cython"
    checks = [step.check for step in response.steps]
    assert checks[:5] == ["account", "cps", "concurrency", "localization", "number"]
    assert checks[-1] == "answer"
    rule = response.steps[3]
    assert (rule.rule_list, rule.rule, rule.before, rule.after) == ("destination", "00/", "00" + DESTINATION,
                                                                     DESTINATION)
    assert (response.direction, response.destination, response.caller_id_presented) == ("outbound", DESTINATION,
                                                                                         CALLER)
    assert (response.rate_group, response.prefix, response.rate_per_min) == (world.rate_group, "44", 50_000)
    # 10.00 pays the company's whole 10,800 s at 0.05/min (9.00), so that is the grant and its reserve.
    assert (response.available, response.granted_seconds, response.reserve) == (10 * EUR, 10_800, 9 * EUR)
    trunks = {t.trunk.split("/")[1]: t for t in response.trunks}
    assert {name: t.dropped for name, t in trunks.items()} == {cheap: "", dear: "loss", elsewhere: "no_rate"}
    assert (trunks[cheap].position, trunks[cheap].rate_per_min, trunks[cheap].cost) == (1, 10_000, 1_800_000)
    assert trunks[cheap].destination_sent == DESTINATION and trunks[cheap].gateways[0].endswith("/udp")
    assert (trunks[dear].position, trunks[dear].prefix, trunks[dear].rate_per_min) == (0, "44", 90_000)
    details = "\n".join(step.detail for step in response.steps)
    assert "dearer than the caller's rate" in details and "no termination rate for the number" in details


def test_the_simulation_changes_nothing(admin, money, world, simulate):
    before = (money.available(world.account, 0), money.open_calls(world.account))
    for _ in range(3):
        assert simulate(world.account, DESTINATION).sip_code == 200
    assert (money.available(world.account, 0), money.open_calls(world.account)) == before


# ---------------------------------------------------------------------------------------------- SPEC §8 answers


def test_refusals_of_the_decision(admin, money, world, simulate):
    assert answer(simulate(world.account, "33123456")) == (404, "No rate for destination", "rate")
    assert answer(simulate(world.account, DESTINATION + "0" * 12)) == (484, "Address Incomplete",
                                                                                    "number")
    broke = customer(admin, money, simulate, world, balance=0)
    money.credit(broke, 0)  # its money is known (restored): 0.00
    response = simulate.until(broke, DESTINATION, lambda r: r.sip_code == 402)
    assert answer(response) == (402, "Insufficient balance", "balance") and response.granted_seconds == 0


def test_cli_pool_refusal(admin, money, world, simulate):
    account = customer(admin, money, simulate, world)
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=apb.Account(name=f"accounts/{account}", billing=apb.Billing(cli_pool=6)),
        update_mask=field_mask_pb2.FieldMask(paths=["billing.cli_pool"])), metadata=admin.metadata)
    response = simulate.until(account, DESTINATION, lambda r: r.sip_code == 403)
    assert answer(response) == (403, "CLI not allowed", "cli")
    (cli,) = [step for step in response.steps if step.check == "cli"]
    assert cli.outcome == "refused" and "reject if not a DID" in cli.detail


def test_a_disabled_account(admin, money, world, simulate):
    account = customer(admin, money, simulate, world)
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(
        name=f"accounts/{account}", status=apb.INACTIVE)), metadata=admin.metadata)
    response = simulate.until(account, DESTINATION, lambda r: r.sip_code == 403)
    assert answer(response) == (403, "Account disabled", "account") and response.account_status == "INACTIVE"
    assert [step.check for step in response.steps] == ["account", "answer"]


def test_live_counters_cps_and_concurrent_calls(admin, money, redis_client, world, simulate):
    limited = customer(admin, money, simulate, world, cps=2, max_concurrent_calls=1)
    now = int(time.time())
    for second in (now, now + 1, now + 2):  # whichever second the server reads in
        redis_client.set(money.keys.cps(limited, second), 2, ex=5)
    response = simulate(limited, DESTINATION)
    assert answer(response) == (503, "CPS limit exceeded", "cps")
    (cps,) = [step for step in response.steps if step.check == "cps"]
    assert (cps.outcome, cps.count, cps.limit) == ("refused", 2, 2)
    for second in (now, now + 1, now + 2):
        redis_client.delete(money.keys.cps(limited, second))
    grant = money.admit_call(limited, "sim-open-call", now=now, cps=0, max_calls=0, credit_limit=0,
                             terms=(0, 0, 50_000, 1, 1), max_call_seconds=60)
    assert grant.outcome == "admitted"
    response = simulate(limited, DESTINATION)
    assert answer(response) == (503, "Concurrent call limit", "concurrency")
    assert response.available == 10 * EUR - grant.reserve  # the open call's reservation counts


def test_a_trunk_at_its_channel_limit_leaves_no_route(admin, money, fast, world, simulate):
    rate_group, (trunk,), _provider = make_carrier(admin, [([dead_gateway()], "prefix,rate_per_min\n44,0.01\n")],
                                                   "prefix,rate_per_min\n44,0.05\n")
    account = number(make_customer(admin, money, rate_group))
    update_trunk(admin, fast, trunk, lambda t: t.max_concurrent_calls == 1, max_concurrent_calls=1)
    money.seize_trunk(trunk, "another-call", now=int(time.time()), max_calls=1, cps=0,
                      hold_until=int(time.time()) + 60)
    try:
        response = simulate.until(account, DESTINATION, lambda r: r.sip_code == 503)
    finally:
        money.release_trunk(trunk, "another-call")
    assert answer(response) == (503, "No route available", "route")
    (item,) = response.trunks
    assert (item.dropped, item.position, item.busy_channels, item.max_concurrent_calls, item.at_limit) == (
        "", 1, 1, 1, True)
    assert [s.outcome for s in response.steps if s.check == "relay"] == ["refused"]


# ---------------------------------------------------------------------------------------------- the switch's order


def _decision(code: int = 200, stage: str = "done", terms: tuple = (0, 0, 50_000, 1, 1), **fields) -> Decision:
    return Decision(code=code, reason={200: "OK", 402: "Insufficient balance", 404: "No rate for destination",
                                       503: "No route available"}[code], stage=stage, terms=terms,
                    direction="outbound", **fields)


class _Account:
    cps = 1
    max_concurrent_calls = 1


def test_predict_follows_the_switchs_order():
    fine = Live(available=EUR, restored=True, calls_this_second=0, open_calls=0)
    no_rate, ok_call = _decision(404, "rate", ()), _decision(routes=("r",))
    # CPS before concurrency before the decision's refusals (tests/test_kamailio_relay.py shows the switch so).
    assert predict(no_rate, no_rate, _Account, Live(EUR, True, 1, 1), None).stage == "cps"
    assert predict(no_rate, no_rate, _Account, Live(EUR, True, 0, 1), None).stage == "concurrency"
    assert predict(no_rate, no_rate, _Account, fine, None) == Answer(404, "No rate for destination", "rate")
    # A paid call waits for the money to be restored before the money is looked at; a free one does not.
    broke = _decision(402, "balance")
    assert predict(ok_call, broke, _Account, Live(0, False, 0, 0), 0).stage == "call_state"
    assert predict(ok_call, broke, _Account, Live(0, True, 0, 0), 0).code == 402
    free = _decision(terms=(0, 0, 0, 1, 1))
    assert predict(free, free, _Account, Live(0, False, 0, 0), 0).code == 200
    # No route with PLENTY: the real balance decides between 402 and 503.
    no_route = _decision(503, "route")
    assert predict(no_route, broke, _Account, fine, None).code == 402
    assert predict(no_route, no_route, _Account, fine, None).code == 503
    assert predict(ok_call, ok_call, _Account, fine, None) == Answer(503, "No route available", "route")


# ---------------------------------------------------------------------------------------------- who may simulate


def _login(admin, **settings) -> tuple[str, tuple]:
    email = unique_email("sim")
    account = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=email, password=PASSWORD)), metadata=admin.metadata)
    token = admin.auth.Login(auth_pb2.LoginRequest(login=email, password=PASSWORD)).token
    return number(account), (("authorization", f"Bearer {token}"),)


def _operator(admin, role: int) -> tuple:
    made = admin.operators.CreateOperator(operator_pb2.CreateOperatorRequest(
        operator_id=f"sim{uuid.uuid4().hex[:8]}", operator=operator_pb2.Operator(role=role)), metadata=admin.metadata)
    return (("authorization", f"Bearer {made.token.token}"),)


def test_an_account_simulates_only_its_own_calls(admin, money, world, simulate):
    own, token = _login(admin)
    money.credit(own, 10 * EUR)
    assert simulate(own, DESTINATION, metadata=token).account_status in ("ACTIVE", "UNKNOWN")
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(
        account=apb.Account(name=f"accounts/{own}", billing=apb.Billing(rate_group=world.rate_group)),
        update_mask=field_mask_pb2.FieldMask(paths=["billing.rate_group"])), metadata=admin.metadata)
    seen = simulate.until(own, DESTINATION, lambda r: r.sip_code == 200, metadata=token)
    # Its own side only, as its CDRs show it: the carriers (trunks, gateways, their prices) stay hidden.
    assert seen.sip_code == 200 and seen.rate_group == world.rate_group
    assert not seen.trunks and not seen.relayed_to
    assert not any(step.trunk or "trunk " in step.detail for step in seen.steps)
    assert failure(lambda: simulate(world.account, DESTINATION, metadata=token)).code == grpc.StatusCode.NOT_FOUND


def test_operators_who_read_the_configuration_may_simulate(admin, world, simulate):
    readonly, billing = (_operator(admin, role) for role in (operator_pb2.OPERATOR_ROLE_READONLY,
                                                             operator_pb2.OPERATOR_ROLE_BILLING))
    assert simulate(world.account, DESTINATION, metadata=readonly).sip_code == 200
    denied = failure(lambda: simulate(world.account, DESTINATION, metadata=billing))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("fields", "field"), [
    ({"account": ""}, "account"),
    ({"account": "1000000001"}, "account"),
    ({"number": ""}, "number"),
    ({"number": "4" * 65}, "number"),
    ({"caller_id": "1" * 257}, "caller_id"),
    ({"call_id": "has space"}, "call_id"),
])
def test_bad_requests_name_their_field(admin, world, fields, field):
    request = route_pb2.SimulateCallRequest(account=f"accounts/{world.account}", caller_id=CALLER,
                                            number=DESTINATION)
    for name, value in fields.items():
        setattr(request, name, value)
    found = failure(lambda: admin.routes.SimulateCall(request, metadata=admin.metadata))
    assert (found.code, found.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


# ---------------------------------------------------------------------------------------------- the command line


def test_cli_prints_the_steps_and_the_answer(cli, world):
    text = ok(cli("route", "simulate", "--account", world.account, "--caller-id", CALLER, "--number",
                  "00" + DESTINATION))
    assert "destination rule 1 '00/': 004420123456 -> 4420123456" in text
    assert f"trunk {world.trunks[0]} kept as #1" in text
    assert text.rstrip().endswith(f"SIP answer: 200 Relayed -> trunks/{world.trunks[0]}")
    refused = ok(cli("route", "simulate", "--account", world.account, "--caller-id", CALLER, "--number", "33123456"))
    assert "REFUSED" in refused and "SIP answer: 404 No rate for destination (refused by: rate)" in refused


def test_cli_json_and_at(cli, world):
    found = ok_json(cli("route", "simulate", "--account", world.account, "--caller-id", CALLER, "--number",
                        DESTINATION, "--at", "2030-01-01T00:00:00+00:00", "--json"))
    assert (found["sip_code"], found["at_time"]) == (200, "2030-01-01T00:00:00Z")
    assert found["trunks"][0]["dropped"] == "" and found["steps"][0]["check"] == "account"
    bad = cli("route", "simulate", "--account", world.account, "--caller-id", CALLER, "--number", DESTINATION,
              "--at", "tomorrow")
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr
    missing = cli("route", "simulate", "--account", world.account, "--caller-id", CALLER, "--number", "4" * 65)
    assert missing.returncode != 0 and "number" in missing.stderr
