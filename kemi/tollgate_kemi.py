"""tollgate's SIP routing, run by Kamailio's app_python3 (kamailio.cfg: cfgengine "python").

mod_init() returns the handler object; Kamailio calls its ksr_* methods. ksr_request_route chains small
ksr_route_<concern> steps, each returning 1 (go on) or -255 (the request is answered: stop), in SPEC §5
order: identify (SIP digest for devices, source IP + tech prefix for IP-authenticated accounts), then the
fast-path decision, then the answer. Every route Kamailio calls is guarded: a Python fault answers 500 and
logs one line, never a traceback (an escaped exception would leave the request unanswered).

Routing-server mode ("redirect", the only mode of this slice): an outbound call is answered 302 with one
Contact per gateway, in failover order (trunk by trunk, each trunk's gateways in order, descending q), the
R-URI user of each being that route's destination as the trunk wants it; the presented caller id is in
P-Asserted-Identity. A local or DID call is redirected to the callee's registered contacts.

Settings come from kamailio.cfg `#!define TOLLGATE_*` (filled in by kemi/render.py), read here with
KSR.kx.get_def(); TOLLGATE_PYTHONPATH makes the repository and its venv importable, since Kamailio embeds
the system's libpython, which knows nothing of the venv.
"""

import logging
import os
import site
import sys
import time
import zlib

import KSR


def _define(name: str) -> str:
    value = KSR.kx.get_def(name)
    if not value:
        raise RuntimeError(f"kamailio.cfg does not #!define {name}")
    return value.strip('"')


def _bootstrap_path() -> None:
    """Put TOLLGATE_PYTHONPATH's directories (and their .pth files) ahead of the system's packages."""
    before = list(sys.path)
    for directory in _define("TOLLGATE_PYTHONPATH").split(":"):
        site.addsitedir(directory)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_bootstrap_path()

from fastpath.model import account_for_source  # noqa: E402  (importable only after the bootstrap)
from fastpath.runtime import FastPath, redis_client  # noqa: E402

ACTIVE = "ACTIVE"
STOP = -255  # a step answered the request: the chain ends here
GO_ON = 1
LOAD_RETRY_SECONDS = 1.0  # while the first load of the projection fails, try again at most this often
QOP_AUTH = 1  # auth_challenge flags: qop=auth
STALE = 16  # ... and stale=true (the nonce expired or was used: same password, new nonce)
MAX_FORWARDS = 10


class Settings:
    def __init__(self) -> None:
        self.redis_url = _define("TOLLGATE_REDIS_URL")
        self.namespace = _define("TOLLGATE_NAMESPACE")
        self.image_dir = _define("TOLLGATE_IMAGE_DIR")
        self.mode = _define("TOLLGATE_MODE")
        self.realm = _define("TOLLGATE_REALM")


# TODO(issue 5, balance slice): available = balance (+ credit limit) - reserved, read and reserved in Redis by
# one atomic script per call, released at call end. Until that slice lands nothing is reserved or debited:
# every identified account is treated as able to afford the longest call (max_call_seconds).
UNMETERED_MICROS = 10**15


def available_micros_todo(account: str) -> int:
    return UNMETERED_MICROS


class KamailioLogHandler(logging.Handler):
    """Python logging (fastpath.runtime's outage messages) into Kamailio's log, one line per record."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({_one_line(record.exc_info[1])})"
        line = f"tollgate {record.name}: {text}".replace("\n", " ") + "\n"
        if record.levelno >= logging.ERROR:
            KSR.err(line)
        elif record.levelno >= logging.WARNING:
            KSR.warn(line)
        else:
            KSR.info(line)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def guarded(route):
    """Any exception in a route: log one line and, for a request that expects one, answer 500."""

    def run(self, msg, *args):
        try:
            return route(self, msg, *args)
        except Exception as exc:
            KSR.err(f"tollgate: {route.__name__} failed: {_one_line(exc)} [call-id {KSR.kx.get_callid()}]\n")
            if KSR.siputils.is_request() > 0 and not KSR.is_ACK():
                KSR.sl.send_reply(500, "Server Internal Error")
            return GO_ON

    run.__name__ = route.__name__
    return run


def mod_init():
    logging.basicConfig(level=logging.INFO, handlers=[KamailioLogHandler()], force=True)
    settings = Settings()
    if settings.mode != "redirect":
        KSR.err(f"tollgate: TOLLGATE_MODE {settings.mode!r} is not available yet (only 'redirect')\n")
        return None
    return Tollgate(settings)


class Call:
    """What identification found out about an INVITE."""

    __slots__ = ("account", "caller_id", "destination")

    def __init__(self) -> None:
        self.account = ""
        self.caller_id = ""
        self.destination = ""


class Tollgate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fast: FastPath | None = None
        self.pid = 0
        self.loaded = False
        self.next_load = 0.0

    # ---------------------------------------------------------------------------------------- process
    def child_init(self, rank: int) -> int:
        if rank > 0:  # a SIP worker (rank 0 is the main process, negative ranks timers and RPC)
            try:
                self._open()
            except Exception as exc:  # the first request tries again, and answers 500 if it fails too
                KSR.err(f"tollgate: child_init failed: {_one_line(exc)}\n")
        return 0

    def _open(self) -> None:
        """This process's own Redis client and fast path (sockets must not cross a fork)."""
        s = self.settings
        self.fast = FastPath(redis_client(s.redis_url), s.image_dir, s.namespace)
        self.pid = os.getpid()
        self.loaded = False
        self.next_load = 0.0
        self._load()

    def _load(self) -> None:
        """The first full read of the projection; retried (quietly) until it succeeds once.

        FastPath.refresh() only follows the change feed, which cannot replace a first load that failed.
        """
        now = time.monotonic()
        if now < self.next_load:
            return
        failed_before = self.next_load > 0
        try:
            self.fast.load()
        except Exception as exc:
            self.next_load = now + LOAD_RETRY_SECONDS
            if not failed_before:
                KSR.err(f"tollgate: projection not loaded yet, retrying every {LOAD_RETRY_SECONDS:g} s: "
                        f"{_one_line(exc)}\n")
            return
        self.loaded = True
        if failed_before:
            KSR.warn("tollgate: projection loaded\n")

    def _fast(self) -> FastPath | None:
        """This process's fast path, following the projection, or None while it has never been loaded.

        Identification reads fast.world before decide() would refresh it, so refresh here (a clock check,
        and a non-blocking poll of the change feed when one is due)."""
        if self.pid != os.getpid():  # a process that child_init did not prepare
            self._open()
        if self.loaded:
            self.fast.refresh()
            return self.fast
        self._load()
        return self.fast if self.loaded else None

    def _ready(self) -> FastPath | None:
        """The fast path, or None after answering 503: without the projection nobody can be identified or
        routed, and 503 sends the caller to another node rather than refusing the call for good."""
        fast = self._fast()
        if fast is None:
            KSR.sl.send_reply(503, "Routing data not loaded")
        return fast

    # ---------------------------------------------------------------------------------------- routes
    @guarded
    def ksr_request_route(self, msg):
        if self.ksr_route_reqinit(msg) == STOP:
            return 1
        if self.ksr_route_withindlg(msg) == STOP:
            return 1
        if self.ksr_route_registrar(msg) == STOP:
            return 1
        if self.ksr_route_invite(msg) == STOP:
            return 1
        KSR.sl.send_reply(405, "Method Not Allowed")
        return 1

    def ksr_route_reqinit(self, msg):
        if KSR.maxfwd.process_maxfwd(MAX_FORWARDS) < 0:
            KSR.sl.send_reply(483, "Too Many Hops")
            return STOP
        if KSR.is_OPTIONS() and KSR.is_myself_ruri() and not KSR.kx.gete_ruser():
            # A keepalive says whether this node can route: 503 until the projection has been loaded.
            if self._fast() is None:
                KSR.sl.send_reply(503, "Routing data not loaded")
            else:
                KSR.sl.send_reply(200, "Keepalive")
            return STOP
        if KSR.is_ACK():  # an ACK to one of our own answers is absorbed by sl; anything else: nothing to do
            return STOP
        if KSR.is_CANCEL():  # every INVITE is answered at once: nothing left to cancel
            KSR.sl.send_reply(481, "Call/Transaction Does Not Exist")
            return STOP
        return GO_ON

    def ksr_route_withindlg(self, msg):
        # A redirect server is never in a dialog's path: an in-dialog request is not ours.
        if KSR.siputils.has_totag() > 0:
            KSR.sl.send_reply(404, "Not here")
            return STOP
        return GO_ON

    def ksr_route_registrar(self, msg):
        if not KSR.is_REGISTER():
            return GO_ON
        fast = self._ready()
        if fast is None:
            return STOP
        device = self._authenticated_device(fast, check_to_user=True)
        if device is None:
            return STOP
        account = fast.world.accounts.get(device.account)
        if account is None or not account.usable(int(time.time())):
            KSR.sl.send_reply(403, "Account disabled")
            return STOP
        if KSR.registrar.save("location", 0) < 0:  # answers the REGISTER itself when it succeeds
            KSR.sl.sl_reply_error()
        return STOP

    def ksr_route_invite(self, msg):
        if not KSR.is_INVITE():
            return GO_ON
        if not KSR.kx.gete_ruser():
            KSR.sl.send_reply(484, "Address Incomplete")
            return STOP
        fast = self._ready()
        if fast is None:
            return STOP
        call = Call()
        if self.ksr_route_identify(msg, fast, call) == STOP:
            return STOP
        decision = fast.decide(call.account, call.caller_id, call.destination,
                               available_micros_todo(call.account), int(time.time()),
                               zlib.crc32(KSR.kx.get_callid().encode()))
        if decision.code != 200:
            KSR.sl.send_reply(decision.code, decision.reason)
            return STOP
        if decision.direction == "outbound":
            return self.ksr_route_redirect_outbound(msg, decision)
        return self.ksr_route_redirect_registered(msg, decision)

    def ksr_route_identify(self, msg, fast: FastPath, call: Call):
        """SIP digest when the request carries credentials, else the source IP map, else a 407 challenge."""
        if KSR.auth.has_credentials(self.settings.realm) > 0:
            device = self._authenticated_device(fast, check_to_user=False)
            if device is None:
                return STOP
            call.account = device.account
            call.destination = KSR.kx.gete_ruser()
        else:
            mapped = account_for_source(fast.world, KSR.kx.get_srcip(), KSR.kx.gete_ruser())
            if mapped is None:
                KSR.auth.auth_challenge(self.settings.realm, QOP_AUTH)
                return STOP
            call.account, call.destination = mapped
        call.caller_id = KSR.kx.gete_fuser()
        return GO_ON

    def _authenticated_device(self, fast: FastPath, check_to_user: bool):
        """The device whose credentials this request carries, or None once the request has been answered:
        no credentials (or a stale nonce) -> challenge; unknown device or wrong password -> 403."""
        realm = self.settings.realm
        if KSR.auth.has_credentials(realm) < 0:
            KSR.auth.auth_challenge(realm, QOP_AUTH)
            return None
        device = fast.world.devices.get(KSR.kx.gete_au())
        if device is None or device.status != ACTIVE or device.realm != realm:
            KSR.sl.send_reply(403, "Forbidden")
            return None
        rc = KSR.auth.pv_auth_check(realm, device.ha1, 1, 1 if check_to_user else 0)  # 1: the password is HA1
        if rc in (-4, -6):  # nonce expired or reused
            KSR.auth.auth_challenge(realm, QOP_AUTH | STALE)
            return None
        if rc < 0:
            KSR.sl.send_reply(403, "Forbidden")
            return None
        KSR.auth.consume_credentials()
        return device

    def ksr_route_redirect_outbound(self, msg, decision):
        """302: one Contact per gateway in failover order; R-URI user = the route's destination."""
        contacts = [_gateway_uri(route.destination, address, transport)
                    for route in decision.routes for address, transport in route.gateways]
        if not contacts:
            KSR.sl.send_reply(503, "No route available")
            return STOP
        _set_destination_set(contacts)
        self._present_caller_id(decision.caller_id)
        KSR.sl.send_reply(302, "Moved Temporarily")
        return STOP

    def ksr_route_redirect_registered(self, msg, decision):
        """A local or DID call: 302 to the callee's registered contacts (480 when none is registered)."""
        users = (decision.callee,) if decision.direction == "local" else decision.callee_devices
        found = False
        for user in users:
            aor = f"sip:{user}@{self.settings.realm}"
            found = (KSR.registrar.lookup_to_dset("location", aor) if found
                     else KSR.registrar.lookup_uri("location", aor)) > 0 or found
        if not found:
            KSR.sl.send_reply(480, "Temporarily Unavailable")
            return STOP
        self._present_caller_id(decision.caller_id)
        KSR.sl.send_reply(302, "Moved Temporarily")
        return STOP

    def _present_caller_id(self, caller_id: str) -> None:
        KSR.hdr.append_to_reply(f"P-Asserted-Identity: <sip:{caller_id}@{self.settings.realm}>\r\n")


def _gateway_uri(user: str, address: str, transport: str) -> str:
    return f"sip:{user}@{address}" + ("" if transport == "udp" else f";transport={transport}")


def _set_destination_set(uris: list[str]) -> None:
    """Every URI becomes a branch, q falling by 0.001 per place so that the order survives. The R-URI is left
    alone: sl's 3xx prints a rewritten R-URI as a Contact of its own (without a q)."""
    for place, uri in enumerate(uris):
        KSR.corex.append_branch_uri_q(uri, f"{max(1000 - place, 1) / 1000:.3f}")


# ---------------------------------------------------------------------------------------------- app_python3s
# Kamailio >= 5.7 also offers app_python3s, which calls module-level functions without a msg argument
# instead of the methods of mod_init()'s object. These delegate to one handler per process, so the same
# script runs under both modules (Debian 12's Kamailio 5.6 has app_python3 only: this part is untested here).
_handler = None


def _the_handler():
    global _handler
    if _handler is None:
        _handler = mod_init()
    return _handler


def ksr_request_route(msg=None):
    return _the_handler().ksr_request_route(msg)
