"""Real Kamailio and real sipp for tests, on loopback ports only.

start_kamailio() fills in kemi/kamailio.cfg (kemi.render) in a work directory, starts Kamailio on a free
UDP port of 127.0.0.1 (daemonized, logging to <workdir>/kamailio.log), waits until it answers an OPTIONS
probe (whatever the answer) and returns a handle that stops it by its pid. `Kamailio.faults()` lists the
log lines that betray a Python exception or a Kamailio error (see _FAULT).

run_sipp() runs one scenario of tests/sipp/ against it, with bounded time, and returns sipp's exit code,
its output and the SIP messages it exchanged (-trace_msg), parsed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from google.protobuf import field_mask_pb2

from callstate.dialogs import kamailio_db_url, node_tables
from callstate.events import CallEvent
from callstate.store import CallState
from fastpath.runtime import FastPath
from kemi.render import REPO_ROOT, DialogDb, Tls, render
from tests.helpers import unique_email
from tests.sip_wire import Gateway, Message, Peer, request, sdp
from tollgate.v1 import account_pb2 as apb
from tollgate.v1 import common_pb2, directory_pb2, rating_pb2, trunks_pb2

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIOS = Path(__file__).resolve().parent / "sipp"
LOOPBACK = "127.0.0.1"
# A traceback, app_python3's own errors, the script's one-line "<route> failed", or any other ERROR/CRITICAL
# line from Kamailio (a KSR call the script got wrong, a module it misconfigured) - except the script's own
# KSR.err() lines (core/kemi.c sr_kemi_core_err), which tests inspect themselves, ndb_redis reporting that
# Redis forgot the admission script (a Redis restart: the script reloads it and goes on), and a gateway that
# refuses a TCP connection (the network's fault, failed over like a 503).
_FAULT = re.compile(r"Traceback|app_python3 \[|tollgate: \w+ failed:|Python exception"
                    r"|(ERROR|CRITICAL|ALERT|BUG): (?!<core> \[core/kemi\.c:\d+\]: sr_kemi_core_err"
                    r"|ndb_redis \[redis_client\.c:\d+\]: redisc_exec\(\): Redis error:NOSCRIPT"
                    r"|<core> \[core/tcp_main\.c:\d+\]: tcpconn_1st_send\(\)"
                    r"|tm \[\.\./\.\./core/forward\.h:\d+\]: msg_send_buffer\(\): tcp_send failed"
                    # an unreachable gateway, tried from the failure route (the next one is tried, or 500)
                    r"|tm \[tm\.c:\d+\]: _w_t_relay_to\(\): t_forward_noack failed)")


# Kamailio 5.6's dialog module, ending an expired dialog (send_bye), sends the caller's BYE and then the
# callee's; when the caller's 200 is processed (by another worker) in between, the dialog is already deleted
# and the callee's BYE is not sent, with this error. Loopback makes that race frequent; see
# test_prepaid_call_is_cut_at_the_granted_duration.
DIALOG_BYE_RACE = "send_bye(): terminating non-confirmed dialogs not supported"
# Kamailio 6.0 loses the same race (the caller's BYE answered and the dialog deleted before the callee's BYE is
# sent) and says so as a WARNING (with "bye_reply_cb(): inconsistent dlg timer data" before it): the same
# missing BYE, but no longer an error line.
DIALOG_BYE_RACES = {"5.6": DIALOG_BYE_RACE, "6.0": "already in deleted state, BYE not sent"}


# What scripts/start-kamailio.sh gives Kamailio: a clean environment, so that the test's own Python (a venv, a
# pyenv interpreter, PYTHONHOME / PYTHONPATH) never leaks into Kamailio's embedded one.
KAMAILIO_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@dataclass(frozen=True)
class KamailioBuild:
    """One Kamailio the tests run: how to start it and which Python module runs tollgate's script in it."""

    version: str
    command: tuple[str, ...]  # the kamailio executable (or what runs it), Kamailio's own arguments follow
    python_module: str  # kemi.render's python_module
    pythonpath: str | None = None  # TOLLGATE_PYTHONPATH; None: kemi.render's (this checkout + the venv)


KAMAILIO60_ROOTFS = ("bash", str(REPO_ROOT / "scripts" / "kamailio60-rootfs.sh"))
KAMAILIO_BUILDS = {
    # Debian 12's own: app_python3 (the only one 5.6 has), the venv's packages on the embedded 3.11's path.
    "5.6": KamailioBuild("5.6", (KAMAILIO,), "app_python3"),
    # Debian 13's, in the root file system scripts/kamailio60-rootfs.sh makes (Debian 12 has no 6.0): its
    # Python is 3.13, so only this checkout goes on the path (its cpython-313 extensions), never the 3.11 venv;
    # redis-py comes from Debian there. app_python3s, the static-KSR module operators run on 6.0.
    "6.0": KamailioBuild("6.0", ("bash", str(REPO_ROOT / "scripts" / "kamailio60.sh")), "app_python3s",
                         str(REPO_ROOT)),
}
# The Kamailio that start_kamailio() starts unless told otherwise: TOLLGATE_TEST_KAMAILIO, or pytest's
# --kamailio option (tests/conftest.py), or the bench's (use_kamailio()).
_selected = os.environ.get("TOLLGATE_TEST_KAMAILIO", "5.6")


def use_kamailio(version: str) -> KamailioBuild:
    """Select the Kamailio of every later start_kamailio() (5.6 or 6.0); made ready (6.0: its root file system
    and extensions, built once if missing or stale)."""
    global _selected
    build = kamailio_build(version)
    _selected = version
    return build


def selected_kamailio() -> str:
    return _selected


def kamailio_build(version: str | None = None) -> KamailioBuild:
    version = version or _selected
    if version not in KAMAILIO_BUILDS:
        raise ValueError(f"Kamailio {version!r}: expected one of {sorted(KAMAILIO_BUILDS)}")
    if version == "6.0":
        _prepare_kamailio60()
    return KAMAILIO_BUILDS[version]


@functools.cache
def _prepare_kamailio60() -> None:
    """scripts/kamailio60-rootfs.sh, once per process (a second or less when all is there)."""
    done = subprocess.run(KAMAILIO60_ROOTFS, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/kamailio60-rootfs.sh failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def kamailio_environment(build: KamailioBuild, workdir: Path) -> dict[str, str]:
    """KAMAILIO_ENVIRONMENT, plus what scripts/kamailio60.sh needs: its root file system, and the work directory
    (cfg, log, pid file, images) mounted inside at its own path even when it is not under /tmp."""
    if build.version != "6.0":
        return KAMAILIO_ENVIRONMENT
    extra = {"TOLLGATE_KAMAILIO60_BIND": ":".join([str(workdir), str(_CERTIFICATE_DIR)])}
    if "TOLLGATE_KAMAILIO60_ROOT" in os.environ:
        extra["TOLLGATE_KAMAILIO60_ROOT"] = os.environ["TOLLGATE_KAMAILIO60_ROOT"]
    return KAMAILIO_ENVIRONMENT | extra


def free_udp_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP (Kamailio listens on both)."""
    for _ in range(50):
        port = free_udp_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for UDP and TCP")


# The digest nonce secret and the topology-hiding key, shared by every node this test session starts.
NODE_SECRETS = (secrets.token_hex(16), secrets.token_hex(16))
_CERTIFICATE_DIR = Path(tempfile.gettempdir()) / f"tollgate-test-tls-{os.getpid()}"


def self_signed_certificate() -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1/localhost (PEM paths), made once per test session."""
    certificate, key = _CERTIFICATE_DIR / "cert.pem", _CERTIFICATE_DIR / "key.pem"
    if not certificate.exists():
        _CERTIFICATE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True)
    return str(certificate), str(key)


def options_probe(host: str, port: int, timeout: float = 0.2) -> int | None:
    """The status host:port answers an OPTIONS with (tollgate: 200 ready, 503 routing data not loaded)."""
    token = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        local_port = s.getsockname()[1]
        request = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK{token}\r\n"
                   f"From: <sip:probe@{LOOPBACK}>;tag={token}\r\n"
                   f"To: <sip:{host}:{port}>\r\n"
                   f"Call-ID: {token}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        s.sendto(request.encode(), (host, port))
        try:
            answer = s.recv(65535)
        except OSError:
            return None
        return int(answer.split(None, 2)[1]) if answer.startswith(b"SIP/2.0 ") else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Kamailio:
    host: str
    port: int
    workdir: Path
    pid: int
    log_path: Path
    tls_port: int | None = None
    metrics_port: int | None = None
    version: str = "5.6"  # which of KAMAILIO_BUILDS

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """host:port of the node's Prometheus /metrics (started with metrics_port)."""
        if self.metrics_port is None:
            raise ValueError("this node was started without metrics")
        return f"{self.host}:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def bye_races(self) -> int:
        """How often this node lost the dialog module's BYE race so far (see DIALOG_BYE_RACES)."""
        return self.log().count(DIALOG_BYE_RACES[self.version])

    def faults(self) -> list[str]:
        """Log lines that betray a Python exception or a Kamailio error (see _FAULT)."""
        return [line for line in self.log().splitlines() if _FAULT.search(line)]

    def worker_pids(self) -> list[int]:
        """The main process and its children (Kamailio forks its workers from the main process)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [self.pid, *map(int, children.read_text().split())] if children.exists() else [self.pid]

    def cpu_seconds(self) -> float:
        """User + system CPU time of all of this instance's processes so far."""
        ticks = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 5.0) -> None:
        if not _alive(self.pid):
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)


def start_kamailio(workdir: Path, *, redis_url: str, namespace: str, children: int = 2, host: str = LOOPBACK,
                   timeout: float = 10.0, attempts: int = 3, mode: str = "relay", fr_timer_ms: int = 3000,
                   shed_free_percent: int = 15, tls: bool = False, nonce_seconds: int = 30,
                   dialog_dsn: str | None = None, port: int | None = None, max_cps: int = 0,
                   source_max_cps: int = 0, metrics_port: int | None = None, version: str | None = None,
                   topology_hiding: bool = True) -> Kamailio:
    """Kamailio running tollgate's cfg on a free UDP port of `host` (TCP on the same port, TLS on another when
    `tls`), answering; raises with the log's end otherwise. Every node of a test session shares the digest
    and topology-hiding secrets, as the nodes of one stack do. With `dialog_dsn` the node keeps its dialogs
    in that PostgreSQL database; `port` restarts a node where it was (its dialogs name its address). With
    `metrics_port` it serves Prometheus' /metrics on that TCP port of `host` (0: a free one; Kamailio.metrics_url).
    `version`: one of KAMAILIO_BUILDS (default: the selected one, see use_kamailio)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rundir = workdir / "run"
    rundir.mkdir(exist_ok=True)
    log_path = workdir / "kamailio.log"
    pidfile = rundir / "kamailio.pid"
    cfg = workdir / "kamailio.cfg"
    build = kamailio_build(version)
    for _ in range(attempts):  # another process may take the port between our probe and Kamailio's bind
        port = port or free_port(host)
        tls_settings = Tls(free_port(host), *self_signed_certificate()) if tls else None
        dialog_db = _dialog_db(dialog_dsn, f"{host}:{port}", namespace) if dialog_dsn else None
        metrics = None if metrics_port is None else (host, metrics_port or free_port(host))
        cfg.write_text(render(listen=f"udp:{host}:{port}", rundir=str(rundir), redis_url=redis_url,
                              namespace=namespace, image_dir=str(workdir / "images"), children=children, mode=mode,
                              fr_timer_ms=fr_timer_ms, shed_free_percent=shed_free_percent, tls=tls_settings,
                              auth_secret=NODE_SECRETS[0], topoh_key=NODE_SECRETS[1], nonce_seconds=nonce_seconds,
                              dialog_db=dialog_db, max_cps=max_cps, source_max_cps=source_max_cps,
                              metrics_listen=f"{metrics[0]}:{metrics[1]}" if metrics else "",
                              python_module=build.python_module, pythonpath=build.pythonpath,
                              topology_hiding=topology_hiding))
        pidfile.unlink(missing_ok=True)
        with log_path.open("ab") as log:
            # The allocator the stack runs with (scripts/start-kamailio.sh: qm survives the 5.6 tls module's
            # double free, TLSF does not)
            started = subprocess.run([*build.command, "-f", str(cfg), "-P", str(pidfile), "-Y", str(rundir), "-E",
                                      "-m", "256", "-M", "16", "-x", "qm"], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log, timeout=timeout, env=kamailio_environment(build, workdir))
        if started.returncode == 0 and pidfile.exists():
            break
        _kill_half_started(pidfile)
    else:
        raise RuntimeError(f"kamailio did not start (exit {started.returncode}):\n{_tail(log_path)}")
    kamailio = Kamailio(host, port, workdir, int(pidfile.read_text()), log_path,
                        tls_settings.port if tls_settings else None, metrics[1] if metrics else None, build.version)
    deadline = time.monotonic() + timeout
    while options_probe(host, port) is None:
        if time.monotonic() > deadline or not _alive(kamailio.pid):
            kamailio.stop()
            raise RuntimeError(f"kamailio on {kamailio.address} does not answer OPTIONS:\n{_tail(log_path)}")
    return kamailio


def _kill_half_started(pidfile: Path) -> None:
    """A Kamailio whose start failed may have left its main process (and some children) behind: they hold
    ports and database connections for the rest of the session."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)  # its main process ends its children


FR_TIMER_MS = 1000


def start_relay(control_server, workdir: Path, **options) -> Kamailio:
    """A relay node as the stack runs one: its dialogs kept in the control service's database."""
    return start_kamailio(workdir, redis_url=control_server.redis_url, namespace=control_server.keys.namespace,
                          mode="relay", fr_timer_ms=FR_TIMER_MS, dialog_dsn=control_server.dsn, **options)


def _dialog_db(dsn: str, node: str, namespace: str) -> DialogDb:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return DialogDb(kamailio_db_url(dsn), *node_tables(conn, node, namespace))


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


# ---------------------------------------------------------------------------------------------- sipp


@dataclass
class SipMessage:
    direction: str  # "sent" | "received"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def status(self) -> int | None:
        parts = self.first_line.split()
        return int(parts[1]) if parts[0] == "SIP/2.0" else None

    def headers(self, name: str) -> list[str]:
        """Values of every header line `name` (case-insensitive), in order; compact forms not expanded."""
        wanted = name.lower() + ":"
        head = self.text.replace("\r\n", "\n").split("\n\n", 1)[0]
        return [line.split(":", 1)[1].strip() for line in head.split("\n")[1:] if line.lower().startswith(wanted)]


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    messages: list[SipMessage] = field(default_factory=list)
    errors: str = ""
    seconds: float = 0.0

    def received(self, status: int | None = None) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "received" and (status is None or m.status == status)]

    def explain(self) -> str:
        return (f"sipp exit {self.returncode}\n--- stderr\n{self.stderr[-2000:]}\n--- errors\n{self.errors[-3000:]}\n"
                f"--- received\n" + "\n".join(m.first_line for m in self.received()))


_MESSAGE_SPLIT = re.compile(r"^-{20,}.*$", re.MULTILINE)


def _parse_messages(log: str) -> list[SipMessage]:
    messages = []
    for block in _MESSAGE_SPLIT.split(log):
        kind, _, body = block.strip("\n").partition("\n")
        if "message received" in kind:
            direction = "received"
        elif "message sent" in kind:
            direction = "sent"
        else:
            continue
        messages.append(SipMessage(direction, body.strip("\n")))
    return messages


def _scenario(scenario: str, workdir: Path, tag: str, values: dict[str, object]) -> Path:
    """tests/sipp/<scenario> with every @NAME@ replaced by values[NAME], written into workdir."""
    text = (SCENARIOS / scenario).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    if re.search(r"@[A-Z_]+@", text):
        raise ValueError(f"{scenario}: placeholders left unfilled: {sorted(set(re.findall(r'@[A-Z_]+@', text)))}")
    script = workdir / f"{Path(scenario).stem}_{tag}.xml"
    script.write_text(text)
    return script


def run_sipp(kamailio: Kamailio, scenario: str, workdir: Path, *, expect: int, rows: list[tuple[str, ...]],
             calls: int | None = None, local_ip: str = LOOPBACK, auth: tuple[str, str] | None = None,
             rate: int | None = None, limit: int | None = None, timeout: float = 10.0,
             trace: bool = True, values: dict[str, object] | None = None, local_port: int | None = None) -> SippResult:
    """Run tests/sipp/<scenario> (its @EXPECT@ := expect, other @NAME@ := values) with one injected row per
    call, in bounded time (from local_port when given: a REGISTER's Contact that a SippServer then listens on)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    script = _scenario(scenario, workdir, f"{expect}_{tag}", {"EXPECT": expect, **(values or {})})
    inject = workdir / f"inject_{tag}.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(";".join(row) + ";\n" for row in rows))
    message_file = workdir / f"messages_{tag}.log"
    error_file = workdir / f"errors_{tag}.log"
    command = [SIPP, kamailio.address, "-sf", str(script), "-inf", str(inject), "-m", str(calls or len(rows)),
               "-i", local_ip, "-timeout", f"{timeout:g}s", "-timeout_error", "-recv_timeout", f"{timeout:g}s",
               "-nostdin", "-trace_err", "-error_file", str(error_file)]
    if trace:
        command += ["-trace_msg", "-message_file", str(message_file)]
    if auth:
        command += ["-au", auth[0], "-ap", auth[1]]
        dialled = {row[1] for row in rows if len(row) > 1}
        if len(dialled) == 1:  # an INVITE's digest is for its Request-URI (sipp's default is host:port only)
            command += ["-auth_uri", f"{dialled.pop()}@{kamailio.address}"]  # (sipp adds "sip:")
    # sipp binds 5060 when it is free: always a port of its own, so that a test never takes the stack's port.
    command += ["-p", str(local_port or free_udp_port(local_ip))]
    if rate:
        command += ["-r", str(rate)]
    if limit:
        command += ["-l", str(limit)]
    started = time.monotonic()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 10,
                          cwd=workdir)
    return SippResult(
        done.returncode, done.stdout, done.stderr,
        _parse_messages(message_file.read_text(errors="replace")) if message_file.exists() else [],
        error_file.read_text(errors="replace") if error_file.exists() else "",
        time.monotonic() - started,
    )


class SippServer:
    """A sipp UAS (a test gateway) listening on host:port in the background; result() waits for its end."""

    def __init__(self, scenario: str, workdir: Path, port: int, *, calls: int = 1, host: str = LOOPBACK,
                 values: dict[str, object] | None = None, timeout: float = 20.0):
        workdir.mkdir(parents=True, exist_ok=True)
        tag = secrets.token_hex(4)
        self.port = port
        self.address = f"{host}:{port}"
        self._messages = workdir / f"uas_messages_{tag}.log"
        self._errors = workdir / f"uas_errors_{tag}.log"
        script = _scenario(scenario, workdir, f"uas_{tag}", values or {})
        self._started = time.monotonic()
        self._timeout = timeout
        self._process = subprocess.Popen(
            [SIPP, "-sf", str(script), "-i", host, "-p", str(port), "-m", str(calls), "-nostdin",
             "-timeout", f"{timeout:g}s", "-trace_msg", "-message_file", str(self._messages),
             "-trace_err", "-error_file", str(self._errors)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
        deadline = time.monotonic() + 3
        while not _udp_port_taken(host, port) and time.monotonic() < deadline:  # listening before any call
            time.sleep(0.02)

    def messages(self) -> list[SipMessage]:
        return _parse_messages(self._messages.read_text(errors="replace")) if self._messages.exists() else []

    def received(self, method: str) -> list[SipMessage]:
        return [m for m in self.messages() if m.direction == "received" and m.first_line.startswith(method + " ")]

    def invite(self, call_id: str, timeout: float = 3.0) -> SipMessage | None:
        """The INVITE of the caller's Call-ID this server received (waiting up to `timeout` for sipp's trace), or
        None. The switch masks the Call-ID toward gateways (topology hiding), so the tests' scenarios repeat it
        in an X-Test-Call-ID header, which the switch passes on."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.received("INVITE")
                     if call_id in (*m.headers("Call-ID"), *m.headers("X-Test-Call-ID"))]
            if found or time.monotonic() > deadline:
                return found[-1] if found else None
            time.sleep(0.05)

    def result(self, timeout: float | None = None) -> SippResult:
        """Wait until sipp ends (its calls done, or its own timeout), then its result."""
        try:
            stdout, stderr = self._process.communicate(timeout=timeout or self._timeout + 5)
        except subprocess.TimeoutExpired:
            self.stop()
            stdout, stderr = self._process.communicate()
        return SippResult(self._process.returncode, stdout, stderr, self.messages(),
                          self._errors.read_text(errors="replace") if self._errors.exists() else "",
                          time.monotonic() - self._started)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def _udp_port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# ---------------------------------------------------------------------------------------------- world
# Building the world over the control service's gRPC API (`admin`: tests/conftest.py's stubs) and waiting until
# the projection in Redis routes it; shared by the tests/test_kamailio*.py modules.

EUR = 1_000_000
DESTINATION = "4420123456"
CALLER = "15550001111"


def suffix() -> str:
    return uuid.uuid4().hex[:8]


def import_rates(method, parent: str, csv: str, admin) -> None:
    method(iter([common_pb2.ImportRatesRequest(parent=parent, csv_data=csv.encode())]), metadata=admin.metadata)


def make_customer(admin, money: CallState, rate_group: str, *, balance: int = 10 * EUR, **settings) -> apb.Account:
    """A customer on `rate_group` with `balance` micros in Redis (the live balance the switch debits)."""
    customer = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=unique_email("cust"), billing=apb.Billing(rate_group=rate_group),
        settings=apb.AccountSettings(**settings))), metadata=admin.metadata)
    if balance:
        money.credit(number(customer), balance)
    return customer


def number(account: apb.Account) -> str:
    return account.name.split("/", 1)[1]


def map_ip(admin, customer: apb.Account, cidr: str = LOOPBACK) -> str:
    """Calls from `cidr` whose number starts with a fresh tech prefix belong to `customer`."""
    tech_prefix = str(int(uuid.uuid4().hex[:7], 16)).zfill(9)[:9]
    admin.directory.CreateIpMap(directory_pb2.CreateIpMapRequest(ip_map_id=f"ip{suffix()}", ip_map=directory_pb2.IpMap(
        account=customer.name, cidr=cidr, tech_prefix=tech_prefix)), metadata=admin.metadata)
    return tech_prefix


def add_device(admin, customer: apb.Account, password: str) -> str:
    username = f"dev{suffix()}"
    admin.directory.CreateSipDevice(directory_pb2.CreateSipDeviceRequest(sip_device_id=username, sip_device=(
        directory_pb2.SipDevice(account=customer.name, password=password))), metadata=admin.metadata)
    return username


def dead_gateway() -> str:
    return f"127.0.0.1:{free_udp_port()}"


def make_carrier(admin, trunks: list[tuple[list[str], str]], origination: str) -> tuple[str, list[str], str]:
    """A provider with one trunk per (gateway addresses, termination deck CSV), a rate group using them in
    that order with the origination deck CSV. Returns (rate group, trunk ids, provider number)."""
    tag = suffix()
    provider = admin.accounts.CreateAccount(apb.CreateAccountRequest(account=apb.Account(
        email=f"prov{tag}@example.com", type=apb.PROVIDER)), metadata=admin.metadata)
    names = []
    for index, (addresses, deck) in enumerate(trunks):
        trunk = admin.trunks.CreateTrunk(trunks_pb2.CreateTrunkRequest(
            trunk_id=f"t{index}{tag}", trunk=trunks_pb2.Trunk(
                provider=provider.name, gateways=[trunks_pb2.Gateway(address=a) for a in addresses])),
            metadata=admin.metadata)
        import_rates(admin.trunks.ImportTerminationRates, trunk.name, deck, admin)
        names.append(trunk.name)
    group = admin.rate_groups.CreateRateGroup(rating_pb2.CreateRateGroupRequest(
        rate_group_id=f"g{tag}", rate_group=rating_pb2.RateGroup(trunks=names)), metadata=admin.metadata)
    import_rates(admin.rate_groups.ImportOriginationRates, group.name, origination, admin)
    return group.name, [n.split("/")[1] for n in names], number(provider)


def wait_routable(fast: FastPath, account: str, destination: str = DESTINATION, trunks: int = 1) -> None:
    """Until the projection in Redis routes the account's call over `trunks` trunks, then long enough for
    Kamailio's workers to follow (they poll every 0.25 s)."""
    deadline = time.monotonic() + 5
    while True:
        fast.load()
        decision = fast.engine.decide(account, CALLER, destination, 10**12, int(time.time()))
        if decision.code == 200 and len(decision.routes) >= trunks:
            break
        assert time.monotonic() < deadline, f"never routable: {decision}"
        time.sleep(0.1)
    time.sleep(0.6)


def customer_on(admin, money, fast, rate_group: str, trunks: int = 1, **settings) -> tuple[str, str]:
    """(account number, tech prefix) of a new IP-authenticated customer, once Kamailio can route it."""
    customer = make_customer(admin, money, rate_group, **settings)
    tech_prefix = map_ip(admin, customer)
    wait_routable(fast, number(customer), trunks=trunks)
    return number(customer), tech_prefix


def balance(money: CallState, account: str) -> int:
    return money.available(account, 0)


def eventually_balance(money: CallState, account: str, expected: int, timeout: float = 5.0) -> int:
    """The account's live balance once it is `expected` (a provider's credit comes from the control service's
    ledger, about a second after the call's settlement), or what it is when `timeout` ran out."""
    deadline = time.monotonic() + timeout
    while (found := balance(money, account)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def events(redis_client, control_server, account: str) -> list[dict[str, str]]:
    """The account's calls as their events (callstate.events.CallEvent, every value a string): those the
    control service's ledger recorded (PostgreSQL's CDRs, which it then trims from Redis), then those still in
    the account's stream. One per call id, the recorded one first."""
    key = f"{control_server.keys.namespace}:{{a:{account}}}:events"
    waiting = [CallEvent.decode(fields) for _id, fields in redis_client.xrange(key)]
    with psycopg.connect(control_server.dsn) as conn:
        rows = conn.execute(f"SELECT {', '.join(_CDR_AS_EVENT)} FROM cdrs WHERE account_number = %s "
                            "ORDER BY setup_time, call_id", (account,)).fetchall()
    found: dict[str, CallEvent] = {}
    for row in rows:
        values = dict(zip(_CDR_AS_EVENT.values(), row, strict=True))
        for name in ("setup_time", "answer_time", "end_time"):
            values[name] = values[name].timestamp() if values[name] is not None else None
        found[values["call_id"]] = CallEvent(**values)
    for event in waiting:
        found.setdefault(event.call_id, event)
    return [json.loads(event.encode()) for event in found.values()]


# cdrs column -> CallEvent field
_CDR_AS_EVENT = {name: name for name in CallEvent.__dataclass_fields__} | {"account_number": "account",
                                                                           "recorded": "record"}
del _CDR_AS_EVENT["account"], _CDR_AS_EVENT["record"]


def settled(redis_client, control_server, account: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(found := events(redis_client, control_server, account)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def user_of(uri_header: str) -> str:
    return uri_header.split("sip:", 1)[1].split("@", 1)[0]


@dataclass
class Customer:
    account: str
    tech_prefix: str
    trunks: list[str]
    provider: str

    def dialled(self, number: str = DESTINATION) -> str:
        return self.tech_prefix + number


def customer_over(admin, money, fast, gateways: list[Gateway], **settings) -> Customer:
    """An IP-authenticated customer whose rate group has one trunk per gateway (in that order)."""
    rate_group, trunks, provider = make_carrier(
        admin, [([g.address], "prefix,rate_per_min\n44,0.01\n") for g in gateways], "prefix,rate_per_min\n44,0.05\n")
    account, tech_prefix = customer_on(admin, money, fast, rate_group, trunks=len(gateways), **settings)
    return Customer(account, tech_prefix, trunks, provider)


def update_trunk(admin, fast, trunk_id: str, ready, **fields) -> None:
    """Change a trunk and wait until the projection (and so Kamailio, ~0.3 s later) has it."""
    admin.trunks.UpdateTrunk(trunks_pb2.UpdateTrunkRequest(
        trunk=trunks_pb2.Trunk(name=f"trunks/{trunk_id}", **fields),
        update_mask=field_mask_pb2.FieldMask(paths=list(fields))), metadata=admin.metadata)
    deadline = time.monotonic() + 5
    while True:
        fast.load()
        trunk = fast.world.trunks.get(trunk_id)
        if trunk is not None and ready(trunk):
            break
        assert time.monotonic() < deadline, f"trunk {trunk_id} never changed: {trunk}"
        time.sleep(0.05)
    time.sleep(0.6)


# ---------------------------------------------------------------------------------------------- raw SIP calls


def node_address(relay) -> tuple[str, int]:
    return relay.host, relay.port


def invite(peer: Peer, relay, user: str, *, call_id: str | None = None, headers: list[str] = (),
           from_user: str = CALLER, from_tag: str | None = None, cseq: int = 1) -> tuple[str, Message | None]:
    """An initial INVITE to the node for `user`; (the request's text, its final answer)."""
    text = request("INVITE", f"sip:{user}@{relay.address}", via=peer.address, call_id=call_id or new_call_id(),
                   from_user=from_user, from_host=peer.address[0], from_tag=from_tag, cseq=cseq,
                   headers=[*headers, "Content-Type: application/sdp"], body=sdp(peer.address[0]))
    peer.send(text, node_address(relay))
    return text, peer.final(timeout=6, method="INVITE")


def new_call_id() -> str:
    return f"{uuid.uuid4().hex}@attack"


def ack_and_bye(peer: Peer, relay, sent: str, ok: Message) -> Message | None:
    """ACK the 200 and hang up (BYE) along its Record-Route; the BYE's final answer."""
    sent_message = Message(sent.encode())
    target = ok.header("Contact").strip("<>").split(">", 1)[0]
    routes = [f"Route: {r}" for r in reversed(ok.headers("Record-Route"))]
    common = dict(via=peer.address, call_id=sent_message.header("Call-ID"), from_user=CALLER,
                  from_host=peer.address[0], from_tag=sent_message.tag("From"), to_uri=sent_message.header("To"),
                  to_tag=ok.tag("To"))
    common["to_uri"] = common["to_uri"].strip("<>")
    peer.send(request("ACK", target, cseq=1, headers=routes, **common), node_address(relay))
    peer.send(request("BYE", target, cseq=2, headers=routes, **common), node_address(relay))
    return peer.final(timeout=3, method="BYE")
