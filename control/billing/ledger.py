"""The ledger: the switch's settled calls become CDRs and balance moves in PostgreSQL (SPEC §9).

Kamailio settles each call in Redis with one atomic script (callstate/lua/settle.lua): the customer's live
balance debited, the call's event - its costs, the customer's and the provider's - appended to the
customer's stream. This job reads every stream through the consumer group GROUP and writes, in one
transaction, the call's CDR (once per calling account and call id), the customer's debit and the provider's
credit as ledger entries (once per account and call, moving accounts.balance), then credits the provider's
live balance in Redis (once per customer and call id, callstate/lua/credit_provider.lua), and only then
acknowledges. While PostgreSQL or this service is down, entries wait in their streams; pending ones (read,
not acknowledged: a crash between the two) are read again first after a restart. None is lost, none is
counted twice. Streams are found by SCAN; entries stay RETENTION_SECONDS after they were written.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import psycopg
import redis

from callstate import dialogs
from callstate.events import decode_event, provider_settlement_id
from callstate.keys import EVENTS
from callstate.store import CallState

log = logging.getLogger("tollgate.ledger")

GROUP = "ledger"
READ_COUNT = 500  # entries per stream per read
STREAMS_PER_READ = 200  # streams per XREADGROUP (its key list)
RETENTION_SECONDS = 7 * 86_400

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
    """Records every settled call's event as its CDR and the ledger entries of the accounts whose money it
    moved, once, then acknowledges it (a job of control/billing/worker.py)."""

    def __init__(self, state: CallState, client: redis.Redis):
        self._state = state
        self._redis = client
        # Stable across restarts, so that a restarted service finds its own pending entries (read "0").
        self._consumer = socket.gethostname()
        self._grouped: set[bytes] = set()  # streams known to have the consumer group

    def record(self, conn: psycopg.Connection) -> int:
        """Every entry not yet recorded: pending ones (a previous run's crash) first, then new ones."""
        streams = list(self._streams())
        for stream in streams:
            self._ensure_group(stream)
        recorded = 0
        for chunk in _chunks(streams, STREAMS_PER_READ):
            for start in ("0", ">"):  # "0": this consumer's pending entries; ">": never delivered ones
                while True:
                    replies = self._read(chunk, start)
                    entries = [(s, e) for s, batch in replies for e in batch]
                    if not entries:
                        break
                    recorded += self._write(conn, entries)
                    if start == "0":  # pending entries are finite: one pass reads them all
                        break
        return recorded

    def _read(self, streams: list[bytes], start: str) -> list:
        """XREADGROUP; a stream that lost its group (Redis restarted empty, the stream made anew by a call's
        settlement) gets it again and is read from its start."""
        try:
            return self._redis.xreadgroup(GROUP, self._consumer, dict.fromkeys(streams, start), count=READ_COUNT)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("event streams lost their consumer group (Redis lost its state): creating it again")
            self._grouped.clear()
            for stream in streams:
                self._ensure_group(stream)
            return self._redis.xreadgroup(GROUP, self._consumer, dict.fromkeys(streams, start), count=READ_COUNT)

    def _write(self, conn: psycopg.Connection, entries: list[tuple[bytes, tuple[bytes, dict]]]) -> int:
        """One transaction for a batch; then the providers' live credits (once each); then XACK. A crash in
        between only re-reads the batch, and every step repeats as a no-op."""
        credits, ended = [], []
        with conn.transaction():
            for stream, (_entry_id, fields) in entries:
                if not fields:  # pending, but deleted from the stream meanwhile: nothing left to record
                    continue
                event = decode_event(fields)
                ended.append(event["call_id"])
                credit = _record_entry(conn, self._account_of(stream), event)
                if credit is not None:
                    credits.append(credit)
            dialogs.forget(conn, self._state.keys.namespace, ended)
        for provider, customer, call_id, amount in credits:
            self._state.credit_provider(provider, customer, call_id, amount)
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
        yield from self._redis.scan_iter(match=self._state.keys.account_pattern(EVENTS), count=1000,
                                         _type="stream")

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
        return self._state.keys.account_of(stream, EVENTS)


def _record_entry(conn: psycopg.Connection, account: str, event: dict[str, str]) -> tuple | None:
    """The call's CDR (once per account and call id), the customer's debit and the provider's credit (each once
    per account and call) - both decided by the one settlement that wrote the event (SPEC §9). Returns the
    provider's live credit still to apply in Redis: (provider, customer, call id, amount), or None."""
    call_id = event["call_id"]
    customer = event.get("account", account)
    conn.execute(_INSERT_CDR, (
        call_id, customer, event.get("record") == "yes",
        *(event.get(name, "") for name in _TEXT),
        *(int(event.get(name) or 0) for name in _INT),
        *(_timestamp(event.get(name, "")) for name in _TIME),
    ))
    _ledger_entry(conn, customer, call_id, -int(event.get("customer_cost") or 0))
    provider, provider_cost = event.get("provider", ""), int(event.get("provider_cost") or 0)
    if not provider or provider_cost == 0:
        return None
    _ledger_entry(conn, provider, provider_settlement_id(customer, call_id), provider_cost)
    return provider, customer, call_id, provider_cost


def _ledger_entry(conn: psycopg.Connection, account: str, entry_id: str, amount: int) -> None:
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
