"""Prometheus metrics (README "Metrics"): a real Prometheus scrapes the control service and a Kamailio node
while calls go through, and its HTTP API shows the counters moved by exactly what the calls did.

The node takes one new call a second per source (conftest.metered_relay): an answered call, a refused one and
then a burst of three in one second - the first refused, the other two shed natively with 503 - each group in
a second of its own. The session's control service is shared with other test modules, so its counters are
compared with their values before (read from its /metrics directly).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kamailio_harness import ack_and_bye, customer_over, invite, new_call_id
from tests.sip_wire import Peer
from tests.test_kamailio_cdrs import cdr_of
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import auth_pb2

UNRATED = "3312345678"  # the customer's rate group prices 44 only: refused by the decision
ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"
HISTOGRAM_SAMPLES = re.compile(r"_(bucket|count|sum)$")


def documented() -> set[str]:
    """The metric names README's "Metrics" section lists in its tables."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(tollgate_\w+)` \|", section, re.MULTILINE))


def exposed(samples: dict, documented_name: str) -> bool:
    """A documented metric is in a scrape: as itself (counter, gauge) or as its histogram's _count."""
    names = {name for name, _labels in samples}
    return documented_name in names or f"{documented_name}_count" in names


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics at address, parsed: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def counter(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def next_second() -> None:
    """Sleep into the next wall-clock second (the node counts a source's calls per epoch second)."""
    time.sleep(1.02 - time.time() % 1)


def place_calls(relay, customer) -> tuple[str, int]:
    """An answered call, a refused one, then three in one second; (the refused call's id, its code)."""
    with Peer() as caller:
        next_second()
        sent, ok = invite(caller, relay, customer.dialled())
        assert ok is not None and ok.status == 200, ok and ok.first_line
        assert (bye := ack_and_bye(caller, relay, sent, ok)) is not None and bye.status == 200
        next_second()
        refused_id = new_call_id()
        _sent, refused = invite(caller, relay, customer.dialled(UNRATED), call_id=refused_id)
        assert refused is not None and refused.status >= 400, refused and refused.first_line
        next_second()
        burst = [invite(caller, relay, customer.dialled(UNRATED))[1] for _ in range(3)]
    assert [m.status if m else None for m in burst] == [refused.status, 503, 503]
    return refused_id, refused.status


def test_prometheus_sees_a_node_and_the_control_service_count_calls(admin, money, fast, metered_relay, carriers,
                                                                   prometheus, control_server, redis_client):
    control = f"127.0.0.1:{control_server.running.metrics_port}"
    server = prometheus({"control": control, "kamailio": metered_relay.metrics_address})
    before = scrape(control)
    customer = customer_over(admin, money, fast, [carriers("answer")])
    refused_id, refused_code = place_calls(metered_relay, customer)
    with pytest.raises(grpc.RpcError) as missing:
        admin.accounts.GetAccount(apb.GetAccountRequest(name="accounts/9999999999"), metadata=admin.metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError):
        admin.auth.Login(auth_pb2.LoginRequest(login="nobody@example.com", password="wrong"))
    stage = cdr_of(redis_client, control_server, customer.account, refused_id)["stage"]

    assert server.eventually("count(up == 1)", lambda v: v == 2) == 2  # both scraped, both answering
    assert server.target_health() == {"control": "up", "kamailio": "up"}
    node = '{job="kamailio"}'
    exactly = {
        'tollgate_sip_calls_total{job="kamailio",outcome="answered",code="200"}': 1,
        f'tollgate_sip_calls_total{{job="kamailio",outcome="refused",code="{refused_code}"}}': 2,
        f'tollgate_sip_refusals_total{{job="kamailio",stage="{stage}"}}': 2,
        'tollgate_sip_shed_total{job="kamailio",reason="source_cps"}': 2,
        'tollgate_sip_calls_total{job="kamailio",outcome="shed",code="503"}': 2,
        f"tollgate_sip_decision_seconds_count{node}": 3,  # the shed calls never reached Python
        f"tollgate_sip_admission_rtt_seconds_count{node}": 3,
    }
    for expr, expected in exactly.items():
        assert server.eventually(expr, lambda v, e=expected: v == e) == expected, expr
    p99 = server.value(f"histogram_quantile(0.99, tollgate_sip_decision_seconds_bucket{node})")
    assert p99 is not None and 0 < p99 <= 1
    node_version = server.value(f"tollgate_sip_projection_version{node}")
    assert node_version and node_version > 0
    assert server.value(f"time() - tollgate_sip_projection_synced_timestamp_seconds{node}") < 60

    moved = {  # control: at least what this test did on top of the value before
        "tollgate_cdrs_recorded_total": 3,  # answered, refused, refused (the shed leave no CDR)
        'tollgate_grpc_handled_total{method="AccountService/GetAccount",code="NOT_FOUND"}': 1,
        'tollgate_grpc_handling_seconds_count{method="AccountService/CreateAccount"}': 2,  # provider, customer
        "tollgate_login_failures_total": 1,
    }
    for expr, delta in moved.items():
        name, _, labels = expr.partition("{")
        pairs = dict(part.split("=") for part in labels.rstrip("}").split(",")) if labels else {}
        wanted = counter(before, name, **{k: v.strip('"') for k, v in pairs.items()}) + delta
        found = server.eventually(f'sum({name}{{job="control",{labels.rstrip("}")}}})', lambda v, w=wanted: v >= w)
        assert found is not None and found >= wanted, expr
    assert server.eventually('tollgate_projection_version{job="control"}', lambda v: v >= node_version) >= node_version
    assert server.eventually('tollgate_ledger_backlog{job="control"}', lambda v: v == 0) == 0
    assert server.value('tollgate_notifications_pending{job="control"}') is not None
    names = documented()  # every documented metric is there by now, and nothing there is undocumented
    node_samples, control_samples = scrape(metered_relay.metrics_address), scrape(control)
    assert {n for n in names if n.startswith("tollgate_sip_") and not exposed(node_samples, n)} == set()
    assert {n for n in names if not n.startswith("tollgate_sip_") and not exposed(control_samples, n)} == set()
    scraped = {HISTOGRAM_SAMPLES.sub("", name) for name, _ in (*node_samples, *control_samples)}
    assert {n for n in scraped if n.startswith("tollgate_")} <= names


def test_the_grafana_dashboard_queries_documented_metrics_in_valid_promql(tmp_path):
    panels = json.loads(DASHBOARD.read_text())["panels"]
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    used = {HISTOGRAM_SAMPLES.sub("", name) for expr in expressions for name in re.findall(r"tollgate_\w+", expr)}
    assert used and used <= documented()
    # promtool (Debian's prometheus) parses each as a recording rule's expression; Grafana's variables filled in.
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": [
        {"record": f"tollgate:panel{i}", "expr": expr.replace("$__rate_interval", "1m").replace("$node", ".*")}
        for i, expr in enumerate(expressions)]}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
