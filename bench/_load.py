"""bench/bench_kamailio.py's load: one sipp step (a rate for some seconds against one Kamailio, with an optional
sipp gateway answering), and what it measured."""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import _repo_path  # noqa: F401  (the repository root on sys.path, for tests/)
from _nodes import Processes, cpu_seconds_of

from tests.kamailio_harness import CALLER, LOOPBACK, SIPP, Kamailio, free_udp_port

CLEAN = 0.005  # a step is clean when at most 0.5 % of its calls failed
RECV_TIMEOUT_S = 5  # a call not answered within this is failed (sipp retransmits the INVITE meanwhile)


def fill(template: Path, workdir: Path, **values: object) -> Path:
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    path = workdir / template.name
    path.write_text(text)
    return path


def stat_row(path: Path) -> dict[str, str]:
    """The last row of a sipp -trace_stat file (cumulative counters at the end of the run)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].rstrip(";").split(";"), lines[-1].rstrip(";").split(";"), strict=False))


def elapsed_seconds(value: str) -> float:
    """sipp's ElapsedTime(C): HH:MM:SS, then a fraction after ':' or '.' (its digits say its unit)."""
    hours, minutes, rest = value.split(":", 2)
    seconds, _, fraction = rest.replace(":", ".").partition(".")
    whole = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


@dataclass
class Step:
    target: str
    rate: int  # offered calls/s
    placed: int
    succeeded: int
    seconds: float  # sipp's elapsed time
    kamailio_cpu: float
    redis_cpu: float
    sipp_exit: int
    wall: float  # seconds over which the CPU was measured
    idle: float  # the instance's CPU seconds per second without traffic

    @property
    def failed(self) -> int:
        return self.placed - self.succeeded

    @property
    def failure_ratio(self) -> float:
        return self.failed / self.placed if self.placed else 1.0

    @property
    def clean(self) -> bool:
        return self.placed > 0 and self.failure_ratio <= CLEAN

    @property
    def cps(self) -> float:
        return self.succeeded / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.kamailio_cpu / self.succeeded * 1e6 if self.succeeded else float("nan")

    @property
    def net_cpu_us(self) -> float:
        """CPU per call above the instance's idle burn."""
        net = self.kamailio_cpu - self.idle * self.wall
        return net / self.succeeded * 1e6 if self.succeeded else float("nan")

    @property
    def redis_us(self) -> float:
        return self.redis_cpu / self.succeeded * 1e6 if self.succeeded else float("nan")


def run_load(name: str, kamailio: Kamailio, scenario: Path, workdir: Path, rate: int, seconds: int,
             processes: Processes, rpid: int | None, idle: float, *, values: dict[str, object] | None = None,
             uas: tuple[Path, int] | None = None, source: str = LOOPBACK) -> Step:
    """`rate` calls/s for `seconds` (rate x seconds calls, bounded in time) from `source` against one Kamailio;
    with `uas` = (scenario, port), a sipp gateway on that port answers them."""
    step_dir = workdir / f"{name}_{rate}_{secrets.token_hex(3)}"
    step_dir.mkdir(parents=True)
    calls = rate * seconds
    limit = seconds + RECV_TIMEOUT_S + 5
    inject = step_dir / "inject.csv"
    inject.write_text(f"SEQUENTIAL\n{CALLER};{values['DIALLED'] if values else ''};\n")
    gateway = None
    if uas:
        gateway = subprocess.Popen(
            [SIPP, "-sf", str(fill(uas[0], step_dir)), "-i", LOOPBACK, "-p", str(uas[1]), "-m", str(calls),
             "-timeout", f"{limit + 5}s", "-nostdin", "-trace_stat", "-stf", str(step_dir / "uas_stat.csv")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=step_dir)
        processes.popens.append(gateway)
        time.sleep(0.5)  # listening before the first call
        if gateway.poll() is not None:
            raise RuntimeError(f"sipp gateway on port {uas[1]} exited: {gateway.stderr.read()}")
    script = fill(scenario, step_dir, **{k: v for k, v in (values or {}).items() if k != "DIALLED"})
    stat = step_dir / "stat.csv"
    command = [SIPP, kamailio.address, "-sf", str(script), "-inf", str(inject), "-i", source,
               "-p", str(free_udp_port()), "-m", str(calls), "-r", str(rate), "-timeout", f"{limit}s",
               "-recv_timeout", f"{RECV_TIMEOUT_S}s",
               "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "60"]
    cpu_before, redis_before, started = kamailio.cpu_seconds(), cpu_seconds_of(rpid), time.monotonic()
    uac = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, cwd=step_dir)
    processes.popens.append(uac)
    try:
        _, stderr = uac.communicate(timeout=limit + 15)
    except subprocess.TimeoutExpired:
        uac.kill()
        _, stderr = uac.communicate()
    cpu, redis_cpu = kamailio.cpu_seconds() - cpu_before, cpu_seconds_of(rpid) - redis_before
    wall = time.monotonic() - started
    if gateway is not None:
        try:
            gateway.wait(timeout=RECV_TIMEOUT_S + 2)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
    row = stat_row(stat)
    if not row:
        raise RuntimeError(f"sipp against {name} left no statistics (exit {uac.returncode}): {stderr[-2000:]}")
    return Step(name, rate, int(row["OutgoingCall(C)"]), int(row["SuccessfulCall(C)"]),
                elapsed_seconds(row["ElapsedTime(C)"]), cpu, redis_cpu, uac.returncode, wall, idle)


