"""tollgate's Python entry points, called from kamailio.cfg's native routing (python_exec / app_python3s_exec).

Python is entered only where a call is decided (issue "Carrier speed"): an initial INVITE (ksr_invite:
identify, decide, admit, then relay or redirect), a REGISTER (ksr_register), a failed branch that may fail
over (ksr_failover), the call's end (ksr_settle), and the answer mark when Redis lost its script
(ksr_mark_answered). Everything else - retransmissions, ACK, CANCEL, in-dialog requests, keepalives, replies
- stays in kamailio.cfg.

Each entry is guarded: a Python fault answers 500 (when there is a request to answer) and logs one line,
never a traceback. The work lives in plain modules: kemi/identify.py (who calls), kemi/relay.py (relay and
failover), kemi/redirect.py (routing-server answers), callstate/plan.py and kemi/settlement.py (the call's plan
and what its end costs; no KSR, unit-tested), callstate/ (the Redis side), fastpath/ (the decision).

Settings come from kamailio.cfg `#!define TOLLGATE_*` (filled in by kemi/render.py), read with
KSR.kx.get_def(); TOLLGATE_PYTHONPATH makes the repository and its venv importable, since Kamailio embeds the
system's libpython, which knows nothing of the venv. The SIP realm is the projection's (world.sip_realm),
so a change through UpdateCompany applies without a restart.
"""

import logging
import os
import re
import site
import socket
import sys
import time
import zlib
from dataclasses import dataclass

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

import redis  # noqa: E402  (importable only after the bootstrap)

from callstate import events, store  # noqa: E402
from callstate.connection import is_cluster  # noqa: E402
from callstate.plan import RELAY_FAILED, CallPlan, Position, RoutePlan  # noqa: E402
from callstate.store import CallState  # noqa: E402
from fastpath.decision import BEFORE_BALANCE  # noqa: E402
from fastpath.runtime import FastPath, redis_client  # noqa: E402
from kemi import identify, metrics, redirect, relay  # noqa: E402
from kemi.render import NDB_SERVER_NAME as NDB_SERVER  # noqa: E402
from kemi.settlement import refused_call, settle_call  # noqa: E402

RELAY, REDIRECT = "relay", "redirect"
POSTPAID = "POSTPAID"
LOAD_RETRY_SECONDS = 1.0  # while the first load of the projection fails, try again at most this often
RETRY_AFTER_SECONDS = 5  # what a 503 for a call-state outage asks the caller to wait
PENDING_MAX = 10_000  # settlements one process keeps through a cluster failover; past it they are the reaper's
PENDING_RETRY_SECONDS = 0.5  # how often a process tries its kept settlements again (at its next entry)
PLENTY = 1 << 62  # the `available` a decision is made with: the admission grants against the real one
NDB_REPLY = "tollgate"  # the ndb_redis reply container of the scripts run through it
NDB_REPLY_VALUE = f"$redis({NDB_REPLY}=>value)"
DLG_ANSWER = "tollgate_answer"  # dialog variable: "seconds.micros" of the 200 OK (kamailio.cfg dialog:start)
DLG_CODE = "tollgate_code"  # dialog variable: the final failure's code (kamailio.cfg failure_route, ksr_failover)
DLG_REASON = "tollgate_reason"  # dialog variable: its reason phrase
DLG_STAGE = "tollgate_stage"  # dialog variable: "relay" when the switch could not send the INVITE
# ksr_settle's kinds (kamailio.cfg's event routes) -> how an answered call ended
ENDED_BY = {"end": events.HANGUP, "expired": events.DURATION_LIMIT}
PASSES = {"pass_diversion": "d", "pass_privacy": "p", "pass_history_info": "h"}
# RFC 3261 Call-ID characters (no space, no control character), bounded: it is a Redis field and a C string.
CALL_ID = re.compile(r"[!-~]{1,255}")


class Settings:
    def __init__(self) -> None:
        self.redis_url = _define("TOLLGATE_REDIS_URL")
        self.namespace = _define("TOLLGATE_NAMESPACE")
        self.image_dir = _define("TOLLGATE_IMAGE_DIR")
        self.mode = _define("TOLLGATE_MODE")
        self.node = _define("TOLLGATE_NODE")
        self.metrics = _define("TOLLGATE_METRICS")  # "on" / "off": kamailio.cfg declares xhttp_prom's metrics


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
    return _printable(f"{type(exc).__name__}: {exc}")


def _printable(text: str) -> str:
    """Text fit for Kamailio's log and C strings: control characters (NUL, newlines) become '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _log_fault(name: str, exc: BaseException) -> None:
    KSR.err(f"tollgate: {name} failed: {_one_line(exc)} [call-id {_printable(KSR.kx.get_callid() or '')}]\n")


def guarded(entry):
    """A request entry: any exception logs one line and answers 500 (an escaped exception would leave the
    request unanswered, and the caller retransmitting)."""

    def run(self, msg, *args):
        try:
            entry(self, msg, *args)
        except Exception as exc:
            _log_fault(entry.__name__, exc)
            KSR.sl.send_reply(500, "Server Internal Error")
        return 1

    run.__name__ = entry.__name__
    return run


def guarded_event(entry):
    """An event entry (failure route, dialog events): any exception logs one line (no request to answer)."""

    def run(self, msg, *args):
        try:
            entry(self, msg, *args)
        except Exception as exc:
            _log_fault(entry.__name__, exc)
        return 1

    run.__name__ = entry.__name__
    return run


def mod_init():
    logging.basicConfig(level=logging.INFO, handlers=[KamailioLogHandler()], force=True)
    settings = Settings()
    if settings.mode not in (RELAY, REDIRECT):
        KSR.err(f"tollgate: TOLLGATE_MODE {settings.mode!r}: expected 'relay' or 'redirect'\n")
        return None
    return Tollgate(settings)


@dataclass(frozen=True)
class PendingSettlement:
    """A call's settlement as ksr_settle computed it at the call's end: run later, it bills the same."""

    account: str
    call_id: str
    cost: int
    event: events.CallEvent

    def run(self, state: CallState) -> bool:
        return state.settle(self.account, self.call_id, self.cost, self.event)


class Tollgate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.relay = settings.mode == RELAY
        self.metrics = metrics.for_setting(settings.metrics)
        self._reported_sync = 0.0  # the FastPath.synced_at last put in the projection gauges
        self.fast: FastPath | None = None
        self.state: CallState | None = None
        self.pid = 0
        self.loaded = False
        self.next_load = 0.0
        self._trunks = None  # the world.trunks the node's topology-hiding table was built from
        # Settlements that met a Redis Cluster failing over, kept by this process; None on a single Redis,
        # where a settlement that fails is the reaper's (README "Redis Cluster").
        self.pending: list[PendingSettlement] | None = [] if is_cluster(settings.redis_url) else None
        self.next_retry = 0.0

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
        self.state = CallState(client, s.namespace)
        self.pid = os.getpid()
        self.loaded = False
        self.next_load = 0.0
        self._load()

    def _load(self) -> None:
        """The first full read of the projection; retried (quietly) until it succeeds once."""
        now = time.monotonic()
        if now < self.next_load:
            return
        failed_before = self.next_load > 0
        try:
            self.fast.load()
            self.state.load_scripts()  # for ndb_redis's EVALSHA
        except Exception as exc:
            self.next_load = now + LOAD_RETRY_SECONDS
            if not failed_before:
                KSR.err(f"tollgate: projection not loaded yet, retrying every {LOAD_RETRY_SECONDS:g} s: "
                        f"{_one_line(exc)}\n")
            return
        self.loaded = True
        KSR.htable.sht_seti("tgnode", "loaded", 1)  # kamailio.cfg's keepalive: this node can route
        self._sync_topology_hiding()
        self._report_projection()
        if failed_before:
            KSR.warn("tollgate: projection loaded\n")

    def _fast(self) -> FastPath | None:
        """This process's fast path, following the projection, or None while it has never been loaded."""
        if self.pid != os.getpid():  # a process that child_init did not prepare
            self._open()
        if self.pending:
            self._retry_pending()
        if self.loaded:
            if self.fast.refresh():
                self._sync_topology_hiding()
            self._report_projection()
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

    def _report_projection(self) -> None:
        """The projection gauges, only when this worker looked at Redis since it last reported (a poll is due at
        most every 0.25 s): a call in between pays one comparison, not two KSR calls."""
        fast = self.fast
        if fast.synced_at != self._reported_sync:
            self._reported_sync = fast.synced_at
            self.metrics.projection(fast.version, fast.synced_at)

    def _sync_topology_hiding(self) -> None:
        """kamailio.cfg's htable tgplain := the gateways ("ip:port") of trunks with topology hiding OFF."""
        trunks = self.fast.world.trunks
        if trunks is self._trunks:
            return
        self._trunks = trunks
        KSR.htable.sht_reset("tgplain")
        for trunk in trunks.values():
            if trunk.topology_hiding == "OFF":
                for address, _transport in trunk.gateways:
                    for key in _resolved(address):
                        KSR.htable.sht_seti("tgplain", key, 1)

    # ---------------------------------------------------------------------------------------- entries
    @guarded
    def ksr_register(self, msg):
        fast = self._ready()
        if fast is None:
            return
        realm = fast.world.sip_realm
        device = identify.authenticated_device(fast, realm, register=True)
        if device is None:
            return
        account = fast.world.accounts.get(device.account)
        if account is None or not account.usable(int(time.time())):
            KSR.sl.send_reply(403, "Account disabled")
            return
        if KSR.registrar.save("location", 0) < 0:  # answers the REGISTER itself when it succeeds
            KSR.sl.sl_reply_error()

    @guarded
    def ksr_invite(self, msg):
        started = time.perf_counter()  # the decision latency: the INVITE's whole stay in Python
        try:
            self._invite()
        except Exception:
            self.metrics.call(metrics.FAILED, 500)  # (the guard answers 500)
            raise
        finally:
            self.metrics.decided(time.perf_counter() - started)

    def _invite(self) -> None:
        if not CALL_ID.fullmatch(KSR.kx.get_callid() or ""):
            self._refuse(400, "Bad Call-ID", "request")
            return
        fast = self._ready()
        if fast is None:
            self.metrics.call(metrics.FAILED, 503)
            return
        dialled = identify.dialled_number()
        if dialled is None:
            self._refuse(484, "Address Incomplete", "number")
            return
        realm = fast.world.sip_realm
        caller = identify.caller(fast, realm, dialled, self.metrics)
        if caller is None:
            return
        self._decide_and_admit(fast, caller, realm)

    def _refuse(self, code: int, reason: str, stage: str) -> None:
        """A refusal before anyone is identified: no CDR (no account to give it to), only its metrics."""
        KSR.sl.send_reply(code, reason)
        self.metrics.refused(stage, code)

    def _decide_and_admit(self, fast: FastPath, caller: identify.Caller, realm: str) -> None:
        """SPEC §5 order: the account, then CPS and concurrent calls (Redis), then the decision's refusals,
        then the money; then relay or redirect."""
        world = fast.world
        account = world.accounts.get(caller.account)
        credit_limit = account.credit_limit if account is not None and account.account_type == POSTPAID else 0
        now = int(time.time())
        call_id = KSR.kx.get_callid()
        entropy = zlib.crc32(call_id.encode())  # picks the "random" DID / caller id of CLI pool options 1 and 2
        # Money is Redis's business (the admission computes the grant against the live balance, atomically with
        # the reservation): decide as if it were plentiful, so that the decision is never refused for money.
        decision = fast.engine.decide(caller.account, caller.caller_id, caller.dialled, PLENTY, now, entropy)
        if decision.stage == "account":  # unknown, inactive, deleted or expired: before any counting
            KSR.sl.send_reply(decision.code, decision.reason)
            self.metrics.refused(decision.stage, decision.code)
            self._record_refusal(caller, call_id, decision, (decision.code, decision.reason, decision.stage))
            return
        if decision.stage not in BEFORE_BALANCE and decision.code != 200:
            # Refused after the balance stage (no route): the real balance decides between 402 and this
            # refusal, as SPEC §8 orders (rare; an extra read, nothing reserved).
            decision = fast.engine.decide(caller.account, caller.caller_id, caller.dialled,
                                          self.state.available(caller.account, credit_limit), now, entropy)
        decided = decision.code == 200
        # A redirect server never sees the end: it checks the money but reserves nothing, counts no calls.
        grant = self._admit(caller.account, call_id, now=now, cps=account.cps,
                            max_calls=account.max_concurrent_calls if self.relay else 0,
                            credit_limit=credit_limit, terms=decision.terms,
                            max_call_seconds=world.max_call_seconds, decided=decided, reserve=self.relay,
                            node=self.settings.node)
        if grant is None:
            KSR.hdr.append_to_reply(f"Retry-After: {RETRY_AFTER_SECONDS}\r\n")
            KSR.sl.send_reply(503, "Call state unreachable")
            self.metrics.call(metrics.FAILED, 503)
            return
        refused = _refusal(grant, decision)
        if refused:
            if grant.outcome == store.RESTORING:
                KSR.hdr.append_to_reply(f"Retry-After: {RETRY_AFTER_SECONDS}\r\n")
            KSR.sl.send_reply(refused[0], refused[1])
            self.metrics.refused(refused[2], refused[0])
            if grant.outcome != store.DUPLICATE:  # (a reused Call-ID's call has its CDR)
                self._record_refusal(caller, call_id, decision, refused)
            return
        if not self.relay:
            code, stage = redirect.answer(decision, realm)
            if stage:
                self.metrics.refused(stage, code)
            else:
                self.metrics.call(metrics.REDIRECTED, code)
            return
        plan = self._plan(world, caller, call_id, decision, grant)
        self._relay(plan, decision, realm)

    def _relay(self, plan: CallPlan, decision, realm: str) -> None:
        try:
            if decision.direction == "outbound":
                code, reason = relay.relay_outbound(self.state, plan, realm)
            else:
                callees = (decision.callee,) if decision.direction == "local" else decision.callee_devices
                code, reason = relay.relay_registered(plan, callees, realm)
        except Exception:
            try:  # release the reservation; the fault itself is logged (and answered 500) by the guard
                self._settle(plan, None, answer=None, end=time.time(), code=500, reason="Server Internal Error",
                             stage="relay", end_reason=events.FAILED, counted=False)  # (ksr_invite counts it)
            except Exception as exc:
                KSR.err(f"tollgate: releasing {plan.call_id} failed too: {_one_line(exc)}\n")
            raise
        if code:  # not relayed: the call ends here, and its reservation is released
            # No route (SPEC §8) or no registered callee: refused; a local send failure: the relay failed.
            refused = (code, reason) != RELAY_FAILED
            stage = "route" if refused else "relay"
            # The reply is stateful once t_relay made a transaction: the dialog, if any, fails with it and
            # dialog:failed settles the call there and then, from these (the settlement below is then a repeat).
            for name, value in ((DLG_CODE, str(code)), (DLG_REASON, reason), (DLG_STAGE, stage)):
                KSR.dialog.var_sets(name, value)
            KSR.sl.send_reply(code, reason)
            self._settle(plan, None, answer=None, end=time.time(), code=code, reason=reason, stage=stage,
                         end_reason=events.REFUSED if refused else events.FAILED)

    @guarded_event
    def ksr_failover(self, msg):
        answer = relay.failover(self._state(), self._fast().world.sip_realm)
        if answer is not None:  # no gateway left: this answer, and the CDR says so (set first: the reply
            KSR.dialog.var_sets(DLG_CODE, str(answer[0]))  # ends the dialog, and dialog:failed settles it)
            KSR.dialog.var_sets(DLG_REASON, answer[1])
            KSR.tm.t_reply(*answer)

    @guarded_event
    def ksr_settle(self, msg, kind: str = "end"):
        """dialog:end (a BYE), tm:local-request "expired" (our BYEs at the granted duration), dialog:failed
        (never answered): the call's money and event, once per call id."""
        encoded = KSR.dialog.var_get(relay.DLG_PLAN)
        if not encoded:  # not one of ours
            return
        self._state()
        plan = CallPlan.decode(encoded)
        at = Position.decode(KSR.dialog.var_get(relay.DLG_AT) or "")
        answered = KSR.dialog.var_get(DLG_ANSWER) or ""
        if kind != "failed" and answered:
            self._settle(plan, at, answer=float(answered), end=time.time(), code=200, reason="OK",
                         end_reason=ENDED_BY.get(kind, events.HANGUP))
        else:
            code = KSR.dialog.var_get(DLG_CODE) or ""
            self._settle(plan, at, answer=None, end=time.time(), code=int(code or 0),
                         reason=KSR.dialog.var_get(DLG_REASON) or "", stage=KSR.dialog.var_get(DLG_STAGE) or "",
                         end_reason=events.FAILED)

    @guarded_event
    def ksr_mark_answered(self, msg):
        """kamailio.cfg's answer mark could not run its script (Redis restarted without it): through redis-py,
        which loads it again."""
        encoded = KSR.dialog.var_get(relay.DLG_PLAN)
        if encoded:
            plan = CallPlan.decode(encoded)
            route = KSR.dialog.var_get(relay.DLG_ROUTE) or "-"
            answered = float(KSR.dialog.var_get(DLG_ANSWER) or time.time())
            self._state().mark_answered(plan.account, plan.call_id, answered,
                                        None if route == "-" else store.Route.decode(route))

    # ---------------------------------------------------------------------------------------- helpers
    def _state(self) -> CallState:
        """The call state, ready in this process (event routes may run in processes child_init did not
        prepare, such as the timer process that ends expired dialogs)."""
        if self.pid != os.getpid():
            self._open()
        if self.pending:
            self._retry_pending()
        return self.state

    def _admit(self, account: str, call_id: str, **admission) -> store.Grant | None:
        """CallState.admit_call through Kamailio's ndb_redis (one round trip without Python's socket and
        protocol code); through redis-py when the command cannot be formatted or ndb_redis fails (Redis
        restarted without the script: redis-py loads it again). None when Redis is unreachable."""
        command = self.state.admit_call_command(account, **admission)
        started = time.perf_counter()
        try:
            return self._admit_through_redis(command, account, call_id, admission)
        finally:
            self.metrics.admitted(time.perf_counter() - started)

    def _admit_through_redis(self, command: str | None, account: str, call_id: str,
                             admission: dict) -> store.Grant | None:
        if command is not None and KSR.ndb_redis.redis_cmd_p1(NDB_SERVER, command, call_id, NDB_REPLY) >= 0:
            reply = KSR.pv.get(NDB_REPLY_VALUE)  # (it returns 0 on success, -1 on failure)
            if isinstance(reply, str):  # an error reply (NOSCRIPT) is no string
                return store.grant_from_reply(reply)
        try:
            return self.state.admit_call(account, call_id, **admission)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            KSR.err(f"tollgate: call state unreachable, answering 503: {_one_line(exc)}\n")
            return None

    def _record_refusal(self, caller: identify.Caller, call_id: str, decision,
                        answer: tuple[int, str, str]) -> None:
        """A refused call's CDR (SPEC §9), appended to the account's stream after the answer went out (through
        ndb_redis; redis-py as the fallback): built only for a refusal, so admitted calls pay nothing for it.
        Lost only while Redis is unreachable (the caller got 503 for that anyway)."""
        event = refused_call(call_id, caller.account, decision, received=(caller.caller_id, caller.dialled),
                             at=time.time(), answer=answer)
        command = self.state.record_refusal_command(caller.account)
        if command is None or KSR.ndb_redis.redis_cmd_p1(NDB_SERVER, command, event.encode(), NDB_REPLY) < 0:
            try:
                self.state.record_refusal(caller.account, event)
            except redis.RedisError as exc:
                KSR.err(f"tollgate: refused call {call_id} not recorded: {_one_line(exc)}\n")

    def _plan(self, world, caller: identify.Caller, call_id: str, decision, grant: store.Grant) -> CallPlan:
        """Everything the failure route and the settlement need, fixed at admission."""
        routes = []
        for route in decision.routes:
            trunk = world.trunks.get(route.trunk)
            routes.append(RoutePlan(
                route.trunk, route.provider, tuple(route.gateways), route.destination, route.caller_id, route.prefix,
                route.rate_per_min, tuple(route.terms), route.max_concurrent_calls, route.cps,
                trunk.pdd_seconds if trunk else 8, _passes(trunk), trunk is None or trunk.topology_hiding != "OFF"))
        return CallPlan(
            call_id, caller.account, decision.direction, caller.caller_id, decision.caller_id, caller.dialled,
            decision.destination, decision.rate_group, decision.prefix, decision.rate_per_min,
            tuple(decision.terms), grant.granted, grant.reserve, time.time(), decision.record, tuple(routes))

    def _settle(self, plan: CallPlan, at: Position | None, *, answer: float | None, end: float, code: int,
                reason: str, end_reason: str, stage: str = "", counted: bool = True) -> None:
        """The call's money and event, once per call id (the script is idempotent): the customer debited
        cost(billable) under the plan's terms; the event carries the provider's termination cost, which the
        ledger credits (one atomic step decides both)."""
        settled = settle_call(plan, at, answer=answer, end=end, code=code, reason=reason, end_reason=end_reason,
                              stage=stage)
        state = self.state
        if settled.route is not None:
            self._release_trunk(plan, at.route)
        encoded = settled.event.encode()
        account, call_id = plan.account, plan.call_id
        first = _ndb_int(state.settle_command(account, settled.customer_cost), call_id, encoded)
        if first is None:  # (see _admit: the same fallback)
            pending = PendingSettlement(account, call_id, settled.customer_cost, settled.event)
            first = self._settle_now(pending) if self.pending is not None else pending.run(state)
        if not first:
            KSR.info(f"tollgate: call {call_id} already settled\n")
        elif counted:
            self._count_end(answer is not None, code, stage)

    def _count_end(self, answered: bool, code: int, stage: str) -> None:
        """A relayed (or relay-refused) call's outcome, counted once: at its first settlement."""
        if answered:
            self.metrics.call(metrics.ANSWERED, code)
        elif stage == "route":  # no route or no registered callee, found while relaying
            self.metrics.refused(stage, code)
        elif stage == "relay":  # the switch could not send it
            self.metrics.call(metrics.FAILED, code)
        else:
            self.metrics.call(metrics.UNANSWERED, code)

    def _release_trunk(self, plan: CallPlan, route_index: int) -> None:
        """The trunk channel the call held; on a cluster failing over, left to the reaper (it frees a seat at
        its hold-until time), so that the settlement itself is not lost with it."""
        try:
            relay.release_trunk(self.state, plan, route_index)
        except redis.RedisError as exc:
            if self.pending is None:
                raise
            KSR.warn(f"tollgate: call {plan.call_id}'s trunk channel is freed by the reaper: {_one_line(exc)}\n")

    def _settle_now(self, pending: PendingSettlement) -> bool:
        """On a Redis Cluster: the settlement, or, while its master is failing over (no node serves the
        account's slot yet), kept to be tried again by this process (True: not a repeat as far as we know)."""
        try:
            return pending.run(self.state)
        except redis.RedisError as exc:
            if len(self.pending) >= PENDING_MAX:
                raise
            KSR.warn(f"tollgate: call {pending.call_id} settles once Redis answers: {_one_line(exc)}\n")
            self.pending.append(pending)
            return True

    def _retry_pending(self) -> None:
        """The settlements kept while a cluster master failed over, tried again at most every
        PENDING_RETRY_SECONDS from this process's next entries; once each (the script is idempotent)."""
        if not self.pending or time.monotonic() < self.next_retry:
            return
        self.next_retry = time.monotonic() + PENDING_RETRY_SECONDS
        while self.pending:
            try:
                self.pending[0].run(self.state)
            except redis.RedisError:
                return
            KSR.info(f"tollgate: call {self.pending.pop(0).call_id} settled after the failover\n")


def _refusal(grant: store.Grant, decision) -> tuple[int, str, str] | None:
    """The answer for a call that cannot go ahead and the check that refused it, in SPEC §8 order; None when
    it goes ahead."""
    if grant.outcome == store.DUPLICATE:  # a new INVITE reusing a call's Call-ID: never a second (free) call
        return 400, "Call-ID already used", "call_id"
    if grant.outcome in _ADMISSION_REFUSALS:  # CPS, concurrency; money and restoring (only for decided calls)
        return _ADMISSION_REFUSALS[grant.outcome]
    if decision.code != 200:
        return decision.code, decision.reason, decision.stage
    return None


# store outcome -> (code, reason, stage): the one table of the admission's refusals
_ADMISSION_REFUSALS = {store.outcome_of(code): answer for code, answer in events.REFUSALS.items()}


def _passes(trunk) -> str:
    """The PASS_* letters of the identity headers a trunk lets through."""
    return "".join(letter for field, letter in PASSES.items() if trunk is not None and getattr(trunk, field))


def _resolved(address: str) -> list[str]:
    """"host:port" -> ["ip:port", ...] as Kamailio's $sndto shows them (a name resolved once, here)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_UDP)
    except (OSError, ValueError):
        return []
    return sorted({f"{info[4][0]}:{port}" for info in infos})


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


# ---------------------------------------------------------------------------------------------- app_python3s
# Kamailio >= 5.7 also offers app_python3s, which calls module-level functions (app_python3s_exec("name" [,
# param])) with the param only, instead of the methods of mod_init()'s object with the message first. Every
# ksr_* method therefore also exists as a module-level function delegating to one handler per process, so the
# same script runs under both modules. kamailio.cfg names ksr_script_init and ksr_child_init as its
# script_init / script_child_init: the handler is made before the fork and each worker opens its own Redis
# and loads the projection at start, as under app_python3.
_handler = None


def _the_handler():
    global _handler
    if _handler is None:
        _handler = mod_init()
    return _handler


def ksr_script_init() -> None:
    """app_python3s's script_init: in the main process, before the workers are forked (app_python3: mod_init)."""
    _the_handler()


def ksr_child_init(rank: int) -> int:
    """app_python3s's script_child_init: in every process after the fork (app_python3: the object's child_init)."""
    handler = _the_handler()
    return handler.child_init(rank) if handler is not None else 0


def _module_level(name: str):
    def entry(*params):
        return getattr(_the_handler(), name)(None, *params)

    entry.__name__ = name
    return entry


for _name in [name for name in vars(Tollgate) if name.startswith("ksr_")]:
    globals()[_name] = _module_level(_name)
