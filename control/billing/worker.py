"""The money's background work, one thread per control service: a loop of jobs, in this order, every
`interval` seconds and at once when a payment is posted (NOTIFY):

1. keep the live state: restore Redis's money from PostgreSQL when it lost it, and new accounts as they come
   (control/billing/restore.py) - first, so that nothing below meets an unrestored account;
2. push posted payments into the live balances (control/billing/payments.py push_pending);
3. reap orphaned calls (control/billing/reaper.py);
4. record settled calls as CDRs and ledger entries (control/billing/ledger.py);
5. make the invoices that are due, at most hourly (control/billing/invoices.py generate_due).

Each job uses a connection of the service's pool. A failing store (PostgreSQL or Redis down) is logged once
per outage; the loop goes on trying, and nothing waiting in Redis is lost meanwhile.

With several control services on one database, only the leader runs the rounds (control/leader.py); the
others wait, and the one that takes over invoices at its first round (the old leader may have died before
its hourly run).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import redis
from psycopg_pool import ConnectionPool

from callstate.connection import connect
from callstate.store import CallState
from control.billing import invoices
from control.billing.ledger import Ledger
from control.billing.payments import PAYMENTS_CHANNEL, push_pending
from control.billing.reaper import Reaper
from control.billing.restore import SETTLE_SECONDS, LiveState
from control.leader import Leadership, NotLeader
from control.metrics import ControlMetrics

log = logging.getLogger("tollgate.billing")
INVOICE_INTERVAL_SECONDS = 3600  # billing days pass at local midnights: hourly is soon enough for every zone


@dataclass(frozen=True)
class Tick:
    """What one round of the loop did."""

    restored: int = 0
    pushed: int = 0
    reaped: int = 0
    recorded: int = 0
    invoiced: int = 0


@dataclass(frozen=True)
class Settings:
    interval_seconds: float = 1.0
    # An open call whose end its (live) node lost is settled this long after its grant ran out (answered) or
    # after the longest ring time (max_ring_seconds, >= Kamailio's fr_inv_timer) when never answered.
    reap_grace_seconds: int = 300
    max_ring_seconds: int = 120
    # A Kamailio node silent this long is dead: its calls are settled up to its last heartbeat.
    node_dead_seconds: int = 60
    # After Redis lost its state, the restore waits this long (control/billing/restore.py SETTLE_SECONDS).
    restore_settle_seconds: float = SETTLE_SECONDS


class BillingWorker:
    def __init__(self, pool: ConnectionPool, dsn: str, redis_url: str, namespace: str, settings: Settings,
                 metrics: ControlMetrics | None = None, leadership: Leadership | None = None):
        self._pool = pool
        self._metrics = metrics
        self._leadership = leadership  # None: this worker always runs (one service, or a test's own worker)
        self._leading = False
        self._dsn = dsn  # the LISTEN connection's (a pooled one cannot wait for notifications)
        self._settings = settings
        self._redis = connect(redis_url, socket_timeout=10)
        state = CallState(self._redis, namespace)
        self.live = LiveState(state, self._redis, settings.restore_settle_seconds)
        self.reaper = Reaper(state, grace_seconds=settings.reap_grace_seconds, ring_seconds=settings.max_ring_seconds,
                             node_dead_seconds=settings.node_dead_seconds)
        self.ledger = Ledger(state, self._redis, leadership.fence if leadership else None)
        self.state = state
        self._next_invoicing = 0.0  # time.monotonic() of the next invoicing round; 0 = at the first round
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="billing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as listener:
                    listener.execute(f"LISTEN {PAYMENTS_CHANNEL}")
                    while not self._stop.is_set():
                        self._round()
                        if self._failing:
                            log.info("billing jobs recovered")
                            self._failing = False
                        # A posted payment wakes the loop at once: the switch should see the money now.
                        list(listener.notifies(timeout=self._settings.interval_seconds, stop_after=1))
            except (psycopg.Error, redis.RedisError, OSError) as exc:
                if not self._failing:  # once per outage, not once per retry
                    log.error("billing jobs cannot reach their stores (CDRs wait in Redis): %s", exc)
                self._failing = True
                self._stop.wait(self._settings.interval_seconds)

    # ------------------------------------------------------------------ one round
    def _round(self) -> None:
        """run_once() when this service leads; a round cut short by a lost lock is the new leader's to do."""
        leading = self._leadership is None or self._leadership.leading
        if leading and not self._leading:
            self._next_invoicing = 0.0
        self._leading = leading
        if not leading:
            return
        try:
            self.run_once()
        except NotLeader as exc:
            log.warning("billing round left to the new leader: %s", exc)

    def run_once(self, now: int | None = None) -> Tick:
        now = int(time.time()) if now is None else now
        with self._pool.connection() as conn:
            restored = self.live.keep(conn)
            conn.commit()
            if not self.live.ready:  # Redis lost its money and is not restored yet: nothing may build on it
                return Tick(restored)
            pushed = push_pending(conn, self.state)
            reaped = self.reaper.reap(conn, now)
            conn.commit()  # each job's reads end here: the ledger's batches are transactions, not savepoints
            recorded = self.ledger.record(conn)
        if self._metrics:
            self._metrics.cdrs.inc(recorded)
        return Tick(restored, pushed, reaped, recorded, self.invoice_if_due())

    def invoice_if_due(self) -> int:
        """At most once an hour, after the CDRs are recorded: the postpaid invoices due now. A failure is logged
        and tried again an hour later: invoicing must never stop CDRs from being recorded. Only the leader runs
        it; should an old leader that has not yet seen its lock go overlap it, the account row lock still makes
        one invoice per period (generate_due)."""
        if time.monotonic() < self._next_invoicing:
            return 0
        self._next_invoicing = time.monotonic() + INVOICE_INTERVAL_SECONDS
        try:
            with self._pool.connection() as conn:
                made = invoices.generate_due(conn, datetime.now(UTC))
        except Exception:
            log.exception("invoicing failed; trying again in %d s", INVOICE_INTERVAL_SECONDS)
            self._count_invoicing("failed", 0)
            return 0
        self._count_invoicing("ok", len(made))
        if made:
            log.info("made %d invoice(s): %s", len(made), ", ".join(r["number"] for r in made))
        return len(made)

    def _count_invoicing(self, result: str, made: int) -> None:
        if self._metrics:
            self._metrics.invoice_runs.labels(result).inc()
            self._metrics.invoices.inc(made)
