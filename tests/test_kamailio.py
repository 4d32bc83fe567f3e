"""tollgate in Kamailio, on the wire: the real control service and Redis, real Kamailio, real sipp.

Kamailio runs kemi/tollgate_kemi.py in routing-server mode (302 with the gateways as Contacts). Every
party talks over 127.0.0.0/8: IP-authenticated customers call from 127.0.0.1 with a tech prefix of their
own, SIP devices call from 127.0.0.2 (and register from 127.0.0.3), which no IP map covers, so that no IP
map of one test identifies another test's caller.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import unique_email
from tests.kamailio_harness import (
    DESTINATION,
    Kamailio,
    SippResult,
    add_device,
    import_rates,
    make_customer,
    map_ip,
    options_probe,
    run_sipp,
    start_kamailio,
)
from tests.kamailio_harness import suffix as _suffix
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import directory_pb2, rating_pb2, trunks_pb2

DEVICE_IP = "127.0.0.2"  # no IP map covers it
PROPAGATION_SECONDS = 3.0  # control publishes within 0.5 s, a worker polls every 0.25 s; slack for a busy box


@pytest.fixture(scope="module")
def kamailio(control_server, tmp_path_factory) -> Kamailio:
    """tollgate in routing-server mode (302)."""
    instance = start_kamailio(tmp_path_factory.mktemp("kamailio"), redis_url=control_server.redis_url,
                              namespace=control_server.keys.namespace, mode="redirect")
    yield instance
    instance.stop()
    faults = instance.faults()
    assert not faults, "Python faults in Kamailio's log:\n" + "\n".join(faults)


@pytest.fixture
def sipp_dir(tmp_path) -> Path:
    return tmp_path / "sipp"


# ---------------------------------------------------------------------------------------------- world


def make_carrier(admin) -> tuple[str, list[str]]:
    """A provider with two trunks: the cheap one has two gateways, the dear one one gateway over TCP and a
    prepend of 99. Returns the rate group (origination 44 at 0.05/min) and the trunk ids, cheapest first."""
    suffix = _suffix()
    provider = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("carrier"), type=apb.PROVIDER)), metadata=admin.metadata)
    trunks = []
    for name, gateways, deck in (
        ("cheap", [trunks_pb2.Gateway(address="127.0.0.1:5091"), trunks_pb2.Gateway(address="127.0.0.1:5092")],
         "prefix,rate_per_min\n44,0.01\n"),
        ("dear", [trunks_pb2.Gateway(address="127.0.0.1:5093", transport=trunks_pb2.TRANSPORT_TCP)],
         "prefix,rate_per_min,prepend\n44,0.02,99\n"),
    ):
        trunk = admin.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(
            trunk_id=f"{name}{suffix}", trunk=trunks_pb2.Trunk(provider=provider.name, gateways=gateways)),
            metadata=admin.metadata)
        import_rates(admin.trunks.ImportTerminationRates, trunk.name, deck, admin)
        trunks.append(trunk.name)
    group = admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=f"g{suffix}", rate_group=rating_pb2.RateGroup(trunks=trunks)), metadata=admin.metadata)
    import_rates(admin.rate_groups.ImportOriginationRates, group.name, "prefix,rate_per_min\n44,0.05\n", admin)
    return group.name, [t.split("/")[1] for t in trunks]


@pytest.fixture(scope="module")
def carrier(admin) -> tuple[str, list[str]]:
    return make_carrier(admin)


def set_status(admin, customer: apb.Account, status) -> None:
    admin.accounts.UpdateAccount(apb.UpdateAccountRequest(account=apb.Account(name=customer.name, status=status)),
                                 metadata=admin.metadata)


# ---------------------------------------------------------------------------------------------- calls


def call(kamailio: Kamailio, sipp_dir: Path, expect: int, *, caller_id: str = "15550001111", dialled: str,
         device: tuple[str, str] | None = None, settle: float = 0.0) -> SippResult:
    """One INVITE (a device's, with digest, when `device` = (username, password)) expecting `expect`.
    With `settle`, retry for that long while the answer differs (the projection may still be on its way)."""
    deadline = time.monotonic() + settle
    while True:
        if device:
            result = run_sipp(kamailio, "uac_auth_expect.xml", sipp_dir, expect=expect, rows=[(caller_id, dialled)],
                              local_ip=DEVICE_IP, auth=device, timeout=3)
        else:
            result = run_sipp(kamailio, "uac_expect.xml", sipp_dir, expect=expect, rows=[(caller_id, dialled)],
                              timeout=3)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def contacts(result: SippResult, status: int = 302) -> list[tuple[str, str]]:
    """(uri, q) of every Contact of the answer, in order, whether in one header or several."""
    answer = result.received(status)[-1]
    found = []
    for value in answer.headers("Contact") + answer.headers("m"):
        for entry in re.findall(r"<([^>]*)>([^,]*)", value):
            q = re.search(r";\s*q=([0-9.]+)", entry[1])
            found.append((entry[0], q.group(1) if q else ""))
    return found


# ---------------------------------------------------------------------------------------------- tests


def test_ip_customer_is_redirected_to_the_gateways_in_failover_order(admin, money, kamailio, carrier, sipp_dir):
    rate_group, _trunks = carrier
    customer = make_customer(admin, money, rate_group)
    tech_prefix = map_ip(admin, customer)
    result = call(kamailio, sipp_dir, 302, caller_id="15550001111", dialled=tech_prefix + DESTINATION,
                  settle=PROPAGATION_SECONDS)
    assert result.returncode == 0, result.explain()
    assert contacts(result) == [
        (f"sip:{DESTINATION}@127.0.0.1:5091", "1"),  # cheapest trunk, primary gateway
        (f"sip:{DESTINATION}@127.0.0.1:5092", "0.999"),  # its failover gateway
        (f"sip:99{DESTINATION}@127.0.0.1:5093;transport=tcp", "0.998"),  # next trunk, its prepend applied
    ]
    assert result.received(302)[-1].headers("P-Asserted-Identity") == ["<sip:15550001111@tollgate>"]


def test_admission_survives_redis_forgetting_its_scripts(admin, money, kamailio, carrier, sipp_dir, redis_client):
    """Kamailio's ndb_redis runs the admission script by its SHA; after a Redis restart (SCRIPT FLUSH here)
    the call still gets its answer (redis-py loads the script again), and the next one is admitted too."""
    rate_group, _trunks = carrier
    customer = make_customer(admin, money, rate_group)
    tech_prefix = map_ip(admin, customer)
    first = call(kamailio, sipp_dir, 302, dialled=tech_prefix + DESTINATION, settle=PROPAGATION_SECONDS)
    assert first.returncode == 0, first.explain()
    redis_client.script_flush()
    for _ in range(2):
        result = call(kamailio, sipp_dir, 302, dialled=tech_prefix + DESTINATION)
        assert result.returncode == 0, result.explain() + "\n" + "\n".join(kamailio.log().splitlines()[-20:])
    noscript = [line for line in kamailio.log().splitlines() if "NOSCRIPT" in line]
    assert 1 <= len(noscript) <= 2, noscript  # once per worker that met the flushed cache, not once per call


def test_keepalive_options_is_answered_200_once_routing_data_is_loaded(kamailio):
    assert options_probe(kamailio.host, kamailio.port) == 200


def test_unknown_source_without_credentials_is_challenged(kamailio, sipp_dir):
    result = run_sipp(kamailio, "uac_expect.xml", sipp_dir, expect=407, rows=[("15550001111", DESTINATION)],
                      local_ip=DEVICE_IP, timeout=3)
    assert result.returncode == 0, result.explain()
    (challenge,) = result.received(407)[-1].headers("Proxy-Authenticate")
    assert challenge.startswith('Digest realm="tollgate"') and 'qop="auth"' in challenge


def test_destination_without_a_rate_is_404(admin, money, kamailio, carrier, sipp_dir):
    customer = make_customer(admin, money, carrier[0])
    tech_prefix = map_ip(admin, customer)
    result = call(kamailio, sipp_dir, 404, dialled=tech_prefix + "33123456", settle=PROPAGATION_SECONDS)
    assert result.returncode == 0, result.explain()
    assert result.received(404)[-1].first_line == "SIP/2.0 404 No rate for destination"


def test_inactive_ip_customer_is_refused_403(admin, money, kamailio, carrier, sipp_dir):
    customer = make_customer(admin, money, carrier[0])
    tech_prefix = map_ip(admin, customer)
    assert call(kamailio, sipp_dir, 302, dialled=tech_prefix + DESTINATION, settle=PROPAGATION_SECONDS).returncode == 0
    set_status(admin, customer, apb.INACTIVE)
    result = call(kamailio, sipp_dir, 403, dialled=tech_prefix + DESTINATION, settle=PROPAGATION_SECONDS)
    assert result.returncode == 0, result.explain()
    assert result.received(403)[-1].first_line == "SIP/2.0 403 Account disabled"


def test_device_digest_wrong_password_403_right_password_routed(admin, money, kamailio, carrier, sipp_dir):
    customer = make_customer(admin, money, carrier[0])
    username = add_device(admin, customer, "right-password-1")
    routed = call(kamailio, sipp_dir, 302, dialled=DESTINATION, device=(username, "right-password-1"),
                  settle=PROPAGATION_SECONDS)
    assert routed.returncode == 0, routed.explain()
    assert contacts(routed)[0] == (f"sip:{DESTINATION}@127.0.0.1:5091", "1")
    wrong = call(kamailio, sipp_dir, 403, dialled=DESTINATION, device=(username, "wrong-password-1"))
    assert wrong.returncode == 0, wrong.explain()
    unknown = call(kamailio, sipp_dir, 403, dialled=DESTINATION, device=(f"nobody{_suffix()}", "right-password-1"))
    assert unknown.returncode == 0, unknown.explain()


def test_deleted_device_account_is_refused_403(admin, money, kamailio, carrier, sipp_dir):
    customer = make_customer(admin, money, carrier[0])
    username = add_device(admin, customer, "right-password-1")
    assert call(kamailio, sipp_dir, 302, dialled=DESTINATION, device=(username, "right-password-1"),
                settle=PROPAGATION_SECONDS).returncode == 0
    admin.accounts.DeleteAccounts(apb.DeleteAccountsRequest(names=[customer.name]), metadata=admin.metadata)
    started = time.monotonic()
    refused = call(kamailio, sipp_dir, 403, dialled=DESTINATION, device=(username, "right-password-1"),
                   settle=PROPAGATION_SECONDS)
    assert refused.returncode == 0, refused.explain()
    assert time.monotonic() - started < 2.0  # SPEC §2: refused from the next call on, target within 1 s


def test_registered_device_is_reached_by_local_and_did_calls(admin, money, kamailio, carrier, sipp_dir):
    customer = make_customer(admin, money, carrier[0], allow_local_calls=True)
    callee = add_device(admin, customer, "callee-password-1")
    caller = add_device(admin, customer, "caller-password-1")
    did = str(uuid.uuid4().int)[:11]
    admin.directory.CreateDid(directory_pb2.CreateDidRequest(did_id=did, did=directory_pb2.Did(account=customer.name)),
                              metadata=admin.metadata)
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while True:  # the device must be known before it can register
        registered = run_sipp(kamailio, "register.xml", sipp_dir, expect=200, rows=[(callee,)], local_ip="127.0.0.3",
                              auth=(callee, "callee-password-1"), timeout=3)
        if registered.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert registered.returncode == 0, registered.explain()
    (contact,) = contacts(registered, 200)
    assert contact[0].startswith(f"sip:{callee}@127.0.0.3:")

    local = call(kamailio, sipp_dir, 302, dialled=callee, device=(caller, "caller-password-1"),
                 settle=PROPAGATION_SECONDS)
    assert local.returncode == 0, local.explain()
    assert [uri for uri, _q in contacts(local)] == [contact[0]]

    outsider = make_customer(admin, money, carrier[0])
    inbound = call(kamailio, sipp_dir, 302, dialled=map_ip(admin, outsider) + did, settle=PROPAGATION_SECONDS)
    assert inbound.returncode == 0, inbound.explain()
    assert [uri for uri, _q in contacts(inbound)] == [contact[0]]


def test_register_with_a_wrong_password_is_403(admin, money, kamailio, carrier, sipp_dir):
    customer = make_customer(admin, money, carrier[0])
    username = add_device(admin, customer, "right-password-1")
    result = run_sipp(kamailio, "register.xml", sipp_dir, expect=403, rows=[(username,)], local_ip=DEVICE_IP,
                      auth=(username, "wrong-password-1"), timeout=3)
    assert result.returncode == 0, result.explain()


# ---------------------------------------------------------------------------------------------- faults


def test_without_redis_at_start_kamailio_answers_503_and_logs_once_per_worker(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    instance = start_kamailio(tmp_path / "kamailio", redis_url=f"redis://127.0.0.1:{closed}/0", namespace="nowhere")
    try:
        assert options_probe(instance.host, instance.port) == 503  # keepalive: this node cannot route
        for _ in range(3):  # answered at once (another node may route it), never left unanswered
            result = run_sipp(instance, "uac_expect.xml", tmp_path / "sipp", expect=503,
                              rows=[("15550001111", DESTINATION)], timeout=3)
            assert result.returncode == 0, result.explain()
            assert result.received(503)[-1].first_line == "SIP/2.0 503 Routing data not loaded"
    finally:
        instance.stop()
    # Kamailio's own Redis client (ndb_redis, the admission path) reports the outage as it starts each process;
    # anything else logged as an error would be a fault.
    faults = [line for line in instance.faults() if not ("ndb_redis" in line and "redisc_init" in line)]
    assert not faults, faults
    # once per SIP worker: 2 UDP and 2 TCP receivers (TCP and TLS share the TCP workers)
    assert len([line for line in instance.log().splitlines() if "projection not loaded yet" in line]) == 4
