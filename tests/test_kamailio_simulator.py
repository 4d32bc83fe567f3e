"""The route simulator against the real switch: for every SPEC §8 row a call can produce, the answer the simulator
predicts is the answer Kamailio gives (relay mode, IP-authenticated callers from 127.0.0.1 with a tech prefix).

Rows the simulator cannot produce, because they happen before it starts (it is given an identified account) or
do not depend on the call: the challenge (407/401) and wrong credentials (403), replayed credentials, a node over
its capacity (503 Overloaded), call state unreachable (the RPC itself fails UNAVAILABLE then), in-dialog requests,
OPTIONS, and "every gateway failed" (the carriers' own answers; the simulator says which trunk it relays to).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from google.protobuf import field_mask_pb2

from tests.helpers import unique_email
from tests.kamailio_harness import (
    CALLER,
    DESTINATION,
    Kamailio,
    dead_gateway,
    make_carrier,
    make_customer,
    map_ip,
    number,
    run_sipp,
    update_trunk,
)
from tollgate.v1 import account_pb2 as apb

FOLLOW_SECONDS = 0.6  # Kamailio's workers poll the projection's feed every 0.25 s
TEST_NODE = "simulator-test-node"


@dataclass
class Caller:
    account: str
    tech_prefix: str


def _final(result) -> str:
    finals = [m for m in result.received() if (m.status or 0) >= 200]
    return finals[-1].first_line.removeprefix("SIP/2.0 ") if finals else ""


def _caller(admin, money, rate_group: str, **settings) -> Caller:
    customer = make_customer(admin, money, rate_group, **settings)
    return Caller(number(customer), map_ip(admin, customer))


def predicted_and_real(simulate, relay: Kamailio, workdir, caller: Caller, dialled: str, code: int) -> tuple[str, str]:
    """(the simulator's answer, Kamailio's answer) for one call: the simulator is asked until the projection
    has the world (it predicts `code`), once more right before the call (live counters), then the call goes."""
    simulate.until(caller.account, dialled, lambda r: r.sip_code == code)
    time.sleep(FOLLOW_SECONDS)
    predicted = simulate(caller.account, dialled, caller_id=CALLER)
    result = run_sipp(relay, "uac_expect.xml", workdir, expect=code, rows=[(CALLER, caller.tech_prefix + dialled)],
                      timeout=3)
    return f"{predicted.sip_code} {predicted.sip_reason}", _final(result)


@pytest.fixture(scope="module")
def carrier(admin) -> tuple[str, str]:
    """(rate group, its only trunk): 44 routes (to a gateway nobody answers: no call here gets that far), 33 has
    an origination rate the trunk cannot terminate."""
    rate_group, (trunk,), _provider = make_carrier(admin, [([dead_gateway()], "prefix,rate_per_min\n44,0.01\n")],
                                                   "prefix,rate_per_min\n44,0.05\n35,0.05\n")
    return rate_group, trunk


def _update_account(admin, account: str, paths: list[str], **fields) -> None:
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(name=f"accounts/{account}", **fields),
                                                          update_mask=field_mask_pb2.FieldMask(paths=paths)),
                                 metadata=admin.metadata)


# Each row: how to make it (the caller's settings, then a change before the call) and the answer SPEC §8 gives.
def _disabled(admin, money, redis_client, caller):
    _update_account(admin, caller.account, ["status"], status=apb.INACTIVE)


def _cli_rejects(admin, money, redis_client, caller):
    _update_account(admin, caller.account, ["billing.cli_pool"], billing=apb.Billing(cli_pool=6))


def _no_money(admin, money, redis_client, caller):
    money.credit(caller.account, -money.available(caller.account, 0))


def _restoring(admin, money, redis_client, caller):
    """The caller's live money unknown, as after a Redis loss. First the control service's restorer must have
    passed the caller (it restores new accounts once, in order of creation): an account made later and
    never credited is restored only by it."""
    later = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(email=unique_email("later"))),
                                         metadata=admin.metadata)
    deadline = time.monotonic() + 10
    while not money.restored(number(later)):
        assert time.monotonic() < deadline, "the restorer never reached the new accounts"
        time.sleep(0.1)
    redis_client.hdel(money.keys.account(caller.account, "money"), "restored")


ROWS = {
    "account disabled": ({}, _disabled, DESTINATION, "403 Account disabled"),
    "CLI pool refuses": ({}, _cli_rejects, DESTINATION, "403 CLI not allowed"),
    "no origination rate": ({}, None, "33123456", "404 No rate for destination"),
    "not enough money": ({}, _no_money, DESTINATION, "402 Insufficient balance"),
    "no usable termination": ({}, None, "35123456", "503 No route available"),
    "destination too long": ({}, None, DESTINATION + "0" * 12, "484 Address Incomplete"),
    "money being restored": ({}, _restoring, DESTINATION, "503 Call state being restored"),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_the_simulator_predicts_the_switchs_refusal(row, admin, money, relay, carrier, simulate, redis_client,
                                                     tmp_path):
    settings, change, dialled, expected = ROWS[row]
    caller = _caller(admin, money, carrier[0], **settings)
    simulate.until(caller.account, DESTINATION, lambda r: r.account_status == "ACTIVE")
    if change is not None:
        change(admin, money, redis_client, caller)
    try:
        predicted, real = predicted_and_real(simulate, relay, tmp_path, caller, dialled, int(expected.split()[0]))
    finally:
        money.credit(caller.account, 0)  # restored again (the money row)
    assert (predicted, real) == (expected, expected)


def test_cps_and_concurrent_calls_as_predicted(admin, money, relay, carrier, simulate, redis_client, tmp_path):
    """The live counters: over the account's CPS this second, then at its concurrent-call limit."""
    caller = _caller(admin, money, carrier[0], cps=1, max_concurrent_calls=1)
    simulate.until(caller.account, DESTINATION, lambda r: r.account_status == "ACTIVE")
    now = int(time.time())
    for second in range(now, now + 4):  # the simulator and the call may fall in different seconds
        redis_client.set(money.keys.cps(caller.account, second), 1, ex=6)
    assert predicted_and_real(simulate, relay, tmp_path, caller, DESTINATION, 503) == (
        "503 CPS limit exceeded", "503 CPS limit exceeded")
    for second in range(now, now + 6):
        redis_client.delete(money.keys.cps(caller.account, second))
    money.heartbeat(TEST_NODE, time.time())  # a live node holds the open call (the reaper leaves it alone)
    money.admit_call(caller.account, "held-by-another-node", now=int(time.time()), cps=0, max_calls=0,
                     credit_limit=0, terms=(0, 0, 50_000, 1, 1), max_call_seconds=60, node=TEST_NODE)
    assert predicted_and_real(simulate, relay, tmp_path, caller, DESTINATION, 503) == (
        "503 Concurrent call limit", "503 Concurrent call limit")


def test_a_trunk_at_its_channel_limit_as_predicted(admin, money, fast, relay, simulate, tmp_path):
    rate_group, (trunk,), _provider = make_carrier(admin, [([dead_gateway()], "prefix,rate_per_min\n44,0.01\n")],
                                                   "prefix,rate_per_min\n44,0.05\n")
    caller = _caller(admin, money, rate_group)
    update_trunk(admin, fast, trunk, lambda t: t.max_concurrent_calls == 1, max_concurrent_calls=1)
    money.seize_trunk(trunk, "another-call", now=int(time.time()), max_calls=1, cps=0,
                      hold_until=int(time.time()) + 60)
    try:
        found = predicted_and_real(simulate, relay, tmp_path, caller, DESTINATION, 503)
    finally:
        money.release_trunk(trunk, "another-call")
    assert found == ("503 No route available", "503 No route available")


def test_a_relayed_call_reaches_the_predicted_trunk(admin, money, relay, simulate, gateways, tmp_path):
    """The simulator's 200 means "relayed": the INVITE reaches the trunk it names (whose gateway refuses it)."""
    second, first = gateways("uas_refuse.xml", CODE=486), gateways("uas_refuse.xml", CODE=486)
    rate_group, trunks, _provider = make_carrier(admin, [([second.address], "prefix,rate_per_min\n44,0.02\n"),
                                                         ([first.address], "prefix,rate_per_min\n44,0.01\n")],
                                                 "prefix,rate_per_min\n44,0.05\n")
    caller = _caller(admin, money, rate_group)
    predicted = simulate.until(caller.account, DESTINATION, lambda r: r.sip_code == 200 and len(r.trunks) == 2)
    assert predicted.relayed_to == f"trunks/{trunks[1]}"  # the cheaper one, though listed second
    time.sleep(FOLLOW_SECONDS)
    result = run_sipp(relay, "uac_expect.xml", tmp_path, expect=486, rows=[(CALLER, caller.tech_prefix + DESTINATION)],
                      timeout=3)
    assert result.returncode == 0, result.explain()
    assert len(first.received("INVITE")) == 1 and second.received("INVITE") == []
