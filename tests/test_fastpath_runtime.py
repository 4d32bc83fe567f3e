"""The fast path following the real projection: initial load, changes within 1 s, fail-static, resync."""

from __future__ import annotations

import logging
import socket
import time

import pytest

import fastpath
from fastpath.deck_image import DeckImage
from fastpath.runtime import FastPath, redis_client
from tests.helpers import unique_email
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import common_pb2, rating_pb2, trunks_pb2


@pytest.fixture
def fast(control_server, tmp_path) -> FastPath:
    client = redis_client(control_server.redis_url)
    path = FastPath(client, str(tmp_path / "images"), control_server.keys.namespace, poll_seconds=0.05)
    path.load()
    yield path
    client.close()


def until(predicate, fast: FastPath, seconds: float = 1.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        fast.refresh()
        if predicate():
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


def make_routable_customer(admin) -> tuple[apb.Account, str]:
    suffix = str(time.monotonic_ns())[-8:]
    provider = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("p"), type=apb.PROVIDER)), metadata=admin.metadata)
    trunk = admin.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(trunk_id=f"t{suffix}", trunk=trunks_pb2.Trunk(
        provider=provider.name, gateways=[trunks_pb2.Gateway(address="127.0.0.1:5090")])), metadata=admin.metadata)
    group = admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=f"g{suffix}", rate_group=rating_pb2.RateGroup(trunks=[trunk.name])), metadata=admin.metadata)
    for method, parent, body in ((admin.rate_groups.ImportOriginationRates, group.name, "44,0.02\n"),
                                 (admin.trunks.ImportTerminationRates, trunk.name, "44,0.01\n")):
        method(iter([common_pb2.ImportRatesRequest(parent=parent, csv_data=b"prefix,rate_per_min\n" + body.encode())]),
               metadata=admin.metadata)
    customer = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("c"), billing=apb.Billing(rate_group=group.name))), metadata=admin.metadata)
    return customer, trunk.name.split("/")[1]


def test_the_compiled_engine_is_used(fast):
    assert fastpath.__impl__ == "cython"


def test_a_customer_configured_over_grpc_is_routable_within_a_second(admin, fast):
    customer, trunk = make_routable_customer(admin)
    call = (customer.account_number, "15550001111", "4420123456", 10_000_000, int(time.time()))
    elapsed = until(lambda: fast.decide(*call).code == 200, fast)
    decision = fast.decide(*call)
    assert [r.trunk for r in decision.routes] == [trunk] and decision.rate_per_min == 20_000
    assert isinstance(fast.world.termination_decks[trunk], DeckImage)  # decks are shared images
    assert elapsed < 1.0


def test_a_deleted_account_is_refused_within_a_second(admin, fast):
    customer, _ = make_routable_customer(admin)
    call = (customer.account_number, "1555", "4420123456", 10_000_000, int(time.time()))
    until(lambda: fast.decide(*call).code == 200, fast)
    admin.accounts.DeleteAccounts(apb.DeleteAccountsRequest(names=[customer.name]), metadata=admin.metadata)
    elapsed = until(lambda: fast.decide(*call).code == 403, fast)
    assert fast.decide(*call).reason == "Account disabled" and elapsed < 1.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fail_static_then_resync(admin, fast, caplog):
    customer, _ = make_routable_customer(admin)
    call = (customer.account_number, "1555", "4420123456", 10_000_000, int(time.time()))
    until(lambda: fast.decide(*call).code == 200, fast)
    real_client = fast._feed._redis
    fast._feed._redis = redis_client(f"redis://127.0.0.1:{_closed_port()}/0")  # Redis "goes away"
    caplog.set_level(logging.ERROR, logger="fastpath.runtime")
    for _ in range(30):
        started = time.monotonic()
        assert fast.decide(*call).code == 200  # the last good data keeps serving
        assert time.monotonic() - started < 0.2  # and an outage does not stall calls
        time.sleep(0.05)
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1  # logged once, not per call
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(name=customer.name,
                                                                              status=apb.INACTIVE)),
                                 metadata=admin.metadata)
    time.sleep(0.3)  # the change is published while this process cannot see Redis
    fast._feed._redis = real_client
    until(lambda: fast.decide(*call).code == 403, fast, seconds=2)


def test_deck_texts_at_their_longest_reach_the_decision(admin, fast):
    """Forced trunks with the longest ids the API takes and the longest prepend pass through the projection whole."""
    suffix = str(time.monotonic_ns())[-8:]
    provider = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("p"), type=apb.PROVIDER)), metadata=admin.metadata)
    ids = [f"{n}{suffix}-".ljust(63, "z" if n else "9") for n in range(3)]  # [a-z0-9][a-z0-9-]{0,62}
    prepend = "".join(str(n % 10) for n in range(32))
    for n, trunk_id in enumerate(ids):
        admin.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(trunk_id=trunk_id, trunk=trunks_pb2.Trunk(
            provider=provider.name, priority=n, gateways=[trunks_pb2.Gateway(address=f"127.0.0.1:{5090 + n}")])),
            metadata=admin.metadata)
        deck = f"prefix,rate_per_min,strip,prepend\n44,0.01,2,{prepend}\n".encode()
        admin.trunks.ImportTerminationRates(iter([common_pb2.ImportRatesRequest(
            parent=f"trunks/{trunk_id}", csv_data=deck)]), metadata=admin.metadata)
    group = admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=f"g{suffix}", rate_group=rating_pb2.RateGroup(trunks=[f"trunks/{ids[0]}"])),
        metadata=admin.metadata)
    admin.rate_groups.CreateOriginationRate(rating_pb2.CreateOriginationRateRequest(
        parent=group.name, origination_rate=rating_pb2.OriginationRate(
            prefix="44", rate_per_min=20_000, forced_trunks=[f"trunks/{ids[2]}", f"trunks/{ids[1]}"])),
        metadata=admin.metadata)
    customer = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("c"), billing=apb.Billing(rate_group=group.name))), metadata=admin.metadata)
    call = (customer.account_number, "15550001111", "4420123456", 10_000_000, int(time.time()))
    until(lambda: len(fast.decide(*call).routes) == 2, fast, seconds=2)
    routes = fast.decide(*call).routes
    assert [r.trunk for r in routes] == [ids[1], ids[2]]  # the forced trunks, by trunk priority
    assert all(len(r.trunk) == 63 and r.destination == prepend + "20123456" for r in routes)
    assert fast.world.origination_decks[group.name.split("/")[1]].longest_match("4420")[1][5] == [ids[2], ids[1]]
