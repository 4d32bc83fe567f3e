"""A real Prometheus server (Debian's `prometheus`) for tests, on a free loopback port.

start_prometheus() writes a configuration scraping the given targets every second into a work directory,
starts Prometheus there (its data and log in that directory too), waits until it is ready and returns a
handle that asks its HTTP API (query, targets) and stops it by its pid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.kamailio_harness import LOOPBACK, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"  # Prometheus' smallest: a test waits about a second for a scrape


@dataclass
class Prometheus:
    process: subprocess.Popen
    address: str
    workdir: Path

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path>; its `data` (raises when Prometheus answers an error)."""
        url = f"http://{self.address}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's vector: {its labels (sorted, without __name__): value}."""
        data = self.api("query", query=expr)
        return {tuple(sorted((k, v) for k, v in sample["metric"].items() if k != "__name__")):
                float(sample["value"][1]) for sample in data["result"]}

    def value(self, expr: str) -> float | None:
        """The single value of `expr` (wrap it in sum() when it may have several series), or None."""
        found = self.query(expr)
        if len(found) > 1:
            raise ValueError(f"{expr} has {len(found)} series: {found}")
        return next(iter(found.values()), None)

    def eventually(self, expr: str, accept: Callable[[float | None], bool], timeout: float = 20.0) -> float | None:
        """value(expr) once accept() takes it (scrapes come every second), else the last one seen."""
        deadline = time.monotonic() + timeout
        while not accept(found := self.value(expr)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return found

    def target_health(self) -> dict[str, str]:
        """job -> "up" / "down" / "unknown" of every active target."""
        return {t["labels"]["job"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def configuration(targets: dict[str, str]) -> dict:
    """A Prometheus configuration scraping job -> "host:port" (/metrics) every second. (YAML is a superset of
    JSON: it is written as JSON.)"""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                           for job, address in targets.items()],
    }


def start_prometheus(workdir: Path, targets: dict[str, str], timeout: float = 20.0) -> Prometheus:
    """Prometheus scraping `targets` (job -> host:port), ready to answer queries; raises with its log's end."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(configuration(targets), indent=2))
    address = f"{LOOPBACK}:{free_port()}"
    with (workdir / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={address}", "--storage.tsdb.retention.time=1h"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=workdir)
    server = Prometheus(process, address, workdir)
    deadline = time.monotonic() + timeout
    while not _ready(address):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"prometheus did not become ready:\n{server.log()[-3000:]}")
        time.sleep(0.1)
    return server


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/-/ready", timeout=1) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False
