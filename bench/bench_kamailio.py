"""Bench: tollgate in Kamailio against a native Kamailio routing server, with sipp, in the same run.

    .venv/bin/python bench/bench_kamailio.py [--rates 2000,4000,6000,8000] [--seconds 10]
                                             [--relay-rates 250,500,1000,1500,2000] [--keep]

Starts the real control service in-process (a throw-away PostgreSQL database, a Redis namespace of its own),
creates a routable IP-mapped prepaid customer (provider, trunk, rate group, decks, funded in Redis), then:

1. Routing server (INVITE -> 302 -> ACK): tollgate (kemi/, TOLLGATE_MODE "redirect") and the native
   baseline bench/native_redirect.cfg (one htable lookup, one Redis HMGET through ndb_redis, 302 with a fixed
   Contact), each on its own loopback port with 2 workers and -m 256. sipp offers each rate for --seconds to
   each of them in turn (interleaved, so that the machine's noise hits both alike).
2. Full proxied calls (INVITE, 200, ACK, BYE) through tollgate in relay mode, to a sipp UAS gateway.

For every step: calls/s that succeeded, calls that failed (placed but not completed; a step is clean at
<= 0.5 %), Kamailio CPU per call (utime + stime of all its processes, from /proc, over the step) and Redis
CPU per call (when redis-server's /proc entry is readable; Redis may be serving others too). Goal (issue 5):
tollgate >= 0.8x native. This machine is shared and noisy (2 cores, sipp on the same machine): read the
ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import _repo_path  # noqa: F401  (the repository root on sys.path, for tests/)
import grpc
import psycopg
import redis
from psycopg import sql

from callstate.store import CallState
from control.config import Config
from control.server import create_server
from fastpath.runtime import FastPath, redis_client
from tests.conftest import PG_SERVER_DSN
from tests.helpers import stubs_for
from tests.kamailio_harness import (
    CALLER,
    DESTINATION,
    EUR,
    KAMAILIO,
    LOOPBACK,
    SCENARIOS,
    SIPP,
    Kamailio,
    free_udp_port,
    make_carrier,
    make_customer,
    map_ip,
    number,
    options_probe,
    start_kamailio,
    wait_routable,
)

BENCH = Path(__file__).resolve().parent
NATIVE_CFG = BENCH / "native_redirect.cfg"
KEMI_FLOOR_CFG = BENCH / "kemi_floor.cfg"  # the same routing server in Python: the floor of any KEMI script
KEMI_FLOOR_SCRIPT = BENCH / "kemi_floor.py"
UAC_REDIRECT = BENCH / "sipp" / "uac_redirect.xml"
UAS_ANSWER = BENCH / "sipp" / "uas_answer.xml"
UAC_CALL = SCENARIOS / "uac_call.xml"  # INVITE, 200, ACK, hold, BYE through the Record-Route
UAC_EXPECT = SCENARIOS / "uac_expect.xml"  # INVITE, a final answer, ACK
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS", "redis://127.0.0.1:6379/15")
CHILDREN = 2
CLEAN = 0.005  # a step is clean when at most 0.5 % of its calls failed
GOAL = 0.8
HOLD_MS = 100  # talk time of a relayed call
# Kamailio 5.6's dialog module may log this when it ends a dialog whose 200 another worker is still handling
# (see tests/test_kamailio_relay.py); not a fault of the script.
DIALOG_BYE_RACE = "send_bye(): terminating non-confirmed dialogs not supported"
RECV_TIMEOUT_S = 5  # a call not answered within this is failed (sipp retransmits the INVITE meanwhile)


# ---------------------------------------------------------------------------------------------- processes


class Processes:
    """Everything this bench starts, stopped at the end whatever happens."""

    def __init__(self) -> None:
        self.kamailios: list[Kamailio] = []
        self.popens: list[subprocess.Popen] = []

    def stop(self) -> None:
        for process in self.popens:
            if process.poll() is None:
                process.kill()
                process.wait()
        for kamailio in self.kamailios:
            kamailio.stop()


def cpu_seconds_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pid(client: redis.Redis) -> int | None:
    """redis-server's pid when it runs on this machine and its /proc entry can be read (else no Redis CPU)."""
    pid = int(client.info("server").get("process_id", 0))
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm.startswith("redis") else None


def start_baseline(template: Path, workdir: Path, processes: Processes, *, account: str, namespace: str,
                   gateway: str, timeout: float = 10.0) -> Kamailio:
    """A baseline cfg (bench/native_redirect.cfg, bench/kemi_floor.cfg) on a free loopback port, answering
    OPTIONS."""
    workdir.mkdir(parents=True, exist_ok=True)
    rundir = workdir / "run"
    rundir.mkdir(exist_ok=True)
    log_path, pidfile, cfg = workdir / "kamailio.log", rundir / "kamailio.pid", workdir / "kamailio.cfg"
    url = urlparse(REDIS_URL)
    port = free_udp_port()
    values = {"LISTEN": f"udp:{LOOPBACK}:{port}", "CHILDREN": str(CHILDREN), "RUNDIR": str(rundir),
              "REDIS_HOST": url.hostname or "127.0.0.1", "REDIS_PORT": str(url.port or 6379),
              "REDIS_DB": (url.path or "/0").strip("/") or "0", "NAMESPACE": namespace, "ACCOUNT": account,
              "DESTINATION": DESTINATION, "GATEWAY": gateway, "KEMI_FLOOR": str(KEMI_FLOOR_SCRIPT)}
    cfg.write_text(re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], template.read_text()))
    with log_path.open("ab") as log:
        started = subprocess.run([KAMAILIO, "-f", str(cfg), "-P", str(pidfile), "-Y", str(rundir), "-E",
                                  "-m", "256", "-M", "16"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 timeout=timeout)
    if started.returncode != 0 or not pidfile.exists():
        raise RuntimeError(f"{template.name} did not start (exit {started.returncode}):\n{log_path.read_text()}")
    kamailio = Kamailio(LOOPBACK, port, workdir, int(pidfile.read_text()), log_path)
    processes.kamailios.append(kamailio)
    deadline = time.monotonic() + timeout
    while options_probe(LOOPBACK, port) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{template.name} on {kamailio.address} does not answer OPTIONS 200")
    return kamailio


def idle_cpu(kamailio: Kamailio, seconds: float = 3.0) -> float:
    """CPU seconds per second this instance burns with no traffic (timers; tollgate's projection polling)."""
    before = kamailio.cpu_seconds()
    time.sleep(seconds)
    return (kamailio.cpu_seconds() - before) / seconds


# ---------------------------------------------------------------------------------------------- sipp


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
             uas: tuple[Path, int] | None = None) -> Step:
    """`rate` calls/s for `seconds` (rate x seconds calls, bounded in time) against one Kamailio; with `uas`
    = (scenario, port), a sipp gateway on that port answers them."""
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
    command = [SIPP, kamailio.address, "-sf", str(script), "-inf", str(inject), "-i", LOOPBACK,
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


# ---------------------------------------------------------------------------------------------- world


@contextlib.contextmanager
def control_service():
    """The control server on a throw-away database and a Redis namespace of its own; yields (stubs, namespace,
    Redis client, DSN)."""
    database = f"tollgate_bench_{secrets.token_hex(4)}"
    namespace = f"tgbench{secrets.token_hex(4)}"
    with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    client = redis.Redis.from_url(REDIS_URL)
    running = None
    try:
        token = secrets.token_urlsafe(24)
        dsn = psycopg.conninfo.make_conninfo(PG_SERVER_DSN, dbname=database)
        config = Config(listen="127.0.0.1:0", dsn=dsn,
                        redis_url=REDIS_URL, redis_namespace=namespace, admin_tokens=(token,), workers=8,
                        projection_interval_seconds=0.5, plaintext=True)
        running = create_server(config)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield stubs_for(channel, token), namespace, client, dsn
    finally:
        if running is not None:
            running.stop(grace=0)
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
        client.close()
        with psycopg.connect(PG_SERVER_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


# ---------------------------------------------------------------------------------------------- refusal flood


@dataclass
class Flood:
    calls: Step  # the admitted calls while the flood ran
    refusals: Step  # the flood: INVITEs answered 503 CPS limit exceeded
    recorded: int  # refusal CDRs the ledger wrote to PostgreSQL
    catch_up: float  # seconds from the flood's end until the last of them was written


def refusal_flood(relay: Kamailio, work: Path, processes: Processes, rpid: int | None, idle: float, *, dsn: str,
                  dialled: str, flooded: str, flooder: str, gateway_port: int, rate: int, flood_rate: int,
                  seconds: int) -> Flood:
    """Admitted calls at `rate` while a customer limited to 1 call/s sends `flood_rate` INVITEs/s: each is
    refused (503 CPS limit exceeded) and recorded as a CDR (issue 11). Then: how long the ledger takes to
    write the last refusal's CDR."""
    found: dict[str, Step] = {}

    def flood() -> None:
        found["flood"] = run_load("flood", relay, UAC_EXPECT, work, flood_rate, seconds, processes, rpid, idle,
                                  values={"DIALLED": flooded, "EXPECT": 503})

    flooding = threading.Thread(target=flood)
    flooding.start()
    calls = run_load("relay", relay, UAC_CALL, work, rate, seconds, processes, rpid, idle,
                     values={"DIALLED": dialled, "EXPECT": 200, "HOLD": HOLD_MS}, uas=(UAS_ANSWER, gateway_port))
    flooding.join()
    ended, recorded, last_change = time.monotonic(), -1, time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() - last_change < 5:  # until no new CDR for 5 s
            count = conn.execute("SELECT count(*) FROM cdrs WHERE account_number = %s AND end_reason = 'refused'",
                                 (flooder,)).fetchone()[0]
            if count != recorded:
                recorded, last_change = count, time.monotonic()
            if recorded >= found["flood"].succeeded:
                break
            time.sleep(0.1)
    return Flood(calls, found["flood"], recorded, last_change - ended)


def flood_lines(baseline: Step, flood: Flood) -> list[str]:
    refusals = flood.refusals
    ratio = flood.calls.cps / baseline.cps if baseline.cps else float("nan")
    return [
        f"refusal flood: {refusals.placed:,} INVITEs at {refusals.rate:,}/s offered, {refusals.succeeded:,} answered "
        f"503 CPS limit exceeded ({refusals.cps:,.0f}/s), {flood.recorded:,} refusal CDRs in PostgreSQL, the last "
        f"{flood.catch_up:.1f} s after the flood ended",
        f"admitted calls during the flood: {flood.calls.cps:,.0f}/s ok, {flood.calls.failure_ratio:.2%} failed; "
        f"alone: {baseline.cps:,.0f}/s ok, {baseline.failure_ratio:.2%} failed; ratio {ratio:.2f}x "
        f"(goal: >= 0.9x, no more failures than alone)",
    ]


# ---------------------------------------------------------------------------------------------- report


def step_line(step: Step) -> str:
    return (f"{step.target:<10} {step.rate:>7,} {step.placed:>8,} {step.cps:>9,.0f} {step.failed:>7,} "
            f"{step.failure_ratio:>7.2%} {'yes' if step.clean else 'no':>5} {step.cpu_us:>9.1f} "
            f"{step.net_cpu_us:>9.1f} {step.redis_us:>8.1f}")


HEADER = (f"{'target':<10} {'offered':>7} {'placed':>8} {'ok/s':>9} {'failed':>7} {'fail%':>7} {'clean':>5} "
          f"{'kam µs/c':>9} {'net µs/c':>9} {'rds µs/c':>8}")


def best(steps: list[Step], target: str) -> Step | None:
    """The clean step with the most successful calls/s."""
    clean = [s for s in steps if s.target == target and s.clean]
    return max(clean, key=lambda s: s.cps) if clean else None


def at(steps: list[Step], target: str, rate: int) -> Step:
    return next(s for s in steps if s.target == target and s.rate == rate)


def summary(steps: list[Step], relay_steps: list[Step]) -> list[str]:
    """Max clean CPS of each; CPU per call compared at the highest rate all handled cleanly (where the idle
    burn weighs least); "net" subtracts each instance's idle burn. kemi-floor is the same routing server as
    native written in Python: tollgate/kemi-floor is what tollgate's own logic costs, kemi-floor/native what
    running Python in Kamailio at all costs."""
    lines = []
    targets = [t for t in ("tollgate", "native", "kemi-floor") if any(s.target == t for s in steps)]
    top = max((s.rate for s in steps), default=0)
    for name in targets:
        step = best(steps, name)
        if step is None:
            lines.append(f"{name:<10} no clean step")
        else:
            capped = " (the highest rate offered: its limit is higher)" if step.rate == top else ""
            lines.append(f"{name:<10} max clean {step.cps:,.0f} calls/s at {step.rate:,} offered{capped}")
    tollgate, native = best(steps, "tollgate"), best(steps, "native")
    if tollgate and native:
        cps_ratio = tollgate.cps / native.cps
        lines.append(f"ratio tollgate/native, max clean CPS: {cps_ratio:.2f}x (goal >= {GOAL}x)")
    common = [r for r in sorted({s.rate for s in steps}) if all(at(steps, t, r).clean for t in targets)]
    if common:
        rate = common[-1]
        cpu = {t: at(steps, t, rate) for t in targets}
        lines.append(f"CPU per call at {rate:,} calls/s: " + ", ".join(
            f"{t} {c.cpu_us:.0f} µs (net {c.net_cpu_us:.0f}, Redis {c.redis_us:.0f})" for t, c in cpu.items()))
        t, n = cpu["tollgate"], cpu["native"]
        lines.append(f"ratio tollgate/native, calls per Kamailio CPU second: {n.cpu_us / t.cpu_us:.2f}x "
                     f"(net {n.net_cpu_us / t.net_cpu_us:.2f}x; goal >= {GOAL}x)")
        if "kemi-floor" in cpu:
            f = cpu["kemi-floor"]
            lines.append(f"kemi-floor/native {n.cpu_us / f.cpu_us:.2f}x (Python in Kamailio at all); "
                         f"tollgate/kemi-floor {f.cpu_us / t.cpu_us:.2f}x (tollgate's own logic)")
    relay = best(relay_steps, "relay")
    if relay is None:
        lines.append("relay      no clean step")
    else:
        capped = " (the highest rate offered)" if relay.rate == max(s.rate for s in relay_steps) else ""
        lines.append(f"relay      full calls (INVITE/200/ACK/BYE): {relay.cps:,.0f} calls/s clean at {relay.rate:,} "
                     f"offered{capped}; Kamailio CPU {relay.cpu_us:.0f} µs/call (net {relay.net_cpu_us:.0f})")
    return lines


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2000,4000,6000,8000", help="offered calls/s, routing server")
    parser.add_argument("--relay-rates", default="250,500,1000,1500,2000", help="offered calls/s, relayed calls")
    parser.add_argument("--seconds", type=int, default=10, help="length of each step")
    parser.add_argument("--flood-rate", type=int, default=5000,
                        help="INVITEs/s of the refusal flood (0: no flood phase)")
    parser.add_argument("--flood-calls", type=int, default=100, help="admitted calls/s during the flood")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, sipp statistics)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    relay_rates = [int(r) for r in args.relay_rates.split(",") if r]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally clauses stop everything

    processes = Processes()
    steps: list[Step] = []
    relay_steps: list[Step] = []
    faults: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="bench_kamailio_")
            print(f"work directory (kept): {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_kamailio_"))
        admin, ns, client, dsn = stack.enter_context(control_service())
        work = Path(tmp)
        try:
            money = CallState(client, ns)
            gateway_port = free_udp_port()
            gateway = f"{LOOPBACK}:{gateway_port}"
            rate_group, _trunks, _provider = make_carrier(
                admin, [([gateway], "prefix,rate_per_min\n44,0.01\n")], "prefix,rate_per_min\n44,0.05\n")
            customer = make_customer(admin, money, rate_group, balance=1_000_000 * EUR, cps=0, max_concurrent_calls=0)
            account = number(customer)
            tech_prefix = map_ip(admin, customer)
            fast = FastPath(redis_client(REDIS_URL), str(work / "images"), ns)
            wait_routable(fast, account)
            flooder = make_customer(admin, money, rate_group, balance=EUR, cps=1)  # the refusal flood's caller
            flood_prefix = map_ip(admin, flooder)
            wait_routable(fast, number(flooder))
            dialled = tech_prefix + DESTINATION
            rpid = redis_pid(client)

            tollgate = start_kamailio(work / "tollgate", redis_url=REDIS_URL, namespace=ns, children=CHILDREN,
                                      mode="redirect")
            processes.kamailios.append(tollgate)
            native = start_baseline(NATIVE_CFG, work / "native", processes, account=account, namespace=ns,
                                    gateway=gateway)
            floor = start_baseline(KEMI_FLOOR_CFG, work / "floor", processes, account=account, namespace=ns,
                                   gateway=gateway)
            targets = (("tollgate", tollgate), ("native", native), ("kemi-floor", floor))
            idle = {name: idle_cpu(instance) for name, instance in targets}
            print(f"tollgate (redirect) on {tollgate.address}, native on {native.address}, {CHILDREN} workers each; "
                  f"Redis CPU {'measured' if rpid else 'not measurable'}; idle CPU: tollgate "
                  f"{idle['tollgate']:.1%}, native {idle['native']:.1%} of a core", flush=True)
            print(f"\nrouting server: INVITE -> 302 -> ACK, {args.seconds} s per step\n{HEADER}", flush=True)
            for rate in rates:
                for name, instance in targets:
                    step = run_load(name, instance, UAC_REDIRECT, work, rate, args.seconds, processes, rpid,
                                    idle[name], values={"DIALLED": dialled})
                    steps.append(step)
                    print(step_line(step), flush=True)
                    time.sleep(1)
            for name, instance in targets:
                instance.stop()
                faults[name] = instance.faults()

            relay = start_kamailio(work / "relay", redis_url=REDIS_URL, namespace=ns, children=CHILDREN, mode="relay")
            processes.kamailios.append(relay)
            idle["relay"] = idle_cpu(relay)
            print(f"\nrelay: INVITE, 200, ACK, {HOLD_MS} ms, BYE through tollgate (relay, {relay.address}, idle CPU "
                  f"{idle['relay']:.1%}) to a sipp gateway, {args.seconds} s per step\n{HEADER}", flush=True)
            for rate in relay_rates:
                step = run_load("relay", relay, UAC_CALL, work, rate, args.seconds, processes, rpid, idle["relay"],
                                values={"DIALLED": dialled, "EXPECT": 200, "HOLD": HOLD_MS},
                                uas=(UAS_ANSWER, gateway_port))
                relay_steps.append(step)
                print(step_line(step), flush=True)
                time.sleep(2)
                if step.failure_ratio > 0.05:  # well past its limit: higher rates say nothing more
                    break
            time.sleep(1)
            flood_report = []
            if args.flood_rate:
                print(f"\nrefusal flood: {args.flood_calls} admitted calls/s alone, then with {args.flood_rate:,} "
                      f"INVITEs/s of a customer limited to 1 call/s\n{HEADER}", flush=True)
                alone = run_load("relay", relay, UAC_CALL, work, args.flood_calls, args.seconds, processes, rpid,
                                 idle["relay"], values={"DIALLED": dialled, "EXPECT": 200, "HOLD": HOLD_MS},
                                 uas=(UAS_ANSWER, gateway_port))
                print(step_line(alone), flush=True)
                time.sleep(2)
                flood = refusal_flood(relay, work, processes, rpid, idle["relay"], dsn=dsn, dialled=dialled,
                                      flooded=flood_prefix + DESTINATION, flooder=number(flooder),
                                      gateway_port=gateway_port, rate=args.flood_calls, flood_rate=args.flood_rate,
                                      seconds=args.seconds)
                print(step_line(flood.calls) + "\n" + step_line(flood.refusals), flush=True)
                flood_report = flood_lines(alone, flood)
            open_calls = money.open_calls(account)
            relay.stop()
            faults["relay"] = [line for line in relay.faults() if DIALOG_BYE_RACE not in line]
        finally:
            processes.stop()

    print("\nsummary (same run, same machine)")
    for line in summary(steps, relay_steps):
        print("  " + line)
    for line in flood_report:
        print("  " + line)
    print(f"  relay: calls still open in Redis after the last step: {open_calls}")
    for name, lines in faults.items():
        if lines:
            print(f"  {name}: {len(lines)} fault line(s) in Kamailio's log, first: {lines[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
