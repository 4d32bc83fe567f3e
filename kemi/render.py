"""Fill in kemi/kamailio.cfg: the one place that knows its placeholders and their defaults.

Used by tests/kamailio_harness.py (and by scripts/start-kamailio.sh through `python -m kemi.render`), so that
no file under kemi/ is ever edited by hand to point at a machine's paths.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from callstate import scripts
from callstate.connection import cluster_credentials, cluster_nodes, is_cluster

KEMI_DIR = Path(__file__).resolve().parent
REPO_ROOT = KEMI_DIR.parent
TEMPLATE = KEMI_DIR / "kamailio.cfg"
SCRIPT = KEMI_DIR / "tollgate_kemi.py"
MODES = ("relay", "redirect")  # relay: the default for new installs; redirect: routing-server mode
NDB_SERVER_NAME = "tollgate"  # the ndb_redis server the cfg and the KEMI script name
# app_python3 (Kamailio 5.6 and later) or app_python3s (5.7 and later: module-level functions, static KSR).
PYTHON_MODULES = {"app_python3": "python_exec", "app_python3s": "app_python3s_exec"}
_PLACEHOLDER = re.compile(r"\{\{([A-Z_0-9]+)\}\}")
# What a value spliced into a quoted cfg string or a hiredis command format may hold.
_FORMAT_SAFE = re.compile(r"[A-Za-z0-9_.:-]+")
_OPTIONAL = frozenset({"MODE_DEFINE", "TLS_DEFINE", "TOPOH_DEFINE", "DIALOG_DB_DEFINE", "METRICS_DEFINE",
                       "PYTHON3S_DEFINE", "NDB_REDIS_CLUSTER"})  # may render as nothing
_CFG_LINES = frozenset({"NDB_REDIS_CLUSTER"})  # whole cfg lines made here (quotes and newlines of their own)


def python_path() -> str:
    """The repository and this interpreter's site-packages (the venv's), for Kamailio's embedded Python."""
    return ":".join(dict.fromkeys([str(REPO_ROOT), sysconfig.get_paths()["purelib"]]))


def ndb_redis_server(redis_url: str, name: str = NDB_SERVER_NAME) -> str:
    """ndb_redis's "server" parameter for a redis:// or unix:// URL (host, port, db, password); for a
    redis+cluster:// URL, its first node (ndb_redis_cluster says how the others are reached)."""
    if is_cluster(redis_url):
        host, port = cluster_nodes(redis_url)[0]
        return f"name={name};addr={host};port={port}{_ndb_password(cluster_credentials(redis_url)[1])}"
    url = urlparse(redis_url)
    db = (url.path or "/0").strip("/") or "0"
    if url.scheme == "unix":
        db = parse_qs(url.query).get("db", ["0"])[0]
        where = f"unix={url.path}"
    elif url.scheme == "redis":
        where = f"addr={url.hostname or '127.0.0.1'};port={url.port or 6379}"
    else:
        raise ValueError(f"redis URL {redis_url!r}: Kamailio's ndb_redis speaks redis:// and unix:// only")
    if not db.isdigit():
        raise ValueError(f"redis URL {redis_url!r}: the database must be a number")
    return f"name={name};{where};db={db}{_ndb_password(unquote(url.password or ''))}"


def _ndb_password(password: str | None) -> str:
    if password and ";" in password:
        raise ValueError("redis URL: ndb_redis cannot carry a password containing ';'")
    return f";pass={password}" if password else ""


def ndb_redis_cluster(redis_url: str) -> str:
    """The cfg lines that put ndb_redis in cluster mode for a redis+cluster:// URL ('' otherwise).

    ndb_redis (5.6 as 6.0) keeps no slot map: every command goes to the "tollgate" server (the URL's first
    node), and a MOVED reply sends it on to the server named "host:port" in it. Each node of the URL is
    declared under that name, so that a redirect reuses a connection with the password; a node the URL does
    not name (a replica promoted, a node added) is added on its first MOVED (allow_dynamic_nodes, without a
    password). Write the URL's nodes as the cluster announces them (IP:port), or each becomes a second
    connection."""
    if not is_cluster(redis_url):
        return ""
    password = _ndb_password(cluster_credentials(redis_url)[1])
    lines = ['modparam("ndb_redis", "cluster", 1)', 'modparam("ndb_redis", "allow_dynamic_nodes", 1)']
    lines += [f'modparam("ndb_redis", "server", "name={host}:{port};addr={host};port={port}{password}")'
              for host, port in cluster_nodes(redis_url)]
    return "\n".join(lines)


@dataclass(frozen=True)
class DialogDb:
    """Where the node keeps its dialogs (callstate.dialogs: a db_postgres URL and the node's two tables)."""

    url: str
    table: str
    vars_table: str
    period_seconds: int = 2  # how long a changed dialog may wait to be written (a crash loses what waits)


@dataclass(frozen=True)
class Tls:
    """SIP over TLS on `port` of the node's address, with this certificate and key (PEM files)."""

    port: int
    certificate: str
    key: str


def listen_lines(listen: str, tcp: bool, tls: Tls | None, metrics: tuple[str, int] | None = None) -> str:
    """`udp:HOST:PORT` -> the listen lines: UDP, TCP on the same port (when tcp), TLS on tls.port, and the
    metrics' own TCP listener (xhttp serves HTTP on TCP only)."""
    proto, _, address = listen.partition(":")
    host, _, port = address.rpartition(":")
    if proto != "udp" or not host or not port.isdigit():
        raise ValueError(f"listen {listen!r}: expected udp:HOST:PORT")
    lines = [f"listen=udp:{host}:{port}"]
    if tcp:
        lines.append(f"listen=tcp:{host}:{port}")
    if tls:
        lines.append(f"listen=tls:{host}:{tls.port}")
    if metrics:
        lines.append(f"listen=tcp:{metrics[0]}:{metrics[1]}")
    if not tcp and not tls and not metrics:
        lines.append("disable_tcp=yes")
    return "\n".join(lines)


def metrics_address(metrics_listen: str) -> tuple[str, int] | None:
    """"HOST:PORT" -> (host, port) of the node's /metrics listener; "" -> None (no metrics)."""
    if not metrics_listen:
        return None
    host, _, port = metrics_listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or not _FORMAT_SAFE.fullmatch(host):
        raise ValueError(f"metrics_listen {metrics_listen!r}: expected HOST:PORT (an IPv4 address or a name)")
    return host, int(port)


def render(*, listen: str, rundir: str, redis_url: str, namespace: str, image_dir: str, mode: str = "relay",
           children: int = 2, debug: int = 2, script: str | None = None, pythonpath: str | None = None,
           fr_timer_ms: int = 3000, fr_inv_timer_ms: int = 120000, shed_free_percent: int = 15,
           retry_after_seconds: int = 5, tcp: bool = True, tls: Tls | None = None, auth_secret: str = "",
           topoh_key: str = "", topoh_mask_ip: str = "127.0.0.8", nonce_seconds: int = 30,
           python_module: str = "app_python3", topology_hiding: bool = True, node_id: str = "",
           dialog_db: DialogDb | None = None, keepalive_seconds: int = 30, max_cps: int = 0,
           source_max_cps: int = 0, metrics_listen: str = "") -> str:
    """The configuration text; `listen` is `udp:HOST:PORT` (TCP is added on the same port unless tcp=False,
    TLS on tls.port when given). `shed_free_percent`: new calls are answered 503 while less than this share
    of Kamailio's shared memory is free (0 never sheds). `auth_secret` (digest nonces) and `topoh_key`
    (topology hiding) must be the same on every node of a stack; random when not given (one node only).
    topology_hiding=False leaves Kamailio's topoh out altogether (every trunk then sees the caller's topology);
    a redirect (302) node never loads it.
    `node_id` names the node in Redis (its heartbeat, its calls); default: the listen address. With `dialog_db`
    the node keeps its dialogs in PostgreSQL (they survive its restart). `keepalive_seconds`: how often an
    answered call's parties are probed (in-dialog OPTIONS; Kamailio's minimum is 30). `max_cps`: new calls a
    second this node takes before it sheds them with 503 Overloaded (0: no limit); `source_max_cps`: the most of
    them one source address may take (0: no limit). `metrics_listen` ("HOST:PORT", TCP): where the node serves
    Prometheus' /metrics (Kamailio's xhttp_prom, README "Metrics"); empty leaves the metrics out altogether."""
    if keepalive_seconds < 30:
        raise ValueError(f"keepalive_seconds {keepalive_seconds}: Kamailio's dialog keepalives need 30 or more")
    if not 0 <= shed_free_percent <= 100:
        raise ValueError(f"shed_free_percent {shed_free_percent}: expected 0..100")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    if python_module not in PYTHON_MODULES:
        raise ValueError(f"python_module {python_module!r}: expected one of {sorted(PYTHON_MODULES)}")
    if not _FORMAT_SAFE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r}: letters, digits and _.:- only")
    metrics = metrics_address(metrics_listen)
    values = {
        "LISTEN": listen_lines(listen, tcp, tls, metrics), "RUNDIR": rundir, "REDIS_URL": redis_url,
        "NAMESPACE": namespace, "IMAGE_DIR": image_dir, "MODE": mode, "CHILDREN": str(children),
        "DEBUG": str(debug), "KEMI_SCRIPT": script or str(SCRIPT), "PYTHONPATH": pythonpath or python_path(),
        "FR_TIMER": str(int(fr_timer_ms)), "FR_INV_TIMER": str(int(fr_inv_timer_ms)),
        "NDB_REDIS_SERVER": ndb_redis_server(redis_url), "NDB_REDIS_CLUSTER": ndb_redis_cluster(redis_url),
        "SHED_FREE_PERCENT": str(int(shed_free_percent)),
        "RETRY_AFTER": str(int(retry_after_seconds)),
        "MODE_DEFINE": "#!define TOLLGATE_RELAY" if mode == "relay" else "",
        "TLS_DEFINE": "#!define WITH_TLS" if tls else "",
        # A routing server relays nothing (its 302 names the gateways anyway): topoh would only cost it ~14 µs
        # of every INVITE (bench/bench_kamailio.py).
        "TOPOH_DEFINE": "#!define WITH_TOPOH" if topology_hiding and mode == "relay" else "",
        "TLS_CERTIFICATE": tls.certificate if tls else "-", "TLS_KEY": tls.key if tls else "-",
        "AUTH_SECRET": auth_secret or secrets.token_hex(16), "TOPOH_KEY": topoh_key or secrets.token_hex(16),
        "TOPOH_MASK_IP": topoh_mask_ip, "NONCE_SECONDS": str(int(nonce_seconds)),
        "MARK_ANSWERED_SHA": scripts.MARK_ANSWERED.sha,
        "PYTHON_MODULE": f"{python_module}.so", "PYTHON_MODULE_NAME": python_module,
        "PYTHON_EXEC": PYTHON_MODULES[python_module],
        "PYTHON3S_DEFINE": "#!define WITH_APP_PYTHON3S" if python_module == "app_python3s" else "",
        "NODE_ID": node_id or listen.partition(":")[2],
        "KA_INTERVAL": str(int(keepalive_seconds)),
        "MAX_CPS": str(max(int(max_cps), 0)),
        "SOURCE_MAX_CPS": str(max(int(source_max_cps), 0)),
        "DIALOG_DB_DEFINE": "#!define WITH_DIALOG_DB" if dialog_db else "",
        "DIALOG_DB_URL": dialog_db.url if dialog_db else "-",
        "DIALOG_TABLE": dialog_db.table if dialog_db else "-",
        "DIALOG_VARS_TABLE": dialog_db.vars_table if dialog_db else "-",
        "DIALOG_DB_PERIOD": str(max(int(dialog_db.period_seconds), 1)) if dialog_db else "1",
        "NODE_STARTED_LUA": _one_line(scripts.NODE_STARTED.text),
        "METRICS_DEFINE": "#!define WITH_METRICS" if metrics else "",
        "METRICS": "on" if metrics else "off",
        "METRICS_PORT": str(metrics[1]) if metrics else "0",
    }
    for name, value in values.items():
        if (not value and name not in _OPTIONAL) or (any(c in value for c in '"\r') and name not in _CFG_LINES):
            raise ValueError(f"{name}={value!r}: must be non-empty, without quotes")
        if "\n" in value and name not in ("LISTEN", *_CFG_LINES):
            raise ValueError(f"{name}={value!r}: must be one line")
    for name in ("AUTH_SECRET", "TOPOH_KEY", "NODE_ID"):
        if not _FORMAT_SAFE.fullmatch(values[name]):
            raise ValueError(f"{name}: letters, digits and _.:- only")

    def fill(match: re.Match) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise ValueError(f"kamailio.cfg has an unknown placeholder {match.group(0)}") from None

    return _PLACEHOLDER.sub(fill, TEMPLATE.read_text())


def _one_line(lua: str) -> str:
    """A Lua script as one line of a cfg string: its comment lines dropped (no `$` or `"` may be in it)."""
    code = [line.strip() for line in lua.splitlines() if line.strip() and not line.strip().startswith("--")]
    text = " ".join(code)
    if '"' in text or "$" in text:
        raise ValueError("a Lua script carried in kamailio.cfg cannot hold '\"' or '$'")
    return text


def main(argv: list[str] | None = None) -> None:
    """python -m kemi.render --listen udp:HOST:PORT --rundir DIR ... > kamailio.cfg (scripts/start-kamailio.sh)."""
    parser = argparse.ArgumentParser(description="write tollgate's kamailio.cfg to stdout")
    parser.add_argument("--listen", required=True, help="udp:HOST:PORT (TCP on the same port too)")
    parser.add_argument("--rundir", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--image-dir", required=True)
    parser.add_argument("--mode", choices=MODES, default="relay")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--shed-free-percent", type=int, default=15)
    parser.add_argument("--max-cps", type=int, default=0, help="new calls a second before shedding (0: no limit)")
    parser.add_argument("--source-max-cps", type=int, default=0,
                        help="new calls a second one source address may make before shedding (0: no limit)")
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--tls-certificate")
    parser.add_argument("--tls-key")
    parser.add_argument("--auth-secret", default="")
    parser.add_argument("--topoh-key", default="")
    parser.add_argument("--python-module", choices=sorted(PYTHON_MODULES), default="app_python3")
    parser.add_argument("--no-topology-hiding", action="store_true", help="leave Kamailio's topoh out")
    parser.add_argument("--node-id", default="", help="the node's name in Redis (default: the listen address)")
    parser.add_argument("--metrics-listen", default="",
                        help="HOST:PORT (TCP) of the node's Prometheus /metrics; empty: no metrics")
    parser.add_argument("--dialog-db", nargs=3, metavar=("URL", "TABLE", "VARS_TABLE"),
                        help="keep dialogs in PostgreSQL (python -m callstate.dialogs prints these three)")
    args = parser.parse_args(argv)
    tls = Tls(args.tls_port, args.tls_certificate, args.tls_key) if args.tls_port else None
    sys.stdout.write(render(listen=args.listen, rundir=args.rundir, redis_url=args.redis_url,
                            namespace=args.namespace, image_dir=args.image_dir, mode=args.mode,
                            children=args.children, shed_free_percent=args.shed_free_percent, tls=tls,
                            max_cps=args.max_cps, source_max_cps=args.source_max_cps,
                            auth_secret=args.auth_secret, topoh_key=args.topoh_key,
                            python_module=args.python_module, topology_hiding=not args.no_topology_hiding,
                            node_id=args.node_id, dialog_db=DialogDb(*args.dialog_db) if args.dialog_db else None,
                            metrics_listen=args.metrics_listen))


if __name__ == "__main__":
    main()
