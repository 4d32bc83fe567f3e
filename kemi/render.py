"""Fill in kemi/kamailio.cfg: the one place that knows its placeholders and their defaults.

Used by tests/kamailio_harness.py (and by the scripts that start Kamailio), so that no file under kemi/
is ever edited by hand to point at a machine's paths.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

KEMI_DIR = Path(__file__).resolve().parent
REPO_ROOT = KEMI_DIR.parent
TEMPLATE = KEMI_DIR / "kamailio.cfg"
SCRIPT = KEMI_DIR / "tollgate_kemi.py"
MODES = ("relay", "redirect")  # relay: the default for new installs; redirect: routing-server mode
NDB_SERVER_NAME = "tollgate"  # the ndb_redis server the KEMI script names (tollgate_kemi.NDB_SERVER)
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def python_path() -> str:
    """The repository and this interpreter's site-packages (the venv's), for Kamailio's embedded Python."""
    return ":".join(dict.fromkeys([str(REPO_ROOT), sysconfig.get_paths()["purelib"]]))


def ndb_redis_server(redis_url: str, name: str = NDB_SERVER_NAME) -> str:
    """ndb_redis's "server" parameter for a redis:// or unix:// URL (host, port, db, password)."""
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
    password = unquote(url.password or "")
    if ";" in password:
        raise ValueError("redis URL: ndb_redis cannot carry a password containing ';'")
    password = f";pass={password}" if password else ""
    return f"name={name};{where};db={db}{password}"


def render(*, listen: str, rundir: str, redis_url: str, namespace: str, image_dir: str, mode: str = "relay",
           realm: str = "tollgate", children: int = 2, debug: int = 2, script: str | None = None,
           pythonpath: str | None = None, fr_timer_ms: int = 3000, fr_inv_timer_ms: int = 120000,
           shed_free_percent: int = 15) -> str:
    """The configuration text; `listen` is a Kamailio listen value such as "udp:127.0.0.1:5060".
    `shed_free_percent`: in relay mode, new calls are answered 503 while less than this share of Kamailio's
    shared memory is free (0 never sheds)."""
    if not 0 <= shed_free_percent <= 100:
        raise ValueError(f"shed_free_percent {shed_free_percent}: expected 0..100")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    values = {
        "LISTEN": listen, "RUNDIR": rundir, "REDIS_URL": redis_url, "NAMESPACE": namespace,
        "IMAGE_DIR": image_dir, "MODE": mode, "REALM": realm, "CHILDREN": str(children), "DEBUG": str(debug),
        "KEMI_SCRIPT": script or str(SCRIPT), "PYTHONPATH": pythonpath or python_path(),
        "FR_TIMER": str(int(fr_timer_ms)), "FR_INV_TIMER": str(int(fr_inv_timer_ms)),
        "NDB_REDIS_SERVER": ndb_redis_server(redis_url), "SHED_FREE_PERCENT": str(int(shed_free_percent)),
    }
    for name, value in values.items():
        if not value or any(c in value for c in '"\n\r'):
            raise ValueError(f"{name}={value!r}: must be non-empty, without quotes or newlines")

    def fill(match: re.Match) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise ValueError(f"kamailio.cfg has an unknown placeholder {match.group(0)}") from None

    return _PLACEHOLDER.sub(fill, TEMPLATE.read_text())


if __name__ == "__main__":  # python -m kemi.render LISTEN RUNDIR REDIS_URL NAMESPACE IMAGE_DIR [MODE] > kamailio.cfg
    listen, rundir, redis_url, namespace, image_dir = sys.argv[1:6]
    sys.stdout.write(render(listen=listen, rundir=rundir, redis_url=redis_url, namespace=namespace,
                            image_dir=image_dir, mode=sys.argv[6] if len(sys.argv) > 6 else "relay"))
