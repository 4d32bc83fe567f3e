"""The ledger: the switch's money and CDRs, from Redis into PostgreSQL (SPEC §9); one per control service.

Kamailio settles each call in Redis (callstate: the live balance debited or credited once per call
id) and appends the call's event to the stream of every account whose money moved: the customer's, and the
provider's when it earned something. This thread makes PostgreSQL follow:

- every stream entry is read through the consumer group GROUP, written in one transaction as the call's CDR
  (once per calling account and call id) and the account's ledger entry (once per account and call, moving
  accounts.balance by the same amount Redis moved), and acknowledged only after that commit. While PostgreSQL
  or this service is down, entries wait in their streams; pending ones (read, not acknowledged: a crash
  between the two) are read again first after a restart. None is lost, none is counted twice.
- payments and charges posted through the API (control/billing/payments.py, NOTIFY wakes this thread) move the live
  balance in Redis once each (Redis remembers the payment ids it applied), then are marked pushed;
- open calls that cannot still be running are reaped (CallState.reap): a node that died mid-call leaves its
  reservations and its concurrent-call slots behind, which would block the account for good.

Streams are found by SCAN. Entries stay in their stream RETENTION_SECONDS after they were written.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import psycopg
import redis

from callstate.events import decode_event, provider_settlement_id
from callstate.store import CallState
from control.billing import invoices
from control.billing.payments import PAYMENTS_CHANNEL

log = logging.getLogger("tollgate.ledger")

GROUP = "ledger"
READ_COUNT = 500  # entries per stream per read
STREAMS_PER_READ = 200  # streams per XREADGROUP (its key list)
# Reap a call this long after it must have ended: its granted seconds counted from its answer, or the longest
# ring time (Kamailio's fr_inv_timer, kemi/render.py: 120 s) from its admission when it was never answered.
REAP_GRACE_SECONDS = 300
MAX_RING_SECONDS = 120
RETENTION_SECONDS = 7 * 86_400
INVOICE_INTERVAL_SECONDS = 3600  # billing days pass at local midnights: hourly is soon enough for every zone

_TEXT = ("direction", "caller_id_received", "caller_id_presented", "destination_dialled", "destination_sent",
         "rate_group", "prefix", "trunk", "provider", "gateway", "end_reason")
_INT = ("rate_per_min", "billable_seconds", "sip_code", "customer_cost", "provider_cost")
_TIME = ("setup_time", "answer_time", "end_time")
_INSERT_CDR = (
    "INSERT INTO cdrs (call_id, account_number, recorded, " + ", ".join(_TEXT + _INT + _TIME) + ") VALUES ("
    + ", ".join(["%s"] * (3 + len(_TEXT) + len(_INT) + len(_TIME)))
    + ") ON CONFLICT (account_number, call_id) DO NOTHING"
)


class Ledger:
    def __init__(self, dsn: str, redis_url: str, namespace: str, interval_seconds: float = 1.0,
                 reap_grace_seconds: int = REAP_GRACE_SECONDS, max_ring_seconds: int = MAX_RING_SECONDS):
        self._dsn = dsn
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=10)
        self._admissions = CallState(self._redis, namespace)
        self._namespace = namespace
        self._interval = interval_seconds
        self._reap_grace = reap_grace_seconds
        self._max_ring = max_ring_seconds
        # Stable across restarts, so that a restarted service finds its own pending entries (read "0").
        self._consumer = socket.gethostname()
        self._grouped: set[str] = set()  # streams known to have the consumer group
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
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
                        self.run_once()
                        if self._failing:
                            log.info("ledger recovered")
                            self._failing = False
                        # A posted payment wakes the ledger at once: the switch should see the money now.
                        list(listener.notifies(timeout=self._interval, stop_after=1))
            except (psycopg.Error, redis.RedisError, OSError) as exc:
                if not self._failing:  # once per outage, not once per retry
                    log.error("ledger cannot reach its stores (CDRs wait in Redis): %s", exc)
                self._failing = True
                self._stop.wait(self._interval)

    # ------------------------------------------------------------------ work
    def run_once(self, now: int | None = None) -> tuple[int, int]:
        """Push payments, reap, then record every waiting entry; (calls reaped, entries recorded)."""
        self.push_payments()
        reaped = self.reap(int(time.time()) if now is None else now)
        recorded = self.record()
        self.invoice_if_due()
        return reaped, recorded

    _next_invoicing = 0.0  # time.monotonic() of the next invoicing run; 0 = at the first run

    def invoice_if_due(self) -> int:
        """At most once an hour, after the CDRs are recorded: the postpaid invoices due now
        (control/billing/invoices.py; several control services may do this at once, the account row lock makes
        one invoice). A failure is logged and tried again an hour later: invoicing must never stop CDRs from
        being recorded."""
        if time.monotonic() < self._next_invoicing:
            return 0
        self._next_invoicing = time.monotonic() + INVOICE_INTERVAL_SECONDS
        try:
            with psycopg.connect(self._dsn) as conn:
                made = invoices.generate_due(conn, datetime.now(UTC))
        except Exception:
            log.exception("invoicing failed; trying again in %d s", INVOICE_INTERVAL_SECONDS)
            return 0
        if made:
            log.info("made %d invoice(s): %s", len(made), ", ".join(r["number"] for r in made))
        return len(made)

    def push_payments(self) -> int:
        """Every payment PostgreSQL has and Redis may not: applied there once (Redis remembers the ids), then
        marked pushed. A crash in between only applies nothing the next time."""
        pushed = 0
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while rows := conn.execute("SELECT id, account_number, amount FROM payments WHERE pushed_at IS NULL "
                                       "ORDER BY id LIMIT 500").fetchall():
                for payment_id, account, amount in rows:
                    self._admissions.apply_payment(account, payment_id, amount)
                conn.execute("UPDATE payments SET pushed_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],))
                pushed += len(rows)
        return pushed

    def reap(self, now: int) -> int:
        freed = self._admissions.reap_trunks(now)
        if freed:
            log.warning("freed %d trunk channel(s) held by calls their node lost", freed)
        count = 0
        for account in list(self._admissions.accounts_with_open_calls()):
            for call_id in self._admissions.reap(account, now=now, grace_seconds=self._reap_grace,
                                                 ring_seconds=self._max_ring):
                log.warning("reaped orphaned call %s of account %s (its node lost it)", call_id, account)
                count += 1
        return count

    def record(self) -> int:
        """Every entry not yet recorded: pending ones (a previous run's crash) first, then new ones."""
        streams = list(self._streams())
        for stream in streams:
            self._ensure_group(stream)
        recorded = 0
        with psycopg.connect(self._dsn) as conn:
            for chunk in _chunks(streams, STREAMS_PER_READ):
                for start in ("0", ">"):  # "0": this consumer's pending entries; ">": never delivered ones
                    while True:
                        replies = self._redis.xreadgroup(GROUP, self._consumer, dict.fromkeys(chunk, start),
                                                         count=READ_COUNT)
                        entries = [(s, e) for s, batch in replies for e in batch]
                        if not entries:
                            break
                        recorded += self._write(conn, entries)
                        if start == "0":  # pending entries are finite: one pass reads them all
                            break
        return recorded

    def _write(self, conn: psycopg.Connection, entries: list[tuple[bytes, tuple[bytes, dict]]]) -> int:
        """One transaction for a batch, then XACK: a crash in between only re-reads the batch."""
        with conn.transaction():
            for stream, (_entry_id, fields) in entries:
                if not fields:  # pending, but deleted from the stream meanwhile: nothing left to record
                    continue
                _record_entry(conn, self._account_of(stream), decode_event(fields))
        by_stream: dict[bytes, list[bytes]] = {}
        for stream, (entry_id, _fields) in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        pipe = self._redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, GROUP, *ids)
            # Acknowledged entries stay RETENTION_SECONDS (a replay buffer), then go.
            pipe.xtrim(stream, minid=f"{int((time.time() - RETENTION_SECONDS) * 1000)}-0", approximate=True)
        pipe.execute()
        return len(entries)

    def _streams(self) -> Iterator[bytes]:
        yield from self._redis.scan_iter(match=f"{self._namespace}:{{a:*}}:events", count=1000, _type="stream")

    def _ensure_group(self, stream: bytes) -> None:
        if stream in self._grouped:
            return
        try:
            self._redis.xgroup_create(stream, GROUP, id="0")
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(stream)

    def _account_of(self, stream: bytes) -> str:
        key = stream.decode()
        return key[len(f"{self._namespace}:{{a:"):-len("}:events")]


def _record_entry(conn: psycopg.Connection, account: str, event: dict[str, str]) -> None:
    """The call's CDR (once per call id) and this account's ledger entry (once per account and call): the
    customer's stream carries its debit, a provider's its credit (SPEC §9)."""
    call_id = event["call_id"]
    customer = event.get("account", account)
    conn.execute(_INSERT_CDR, (
        call_id, customer, event.get("record") == "yes",
        *(event.get(name, "") for name in _TEXT),
        *(int(event.get(name) or 0) for name in _INT),
        *(_timestamp(event.get(name, "")) for name in _TIME),
    ))
    if account == customer:
        amount, entry_id = -int(event.get("customer_cost") or 0), call_id
    else:
        amount, entry_id = int(event.get("provider_cost") or 0), provider_settlement_id(customer, call_id)
    inserted = conn.execute(
        "INSERT INTO ledger_entries (account_number, call_id, amount) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING 1", (account, entry_id, amount)).fetchone()
    if inserted and amount:
        conn.execute("UPDATE accounts SET balance = balance + %s WHERE account_number = %s", (amount, account))


def _timestamp(value: str) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
