"""tollgate's SIP routing, run by Kamailio's app_python3 (kamailio.cfg: cfgengine "python").

mod_init() returns the handler object; Kamailio calls its ksr_* methods. ksr_request_route chains small
ksr_route_<concern> steps, each returning 1 (go on) or -255 (the request is answered: stop), in SPEC §5
order: identify (SIP digest for devices, source IP + tech prefix for IP-authenticated accounts), then the
fast-path decision, then the answer. Every route Kamailio calls is guarded: a Python fault answers 500 and
logs one line, never a traceback (an escaped exception would leave the request unanswered).

Two modes (kamailio.cfg TOLLGATE_MODE):
- "relay" (the default): an admitted call is relayed statefully (tm, record-route, dialog). Outbound: to the
  first route's first gateway, R-URI user = the route's destination, From user (uac_replace_from, restored
  toward the caller) and P-Asserted-Identity = the route's caller id; the failure route tries the trunk's next
  gateway, then the next trunk, on timeout, 408, 5xx or 6xx (not 486/487); when all fail the caller gets
  the last failure's code. Local and DID calls go to the callee's registered contacts. The dialog's timeout
  is the granted duration (both legs get a BYE at expiry); at the dialog's end or failure the call is settled
  in Redis once per call id (fastpath.admission): the customer debited cost(billable seconds) under the
  decision's terms, the provider credited its termination cost, the call's event queued with it.
- "redirect" (routing-server mode): an outbound call is answered 302 with one Contact per gateway, in
  failover order (trunk by trunk, each trunk's gateways in order, descending q), the R-URI user of each
  being that route's destination as the trunk wants it; the presented caller id is in P-Asserted-Identity.
  A local or DID call is redirected to the callee's registered contacts. This node never sees the call's
  end: CPS and the balance are checked, nothing is reserved and concurrent calls are not counted.

Admission (both modes, SPEC §5 order): after identification and the account check, the decision is made as
if money were plentiful, then one atomic Redis script (Admissions.admit_call, one round trip through
Kamailio's own ndb_redis client, redis-py as the fallback) checks the
account's CPS, then its concurrent calls, then computes the grant against the live balance (the longest
affordable call under the decision's terms, up to the company's maximum) and reserves its cost: two parallel
calls on a tight balance share it instead of the second being refused on a stale read. A decision refused at
a later stage still passes through the CPS and concurrency checks first (decided=False), so that their 503
wins as SPEC §8 orders; one refused after the balance stage (no route) is decided again with the real
balance, so that 402 still comes before it.

Settings come from kamailio.cfg `#!define TOLLGATE_*` (filled in by kemi/render.py), read here with
KSR.kx.get_def(); TOLLGATE_PYTHONPATH makes the repository and its venv importable, since Kamailio embeds
the system's libpython, which knows nothing of the venv.
"""

import json
import logging
import math
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

from fastpath import admission as adm  # noqa: E402  (importable only after the bootstrap)
from fastpath.model import account_for_source  # noqa: E402
from fastpath.reference.rating import Terms, cost  # noqa: E402
from fastpath.runtime import FastPath, redis_client  # noqa: E402
from kemi.render import NDB_SERVER_NAME as NDB_SERVER  # noqa: E402  (kamailio.cfg's ndb_redis server)

ACTIVE = "ACTIVE"
STOP = -255  # a step answered the request: the chain ends here
GO_ON = 1
LOAD_RETRY_SECONDS = 1.0  # while the first load of the projection fails, try again at most this often
QOP_AUTH = 1  # auth_challenge flags: qop=auth
STALE = 16  # ... and stale=true (the nonce expired or was used: same password, new nonce)
MAX_FORWARDS = 10
RELAY, REDIRECT = "relay", "redirect"
RECORD_FLAG = 7  # SPEC §5: the call is marked for the media recorder
# ... and the relayed INVITE says so to the next hop (an SBC or recorder that keys on it); never the caller's own.
RECORD_HEADER = "X-Tollgate-Record"
POSTPAID = "POSTPAID"
# Failover to the next gateway on these final answers (SPEC §5): timeout (408), 5xx, 6xx; never 486 / 487.
NO_FAILOVER = (486, 487)
DLG_CALL = "tollgate"  # dialog variable: the call as decided (JSON), for the failure route and the settlement
DLG_AT = "tollgate_at"  # "route,gateway" of the branch last sent
DLG_ANSWER = "tollgate_answer"  # epoch seconds of the 200 OK
DLG_CODE = "tollgate_code"  # the last final answer seen by the failure route
AVP_CALL = "$avp(tollgate_call)"  # the same JSON, per transaction (failure and branch routes read it)
AVP_AT = "$avp(tollgate_at)"
AVP_TIMEOUT = "$avp(tollgate_timeout)"  # kamailio.cfg: dialog timeout_avp
# A trunk channel is held at most this long past the call's granted seconds (ring time and margin) when the
# call's end never comes (its node died); the ledger's reaper frees it then.
TRUNK_HOLD_GRACE_SECONDS = 300
OVERLOAD_RETRY_AFTER_SECONDS = 5
PLENTY = 1 << 62  # the `available` the decision is made with: Admissions.admit_call grants against the real one
NDB_REPLY = "tollgate"  # the ndb_redis reply container of the scripts run through it
NDB_REPLY_VALUE = f"$redis({NDB_REPLY}=>value)"
NDB_REPLY_VALUES = tuple(f"$redis({NDB_REPLY}=>value[{i}])" for i in range(4))
EARLIER_THAN_BALANCE = ("account", "direction", "cli", "rate")  # decision stages before the money check


class Settings:
    def __init__(self) -> None:
        self.redis_url = _define("TOLLGATE_REDIS_URL")
        self.namespace = _define("TOLLGATE_NAMESPACE")
        self.image_dir = _define("TOLLGATE_IMAGE_DIR")
        self.mode = _define("TOLLGATE_MODE")
        self.realm = _define("TOLLGATE_REALM")
        # Relay mode: new calls get 503 while less than this share of shared memory is free.
        self.shed_free_fraction = int(_define("TOLLGATE_SHED_FREE_PERCENT")) / 100


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


def guarded_event(route):
    """Any exception in an event route: log one line (there is no request to answer)."""

    def run(self, *args):
        try:
            return route(self, *args)
        except Exception as exc:
            KSR.err(f"tollgate: {route.__name__} failed: {_one_line(exc)} [call-id {KSR.kx.get_callid()}]\n")
            return 1

    run.__name__ = route.__name__
    return run


def mod_init():
    logging.basicConfig(level=logging.INFO, handlers=[KamailioLogHandler()], force=True)
    settings = Settings()
    if settings.mode not in (RELAY, REDIRECT):
        KSR.err(f"tollgate: TOLLGATE_MODE {settings.mode!r}: expected 'relay' or 'redirect'\n")
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
        self.relay = settings.mode == RELAY
        self.fast: FastPath | None = None
        self.admissions: adm.Admissions | None = None
        self.pid = 0
        self.loaded = False
        self.next_load = 0.0
        self.method = ""  # the current request's method
        self.shm_total = 0  # Kamailio's shared memory size, read once

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
        client = redis_client(s.redis_url)
        self.fast = FastPath(client, s.image_dir, s.namespace)
        self.admissions = adm.Admissions(client, s.namespace)
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
            self.admissions.load_scripts()  # for ndb_redis's EVALSHA (see _admit)
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

    def _overloaded(self) -> bool:
        """Relay mode keeps every call's transaction and dialog in shared memory: below the configured share of
        it free, new calls are refused with a stateless 503 rather than let the node run out and drop calls
        in progress (Kamailio then fails to create transactions and callers retransmit into the overload)."""
        if not self.relay:
            return False
        if not self.shm_total:
            self.shm_total = int(KSR.pv.get("$stat(total_size)") or 0)
        free = KSR.pv.get("$stat(free_size)")
        floor = self.shm_total * self.settings.shed_free_fraction
        return bool(self.shm_total) and free is not None and int(free) < floor

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
        self.method = KSR.kx.get_method()  # read once: the steps below compare it instead of asking Kamailio
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
        if self.method == "OPTIONS" and KSR.is_myself_ruri() and not KSR.kx.gete_ruser():
            # A keepalive says whether this node can route: 503 until the projection has been loaded, and
            # while it sheds load (so that SBCs and balancers send new calls elsewhere).
            if self._fast() is None:
                KSR.sl.send_reply(503, "Routing data not loaded")
            elif self._overloaded():
                KSR.sl.send_reply(503, "Overloaded")
            else:
                KSR.sl.send_reply(200, "Keepalive")
            return STOP
        if not self.relay:
            if self.method == "ACK":  # an ACK to one of our own answers is absorbed by sl; anything else: nothing to do
                return STOP
            if self.method == "CANCEL":  # every INVITE is answered at once: nothing left to cancel
                KSR.sl.send_reply(481, "Call/Transaction Does Not Exist")
                return STOP
            return GO_ON
        if self.method == "CANCEL":  # relayed to the branches of its INVITE's transaction, if there is one
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return STOP
        if self.method != "ACK":
            if KSR.tmx.t_precheck_trans() > 0:  # a retransmission being handled by another worker
                KSR.tm.t_check_trans()
                return STOP
            if KSR.tm.t_check_trans() == 0:  # a retransmission: tm has resent the last answer
                return STOP
        return GO_ON

    def ksr_route_withindlg(self, msg):
        if KSR.siputils.has_totag() < 0:
            if self.method == "ACK":
                return STOP
            return GO_ON
        if not self.relay:  # a redirect server is never in a dialog's path: an in-dialog request is not ours
            KSR.sl.send_reply(404, "Not here")
            return STOP
        if KSR.rr.loose_route() > 0:  # follows our Record-Route: ACK, BYE, re-INVITE... (dialog tracks them)
            if KSR.tm.t_relay() < 0:
                KSR.sl.sl_reply_error()
            return STOP
        if self.method == "ACK":
            if KSR.tm.t_check_trans() > 0:  # the ACK of a failure we relayed
                KSR.tm.t_relay()
            return STOP
        KSR.sl.send_reply(404, "Not here")
        return STOP

    def ksr_route_registrar(self, msg):
        if self.method != "REGISTER":
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
        if self.method != "INVITE":
            return GO_ON
        if self._overloaded():  # shed new calls before they take what the calls in progress need
            KSR.hdr.append_to_reply(f"Retry-After: {OVERLOAD_RETRY_AFTER_SECONDS}\r\n")
            KSR.sl.send_reply(503, "Overloaded")
            return STOP
        if not KSR.kx.gete_ruser():
            KSR.sl.send_reply(484, "Address Incomplete")
            return STOP
        fast = self._ready()
        if fast is None:
            return STOP
        call = Call()
        if self.ksr_route_identify(msg, fast, call) == STOP:
            return STOP
        account = fast.world.accounts.get(call.account)
        credit_limit = account.credit_limit if account is not None and account.account_type == POSTPAID else 0
        now = int(time.time())
        call_id = KSR.kx.get_callid()
        entropy = zlib.crc32(call_id.encode())  # picks the "random" DID / caller id of CLI pool options 1 and 2
        # Money is Redis's business (admit_call computes the grant against the live balance, atomically with
        # the reservation): decide as if it were plentiful, so that the decision is never refused for money.
        # (fast.engine, not fast.decide: _ready() has just followed the projection)
        decision = fast.engine.decide(call.account, call.caller_id, call.destination, PLENTY, now, entropy)
        if decision.stage == "account":  # unknown, inactive, deleted or expired: before any counting
            KSR.sl.send_reply(decision.code, decision.reason)
            return STOP
        if decision.stage not in EARLIER_THAN_BALANCE and decision.code != 200:
            # Refused after the balance stage (no route): the real balance decides between 402 and this
            # refusal, as SPEC §8 orders (rare; an extra read, nothing reserved).
            decision = fast.engine.decide(call.account, call.caller_id, call.destination,
                                          self.admissions.available(call.account, credit_limit), now, entropy)
        decided = decision.code == 200
        plan = self._plan(call, call_id, decision) if decided and self.relay else None  # before any reservation
        # A redirect server never sees the end: it checks the money but reserves nothing, counts no calls.
        grant = self._admit(
            call.account, call_id, now=now, cps=account.cps,
            max_calls=account.max_concurrent_calls if self.relay else 0, credit_limit=credit_limit,
            terms=decision.terms, max_call_seconds=fast.world.max_call_seconds, decided=decided,
            reserve=self.relay)
        if grant.outcome == adm.CPS_EXCEEDED:
            KSR.sl.send_reply(503, "CPS limit exceeded")
            return STOP
        if grant.outcome == adm.CONCURRENCY_EXCEEDED:
            KSR.sl.send_reply(503, "Concurrent call limit")
            return STOP
        if not decided:
            KSR.sl.send_reply(decision.code, decision.reason)
            return STOP
        if grant.outcome == adm.INSUFFICIENT:  # not even one second is affordable
            KSR.sl.send_reply(402, "Insufficient balance")
            return STOP
        if plan is not None:
            plan["granted"], plan["reserve"] = grant.granted, grant.reserve
        if not self.relay:
            if decision.direction == "outbound":
                return self.ksr_route_redirect_outbound(msg, decision)
            return self.ksr_route_redirect_registered(msg, decision)
        try:
            code, reason = self.ksr_route_relay(plan, decision)
        except Exception:
            try:  # release the reservation; the fault itself is logged (and answered 500) by the guard
                self._settle(plan, answer=None, end=time.time(), code=500)
            except Exception as exc:
                KSR.err(f"tollgate: releasing {call_id} failed too: {_one_line(exc)}\n")
            raise
        if code:  # not relayed: the call ends here, and its reservation is released
            KSR.sl.send_reply(code, reason)
            self._settle(plan, answer=None, end=time.time(), code=code)
        return STOP

    def _admit(self, account: str, call_id: str, **admission) -> adm.Grant:
        """Admissions.admit_call through Kamailio's ndb_redis (one round trip without Python's socket and
        protocol code); through redis-py when the command cannot be formatted or ndb_redis fails (Redis
        restarted without the script: redis-py loads it again; Redis down: redis-py raises, the guard answers 500)."""
        command = self.admissions.admit_call_command(account, call_id, **admission)
        if command is not None and KSR.ndb_redis.redis_cmd_p1(NDB_SERVER, command, call_id, NDB_REPLY) >= 0:
            reply = [KSR.pv.get(pv) for pv in NDB_REPLY_VALUES]  # (it returns 0 on success, -1 on failure)
            if None not in reply:  # an error reply (NOSCRIPT) has no elements
                return adm.grant_from_reply(reply)
        return self.admissions.admit_call(account, call_id, **admission)

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

    # ---------------------------------------------------------------------------------------- relay
    def _plan(self, call: Call, call_id: str, decision) -> dict:
        """Everything the failure route and the settlement need, fixed at setup: the decision's terms (a
        deck may change during the call), its routes and the call's identity."""
        routes = [{
            "trunk": route.trunk, "provider": route.provider, "gateways": [list(g) for g in route.gateways],
            "destination": route.destination, "caller_id": route.caller_id, "prefix": route.prefix,
            "rate": route.rate_per_min, "terms": list(route.terms),
            "max_calls": route.max_concurrent_calls, "cps": route.cps,
        } for route in decision.routes]
        return {
            "call_id": call_id, "account": call.account, "direction": decision.direction,
            "caller_id_received": call.caller_id, "caller_id_presented": decision.caller_id,
            "destination_dialled": call.destination, "destination": decision.destination,
            "rate_group": decision.rate_group, "prefix": decision.prefix, "rate": decision.rate_per_min,
            "terms": list(decision.terms), "granted": 0, "reserve": 0, "setup": time.time(),  # admit_call's
            "routes": routes, "record": decision.record,
        }

    def ksr_route_relay(self, plan: dict, decision) -> tuple[int, str]:
        """Relay the admitted INVITE; (0, "") once relayed, else the answer to give."""
        first = None
        if decision.direction == "outbound":
            first = self._seize_from(plan, 0)
            if first is None:  # no trunk with a gateway and a free channel under its CPS (SPEC §5)
                return 503, "No route available"
        elif not self._lookup_registered(decision):
            return 480, "Temporarily Unavailable"
        encoded = json.dumps(plan, separators=(",", ":"))
        KSR.pv.seti(AVP_TIMEOUT, max(int(plan["granted"]), 1))
        if KSR.dialog.dlg_manage() < 0:
            return 500, "Dialog not created"
        KSR.dialog.var_sets(DLG_CALL, encoded)
        KSR.pv.sets(AVP_CALL, encoded)
        KSR.rr.record_route()
        KSR.hdr.remove(RECORD_HEADER)
        if decision.record:
            KSR.setflag(RECORD_FLAG)
            KSR.hdr.append(f"{RECORD_HEADER}: yes\r\n")
        if decision.direction == "outbound":
            self._to_gateway(plan, first, 0)
        else:
            KSR.hdr.remove("P-Asserted-Identity")
            self._present_caller_id_request(decision.caller_id)
            KSR.dialog.var_sets(DLG_AT, "")
        KSR.tm.t_on_failure("ksr_failure_route_next_gateway")
        if KSR.tm.t_relay() < 0:
            return 500, "Relay failed"
        return 0, ""

    def _lookup_registered(self, decision) -> bool:
        """R-URI and branches := the callee's registered contacts (a local call's device, a DID owner's)."""
        users = (decision.callee,) if decision.direction == "local" else decision.callee_devices
        found = False
        for user in users:
            aor = f"sip:{user}@{self.settings.realm}"
            found = (KSR.registrar.lookup_to_dset("location", aor) if found
                     else KSR.registrar.lookup_uri("location", aor)) > 0 or found
        return found

    def _to_gateway(self, plan: dict, route_index: int, gateway_index: int) -> None:
        """R-URI := the route's destination at that gateway; the branch route presents the route's caller id."""
        route = plan["routes"][route_index]
        address, transport = route["gateways"][gateway_index]
        KSR.seturi(_gateway_uri(route["destination"], address, transport))
        at = f"{route_index},{gateway_index}"
        plan["at"] = at  # (for a settlement in this same request, e.g. when the relay itself fails)
        KSR.pv.sets(AVP_AT, at)
        KSR.dialog.var_sets(DLG_AT, at)
        KSR.tm.t_on_branch("ksr_branch_route_present")

    def _seize_from(self, plan: dict, start: int) -> int | None:
        """The first route from `start` on that has a gateway and, when its trunk has limits, a channel free
        under its CPS (seized in Redis for this call, cluster-wide); None when there is none."""
        for index in range(start, len(plan["routes"])):
            route = plan["routes"][index]
            if not route["gateways"]:
                continue
            if not _limited(route):
                return index
            now = int(time.time())
            outcome = self.admissions.seize_trunk(
                route["trunk"], adm.provider_settlement_id(plan["account"], plan["call_id"]), now=now,
                max_calls=route["max_calls"], cps=route["cps"],
                hold_until=now + int(plan["granted"]) + TRUNK_HOLD_GRACE_SECONDS)
            if outcome == adm.TRUNK_SEIZED:
                return index
        return None

    def _release_trunk(self, plan: dict, route: dict) -> None:
        if _limited(route):
            self.admissions.release_trunk(route["trunk"], adm.provider_settlement_id(plan["account"], plan["call_id"]))

    @guarded_event
    def ksr_branch_route_present(self, msg):
        """Per branch: From user and P-Asserted-Identity := the caller id the branch's trunk is sent."""
        plan = json.loads(KSR.pv.get(AVP_CALL))
        route_index, _gateway = map(int, KSR.pv.get(AVP_AT).split(","))
        caller_id = plan["routes"][route_index]["caller_id"]
        KSR.uac.uac_replace_from_uri(f"sip:{caller_id}@{KSR.kx.gete_fhost()}")
        KSR.hdr.remove("P-Asserted-Identity")
        self._present_caller_id_request(caller_id)
        return 1

    def _present_caller_id_request(self, caller_id: str) -> None:
        KSR.hdr.append(f"P-Asserted-Identity: <sip:{caller_id}@{self.settings.realm}>\r\n")

    @guarded_event
    def ksr_failure_route_next_gateway(self, msg):
        """A branch failed: try the trunk's next gateway, then the next trunk, on timeout/408/5xx/6xx."""
        code = KSR.tm.t_get_status_code()
        KSR.dialog.var_sets(DLG_CODE, str(code))
        if KSR.tm.t_is_canceled() > 0 or code in NO_FAILOVER or not (code == 408 or code >= 500):
            return 1
        at = KSR.pv.get(AVP_AT)
        if not at:  # a local or DID call: no failover
            return 1
        plan = json.loads(KSR.pv.get(AVP_CALL))
        route_index, gateway_index = map(int, at.split(","))
        following = _next_gateway(plan["routes"], route_index, gateway_index)
        if following is not None and following[0] != route_index:  # on to another trunk: free this one's channel
            self._release_trunk(plan, plan["routes"][route_index])
            following = self._seize_from(plan, following[0])
            following = None if following is None else (following, 0)
        if following is None:  # every gateway failed: the caller gets this last failure's answer
            return 1
        self._to_gateway(plan, *following)
        KSR.tm.t_on_failure("ksr_failure_route_next_gateway")
        if KSR.tm.t_relay() < 0:
            KSR.err(f"tollgate: failover relay failed [call-id {KSR.kx.get_callid()}]\n")
        return 1

    def ksr_reply_route(self, msg):
        """Every reply passes here (app_python3 looks this method up; a missing one leaves an AttributeError
        pending in the interpreter, which the next route then trips over as a SystemError)."""
        return 1

    # ---------------------------------------------------------------------------------------- call end
    @guarded_event
    def ksr_dialog_event(self, *args):
        """dialog:start (answered), dialog:end (BYE or expiry), dialog:failed (never answered)."""
        event = next((a for a in args if isinstance(a, str)), "")
        if event == "dialog:start":
            answered = time.time()
            KSR.dialog.var_sets(DLG_ANSWER, f"{answered:.3f}")
            self._mark_answered(answered)
            return 1
        if event in ("dialog:end", "dialog:failed"):
            self._settle_dialog(ended=event == "dialog:end")
        return 1

    @guarded_event
    def ksr_tm_event(self, *args):
        """tm:local-request: the dialog module's BYEs at the dialog's expiry settle the call there and then.

        Kamailio 5.6 runs dialog:end after those BYEs only if their answers have not come back yet (a race
        that loopback gateways lose), so the expiry is settled here; a later dialog:end is a repeat that
        settle() ignores."""
        event = next((a for a in args if isinstance(a, str)), "")
        if event == "tm:local-request" and KSR.is_BYE():
            self._settle_dialog(ended=True)
        return 1

    def _dialog_plan(self) -> dict | None:
        """The current dialog's call as decided at setup (None when the dialog is not one of ours), with
        this process's Redis clients ready (event routes may run in processes child_init did not prepare)."""
        encoded = KSR.dialog.var_get(DLG_CALL)
        if not encoded:
            return None
        if self.pid != os.getpid():
            self._open()
        return json.loads(encoded)

    def _mark_answered(self, answered: float) -> None:
        """Tell Redis the call was answered, so that a reaper never frees it before its granted seconds."""
        plan = self._dialog_plan()
        if plan is None:
            return
        account, call_id = plan["account"], plan["call_id"]
        if _ndb_int(self.admissions.mark_answered_command(account, int(answered)), call_id) is None:
            self.admissions.mark_answered(account, call_id, int(answered))

    def _settle_dialog(self, ended: bool) -> None:
        """Settle the current dialog's call (nothing when the dialog is not one of ours)."""
        plan = self._dialog_plan()
        if plan is None:
            return
        at = KSR.dialog.var_get(DLG_AT) or ""
        if at:
            plan["at"] = at
        answer = KSR.dialog.var_get(DLG_ANSWER) or ""
        code = KSR.dialog.var_get(DLG_CODE) or ""
        answered = ended and bool(answer)
        self._settle(plan, answer=float(answer) if answered else None, end=time.time(),
                     code=200 if answered else int(code or 0))

    def _settle(self, plan: dict, *, answer: float | None, end: float, code: int) -> None:
        """The call's money and event, once per call id (Admissions.settle is idempotent): the customer
        debited cost(billable) under the decision's terms, the provider credited its termination cost."""
        granted = int(plan["granted"])
        billable = min(math.ceil(end - answer - 0.0005), granted) if answer is not None else 0  # started seconds
        billable = max(billable, 0)
        customer_cost = cost(billable, Terms(*plan["terms"]))
        route = gateway = None
        if plan.get("at"):
            route_index, gateway_index = map(int, plan["at"].split(","))
            route = plan["routes"][route_index]
            gateway = route["gateways"][gateway_index][0]
        provider_cost = cost(billable, Terms(*route["terms"])) if route else 0
        if route:
            self._release_trunk(plan, route)
        event = {
            "call_id": plan["call_id"], "account": plan["account"], "direction": plan["direction"],
            "caller_id_received": plan["caller_id_received"],
            "caller_id_presented": route["caller_id"] if route else plan["caller_id_presented"],
            "destination_dialled": plan["destination_dialled"],
            "destination_sent": route["destination"] if route else plan["destination"],
            "rate_group": plan["rate_group"], "prefix": plan["prefix"], "rate_per_min": plan["rate"],
            "trunk": route["trunk"] if route else "", "provider": route["provider"] if route else "",
            "gateway": gateway or "", "setup_time": f"{plan['setup']:.3f}",
            "answer_time": f"{answer:.3f}" if answer is not None else "", "end_time": f"{end:.3f}",
            "billable_seconds": billable, "sip_code": code, "customer_cost": customer_cost,
            "provider_cost": provider_cost, "record": "yes" if plan.get("record") else "no",
        }
        account, call_id, encoded = plan["account"], plan["call_id"], adm.encode_event(event)
        first = _ndb_int(self.admissions.settle_command(account, customer_cost), call_id, encoded)
        if first is None:  # (see _admit: the same fallback)
            first = self.admissions.settle(account, call_id, customer_cost, event)
        if route and billable > 0:
            provider, seat = route["provider"], adm.provider_settlement_id(account, call_id)
            if _ndb_int(self.admissions.settle_command(provider, -provider_cost), seat, encoded) is None:
                self.admissions.credit_provider(provider, account, call_id, provider_cost, event)
        if not first:
            KSR.info(f"tollgate: call {plan['call_id']} already settled\n")

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


def _ndb_int(command: str | None, *params: str) -> int | None:
    """An integer-returning Redis script through ndb_redis (command: a format with one `%s` per param), or
    None when it could not run there (no command, Redis unreachable, an error reply such as NOSCRIPT): the
    caller then goes through redis-py."""
    if command is None:
        return None
    send = KSR.ndb_redis.redis_cmd_p1 if len(params) == 1 else KSR.ndb_redis.redis_cmd_p2
    if send(NDB_SERVER, command, *params, NDB_REPLY) < 0:
        return None
    value = KSR.pv.get(NDB_REPLY_VALUE)
    return value if isinstance(value, int) else None


def _next_gateway(routes: list, route_index: int, gateway_index: int) -> tuple[int, int] | None:
    """The trunk's next gateway, else the first gateway of the next trunk that has one."""
    if gateway_index + 1 < len(routes[route_index]["gateways"]):
        return route_index, gateway_index + 1
    for following in range(route_index + 1, len(routes)):
        if routes[following]["gateways"]:
            return following, 0
    return None


def _limited(route: dict) -> bool:
    """Whether the route's trunk has a channel or CPS limit (only those are counted in Redis)."""
    return bool(route.get("max_calls") or route.get("cps"))


def _gateway_uri(user: str, address: str, transport: str) -> str:
    return f"sip:{user}@{address}" + ("" if transport == "udp" else f";transport={transport}")


def _set_destination_set(uris: list[str]) -> None:
    """Every URI becomes a branch, q falling by 0.001 per place so that the order survives. The R-URI is left
    alone: sl's 3xx prints a rewritten R-URI as a Contact of its own (without a q)."""
    for place, uri in enumerate(uris):
        KSR.corex.append_branch_uri_q(uri, f"{max(1000 - place, 1) / 1000:.3f}")


# ---------------------------------------------------------------------------------------------- app_python3s
# Kamailio >= 5.7 also offers app_python3s, which calls module-level functions (by the route names the script
# and kamailio.cfg give: request route, failure and branch routes, event callbacks) without a msg argument,
# instead of the methods of mod_init()'s object. Every ksr_* method therefore also exists as a module-level
# function delegating to one handler per process, so the same script runs under both modules. (Debian 12's
# Kamailio 5.6 has app_python3 only: tests/test_kamailio.py checks the wrappers exist and delegate.)
_handler = None


def _the_handler():
    global _handler
    if _handler is None:
        _handler = mod_init()
    return _handler


def _module_level(name: str):
    def route(*args):
        method = getattr(_the_handler(), name)
        return method(*args) if args else method(None)  # routes take a msg; app_python3s passes none

    route.__name__ = name
    return route


for _name in [name for name in vars(Tollgate) if name.startswith("ksr_")]:
    globals()[_name] = _module_level(_name)
