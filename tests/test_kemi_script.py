"""The KEMI script's Python, without Kamailio: its KSR-free modules directly, its entry points on a fake KSR.

callstate/plan.py and kemi/settlement.py are plain Python (the call's plan, what its end costs). The entry points of
kemi/tollgate_kemi.py run here against a recording stand-in for Kamailio's KSR module: a Python fault answers
500 with one log line, every entry kamailio.cfg names exists for app_python3 and app_python3s alike, and a
call's end reported several times settles once.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import sys
import time
import types
from pathlib import Path

import pytest

import kemi
from callstate.events import FAILED, HANGUP, REFUSED, CallEvent
from callstate.plan import CallPlan, Position, RoutePlan, final_answer, next_position
from fastpath.decision import Decision
from fastpath.reference.rating import Terms, cost
from kemi import render
from kemi.settlement import billable_seconds, refused_call, settle_call
from tests.kamailio_harness import CALLER, DESTINATION, EUR, balance, events, suffix

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0


def route(trunk: str = "t1", gateways: int = 1, **fields) -> RoutePlan:
    values = dict(trunk=trunk, provider="p1", gateways=tuple((f"127.0.0.1:{5060 + i}", "udp") for i in range(gateways)),
                  destination=DESTINATION, caller_id=CALLER, prefix="44", rate=300_000, terms=(0, 0, 300_000, 1, 1),
                  max_calls=0, cps=0, pdd_seconds=8, passes="", hide_topology=True)
    return RoutePlan(**(values | fields))


def plan(*routes: RoutePlan, **fields) -> CallPlan:
    values = dict(call_id="c1", account="a1", direction="outbound", caller_id_received=CALLER,
                  caller_id_presented=CALLER, destination_dialled=DESTINATION, destination=DESTINATION,
                  rate_group="g", prefix="44", rate=600_000, terms=(0, 0, 600_000, 1, 1), granted=60, reserve=600_000,
                  setup=NOW, record=False, routes=routes)
    return CallPlan(**(values | fields))


# ---------------------------------------------------------------------------------------------- plan, settlement


def test_a_plan_survives_its_encoding():
    original = plan(route("t1", 2, passes="dp", max_calls=3, pdd_seconds=4), route("t2", hide_topology=False),
                    record=True)
    assert CallPlan.decode(original.encode()) == original


def test_failover_goes_through_the_trunk_s_gateways_then_the_next_trunk_with_one():
    call = plan(route("t1", 2), route("t2", 0), route("t3", 1))
    assert next_position(call, Position(0, 0)) == Position(0, 1)
    assert next_position(call, Position(0, 1)) == Position(2, 0)  # t2 has no gateway
    assert next_position(call, Position(2, 0)) is None


@pytest.mark.parametrize(("answered_for", "billable"), [(0.0, 1), (0.3, 1), (1.0, 1), (1.001, 2), (59.2, 60),
                                                        (500.0, 60)])
def test_billable_seconds_round_up_at_least_one_and_stop_at_the_grant(answered_for, billable):
    assert billable_seconds(NOW, NOW + answered_for, granted=60) == billable


def test_an_unanswered_call_bills_nothing():
    assert billable_seconds(None, NOW + 30, granted=60) == 0


def test_a_300_ms_answered_call_pays_its_first_block():
    """SPEC §4: short-call fraud costs the first block (here a 60-second first increment)."""
    call = plan(route(terms=(0, 0, 300_000, 60, 60)), terms=(100, 0, 600_000, 60, 1))
    settled = settle_call(call, Position(0, 0), answer=NOW, end=NOW + 0.3, code=200)
    assert settled.event.billable_seconds == 1 and settled.event.end_reason == HANGUP
    assert (settled.customer_cost, settled.provider_cost) == (cost(1, Terms(100, 0, 600_000, 60, 1)),
                                                              cost(1, Terms(0, 0, 300_000, 60, 60)))
    assert settled.customer_cost == 100 + 600_000 and settled.provider_cost == 300_000


def test_the_event_names_the_trunk_and_gateway_the_call_last_went_to():
    call = plan(route("t1", 2), route("t2", destination="99" + DESTINATION, caller_id="4930111"))
    settled = settle_call(call, Position(1, 0), answer=None, end=NOW + 5, code=500, reason="Server Internal Error")
    event = settled.event
    assert (event.trunk, event.gateway, event.destination_sent, event.caller_id_presented) == (
        "t2", "127.0.0.1:5060", "99" + DESTINATION, "4930111")
    assert (event.sip_code, event.sip_reason, event.end_reason) == (500, "Server Internal Error", FAILED)
    assert (event.customer_cost, event.provider_cost) == (0, 0)
    assert settled.route == call.routes[1]


def test_a_refused_call_s_event_costs_nothing_and_names_the_refusing_check():
    decision = Decision(code=403, reason="CLI not allowed", stage="cli", direction="outbound",
                        destination="4420123456", rate_group="g", prefix="44", rate_per_min=600_000)
    event = refused_call("r1", "a1", decision, received=(CALLER, "9" + DESTINATION), at=NOW)
    assert refused_call("r1", "a1", decision, received=(CALLER, "9"), at=NOW,
                        answer=(503, "CPS limit exceeded", "cps")).stage == "cps"  # the admission refused it
    assert (event.sip_code, event.sip_reason, event.stage, event.end_reason) == (403, "CLI not allowed", "cli",
                                                                                 REFUSED)
    assert (event.customer_cost, event.provider_cost, event.billable_seconds) == (0, 0, 0)
    assert (event.caller_id_received, event.destination_dialled, event.rate_group) == (CALLER, "9" + DESTINATION,
                                                                                       "g")
    assert event.setup_time == event.end_time == NOW and event.answer_time is None
    assert CallEvent.decode({"event": event.encode()}) == event


def test_a_call_given_up_after_every_gateway_answers_what_rfc_3261_says():
    assert final_answer(502, "Bad Gateway") == (502, "Bad Gateway")
    assert final_answer(408, "Request Timeout") == (408, "Request Timeout")
    assert final_answer(503, "Service Unavailable") == (500, "Server Internal Error")  # §16.7
    assert final_answer(477, "") == (500, "Relay failed")


# ---------------------------------------------------------------------------------------------- on a fake KSR


class FakeKSR(types.ModuleType):
    """Just enough of Kamailio's KSR for the entry points, recording what is sent and logged."""

    def __init__(self, defines: dict[str, str], dialog: dict[str, str] | None = None):
        super().__init__("KSR")
        self.replies: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.variables = dict(dialog or {})
        self.metrics: list[tuple] = []  # (KSR.xhttp_prom function, its arguments)
        ns = types.SimpleNamespace
        self.kx = ns(get_def=lambda name: f'"{defines[name]}"', get_callid=lambda: "c1@test",
                     gete_ruser=lambda: "4420123456", gete_fuser=lambda: "1555", get_srcip=lambda: "127.0.0.1",
                     gete_au=lambda: "")
        self.sl = ns(send_reply=lambda code, reason: self.replies.append((code, reason)))
        self.ndb_redis = ns(redis_cmd_p1=lambda *args: -1, redis_cmd_p2=lambda *args: -1)  # unreachable: redis-py
        self.auth = ns(has_credentials=lambda realm: -1)
        self.htable = ns(sht_seti=lambda *args: 1, sht_reset=lambda *args: 1)
        self.dialog = ns(var_get=self.variables.get)
        self.hdr = ns(append_to_reply=lambda text: 1)
        self.err = self.errors.append
        self.warn = self.info = lambda text: None
        self.xhttp_prom = ns(**{name: self._recorder(name) for name in (
            "counter_inc_l1", "counter_inc_l2", "histogram_observe_l0", "gauge_set_l0")})

    def _recorder(self, name: str):
        return lambda *args: self.metrics.append((name, args)) or 1


def _defines(redis_url: str, namespace: str, tmp_path: Path, mode: str, metrics: str = "off") -> dict[str, str]:
    return {"TOLLGATE_PYTHONPATH": str(ROOT), "TOLLGATE_REDIS_URL": redis_url, "TOLLGATE_NAMESPACE": namespace,
            "TOLLGATE_IMAGE_DIR": str(tmp_path), "TOLLGATE_MODE": mode, "TOLLGATE_NODE": "test-node",
            "TOLLGATE_METRICS": metrics}


@pytest.fixture
def load_script(monkeypatch):
    """load_script(ksr) -> kemi/tollgate_kemi.py loaded against that fake KSR (with fresh kemi modules)."""

    def load(ksr: FakeKSR):
        monkeypatch.setitem(sys.modules, "KSR", ksr)
        for name in ("kemi.identify", "kemi.relay", "kemi.redirect", "kemi.metrics"):  # they bind KSR when imported
            monkeypatch.delitem(sys.modules, name, raising=False)
            # (and `from kemi import x` takes the package's attribute when it has one: the module bound to the
            # previous fake)
            monkeypatch.delattr(kemi, name.split(".")[1], raising=False)
        spec = importlib.util.spec_from_file_location(f"tollgate_kemi_{suffix()}", ROOT / "kemi" / "tollgate_kemi.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        return script

    return load


def test_a_python_fault_answers_500_and_logs_one_line(load_script, tmp_path):
    from fastpath.model import IpIndex, IpMap, World

    ksr = FakeKSR(_defines("redis://127.0.0.1:1/0", "x", tmp_path, "redirect", metrics="on"))
    script = load_script(ksr)
    handler = script.Tollgate(script.Settings())  # mod_init() would also set up logging for Kamailio

    class BrokenFastPath:
        world = World(ip_maps=IpIndex([IpMap(ipaddress.ip_network("127.0.0.1/32"), "", "1000000001")]))
        synced_at, version = 1.0, 7

        def refresh(self):
            return False

        def decide(self, *args):
            raise KeyError("a bug in the fast path")

        @property
        def engine(self):
            return self

    handler.fast, handler.pid, handler.loaded = BrokenFastPath(), os.getpid(), True
    assert handler.ksr_invite(None) == 1
    assert ksr.replies == [(500, "Server Internal Error")]
    assert len(ksr.errors) == 1 and ksr.errors[0].count("\n") == 1
    assert "KeyError" in ksr.errors[0] and "c1@test" in ksr.errors[0]
    assert [m for m in ksr.metrics if m[0] != "gauge_set_l0"] == [  # (the projection gauges: once per poll)
        ("counter_inc_l2", ("calls_total", 1, "failed", "500")),
        ("histogram_observe_l0", ("decision_seconds", ksr.metrics[-1][1][1]))]


def test_every_entry_kamailio_cfg_names_exists_for_app_python3_and_app_python3s(load_script, tmp_path):
    """kamailio.cfg enters Python by name ({{PYTHON_EXEC}}("name" [, "param"])): app_python3 calls the handler's
    method with the message first, app_python3s a module-level function with the param only."""
    script = load_script(FakeKSR(_defines("redis://127.0.0.1:1/0", "x", tmp_path, "redirect")))
    named = set(re.findall(r'\{\{PYTHON_EXEC\}\}\("(\w+)"', render.TEMPLATE.read_text()))
    assert named == {"ksr_invite", "ksr_register", "ksr_failover", "ksr_settle", "ksr_mark_answered"}
    for name in named:
        assert callable(getattr(script, name, None)), f"{name}: no module-level function for app_python3s"
        assert hasattr(script.Tollgate, name), f"{name}: no method for app_python3"
    calls = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *args: calls.append((name, args)) or 1

    script._handler = Recorder()
    assert script.ksr_invite() == 1 and script.ksr_settle("end") == 1
    assert calls == [("ksr_invite", (None,)), ("ksr_settle", (None, "end"))]


def test_kamailio_reporting_the_end_several_times_settles_once(load_script, tmp_path, money, redis_client,
                                                               control_server):
    """The expiry's local BYE (twice), then dialog:end twice: one debit and one event, which carries the
    provider's credit for the ledger to apply."""
    account, provider, call_id = f"c{suffix()}", f"p{suffix()}", f"twice-{suffix()}"
    now = time.time()
    call = plan(route(provider=provider), call_id=call_id, account=account, setup=now - 11)
    ksr = FakeKSR(_defines(control_server.redis_url, control_server.keys.namespace, tmp_path, "relay", "on"),
                  dialog={"tollgate": call.encode(), "tollgate_at": "0,0", "tollgate_answer": f"{now - 10:.6f}"})
    script = load_script(ksr)
    handler = script.Tollgate(script.Settings())
    handler.state, handler.pid = money, os.getpid()
    money.credit(account, EUR)
    assert money.admit_call(account, call_id, now=int(now), cps=0, max_calls=0, credit_limit=0,
                            terms=(0, 0, 600_000, 1, 1), max_call_seconds=60).reserve == 600_000

    for kind in ("expired", "expired", "end", "end"):
        handler.ksr_settle(None, kind)

    assert not ksr.errors
    (event,) = events(redis_client, control_server, account)
    billable = int(event["billable_seconds"])
    assert 10 <= billable <= 11
    assert balance(money, account) == EUR - billable * 10_000 and money.open_calls(account) == 0
    assert (event["provider"], event["provider_cost"]) == (provider, str(billable * 5_000))
    assert (event["sip_code"], event["end_reason"]) == ("200", "duration_limit")  # the first report counts
    assert ksr.metrics == [("counter_inc_l2", ("calls_total", 1, "answered", "200"))]  # one call, counted once
