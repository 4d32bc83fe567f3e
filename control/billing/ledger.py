"""The ledger: the switch's calls become CDRs and balance moves in PostgreSQL (SPEC §9).

Kamailio settles each call in Redis with one atomic script (callstate/lua/settle.lua): the customer's live
balance debited, the call's event - its costs, the customer's and the provider's - appended to the
customer's stream; a refused call's event is appended by the admission that refused it. This job reads every
stream through the consumer group GROUP and writes a batch of events in one transaction: their CDRs (one per
calling account and call id), the customers' debits and the providers' credits as ledger entries (once per
account and call, moving accounts.balance); then it credits the providers' live balances in Redis (once per
customer and call id, callstate/lua/credit_provider.lua), and only then acknowledges and trims the entries.
While PostgreSQL or this service is down, entries wait in their streams; pending ones (read, not acknowledged:
a crash in between) are read again first after a restart. None is lost, none is counted twice.

Several control services share the streams (README "Scaling out"): the leader records (control/leader.py),
as the one consumer CONSUMER, so that a new leader reads the pending entries of the one that died as its own;
each batch commits only while the leader lock is held (`fence`); and a stream is trimmed only below its
oldest pending entry, so that entries another reader holds are never deleted under it, even in the moment two
services both believe they lead.

A batch goes to PostgreSQL set-wise (COPY into a staging table, then one statement per target), so that the
ledger keeps up with a switch refusing thousands of calls a second (bench/bench_ledger.py). A Call-ID the
caller retries after a refusal is one call: its CDR says how the last attempt ended (a refusal's CDR gives way
to a later one; a relayed call's never does). An entry that cannot be read as an event is kept in
rejected_events, never dropped silently and never blocking the entries after it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import psycopg
import redis

from callstate import dialogs
from callstate.connection import AnyRedis, per_slot
from callstate.events import REFUSED, CallEvent, provider_settlement_id
from callstate.keys import EVENTS
from callstate.store import CallState

log = logging.getLogger("tollgate.ledger")

GROUP = "ledger"
# One consumer name for every control service (it was the host's name): only the leader reads, and a new
# leader must find the entries its predecessor read and did not acknowledge among its own pending ones.
CONSUMER = "ledger"
READ_COUNT = 500  # entries per stream per read
STREAMS_PER_READ = 200  # streams per XREADGROUP (its key list)

# The CDR columns, in CallEvent's order; `recorded` is CallEvent.record.
_CDR_COLUMNS = ("call_id", "account_number", "direction", "caller_id_received", "caller_id_presented",
                "destination_dialled", "destination_sent", "rate_group", "prefix", "rate_per_min", "trunk",
                "provider", "gateway", "setup_time", "answer_time", "end_time", "billable_seconds", "sip_code",
                "sip_reason", "stage", "end_reason", "customer_cost", "provider_cost", "recorded")
_STAGING = "ledger_batch"
_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (seq integer, provider_entry text, "
    f"LIKE cdrs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {_STAGING} (seq, provider_entry, {', '.join(_CDR_COLUMNS)}) FROM STDIN"
_CDR_LIST = ", ".join(_CDR_COLUMNS)
# One CDR per account and call id: of a batch's events for one, a relayed call's over a refusal, then the
# latest; an existing refusal's CDR gives way to a later event (and leaves the invoice it was on, if any).
_UPSERT_CDRS = f"""
INSERT INTO cdrs ({_CDR_LIST})
SELECT DISTINCT ON (account_number, call_id) {_CDR_LIST} FROM {_STAGING}
ORDER BY account_number, call_id, end_reason = '{REFUSED}', seq DESC
ON CONFLICT (account_number, call_id) DO UPDATE
SET ({_CDR_LIST}, invoice_id, recorded_at) = ROW({', '.join('EXCLUDED.' + c for c in _CDR_COLUMNS)}, NULL, now())
WHERE cdrs.end_reason = '{REFUSED}'
  AND coalesce(cdrs.end_time, '-infinity') <= coalesce(EXCLUDED.end_time, 'infinity')
"""
# The customers' debits and the providers' credits, once per account and call; the balances they move.
_POST_ENTRIES = f"""
WITH moved AS (
    INSERT INTO ledger_entries (account_number, call_id, amount)
    SELECT account_number, call_id, -customer_cost FROM {_STAGING}
     WHERE end_reason <> '{REFUSED}' AND customer_cost <> 0
    UNION ALL
    SELECT provider, provider_entry, provider_cost FROM {_STAGING}
     WHERE end_reason <> '{REFUSED}' AND provider <> '' AND provider_cost <> 0
    ON CONFLICT DO NOTHING
    RETURNING account_number, amount
)
UPDATE accounts a SET balance = a.balance + m.total
FROM (SELECT account_number, sum(amount) AS total FROM moved GROUP BY account_number) m
WHERE a.account_number = m.account_number
"""


class Ledger:
    """Records every settled call's event as its CDR and the ledger entries of the accounts whose money it
    moved, once, then acknowledges it (a job of control/billing/worker.py)."""

    def __init__(self, state: CallState, client: AnyRedis,
                 fence: Callable[[psycopg.Connection], None] | None = None):
        self._state = state
        self._redis = client
        self._consumer = CONSUMER
        self._fence = fence  # raises inside a batch's transaction when this service no longer leads
        self._grouped: set[bytes] = set()  # streams known to have the consumer group
        self._adopted = False  # pending entries of other consumer names taken over (once per process)

    def record(self, conn: psycopg.Connection) -> int:
        """Every entry not yet recorded: pending ones (a previous run's crash) first, then new ones."""
        streams = list(self._streams())
        for stream in streams:
            self._ensure_group(stream)
        if not self._adopted:
            self._adopt(streams)
            self._adopted = True
        recorded = 0
        for chunk in _chunks(streams, STREAMS_PER_READ):
            for start in ("0", ">"):  # "0": this consumer's pending entries; ">": never delivered ones
                while True:
                    replies = self._read(chunk, start)
                    entries = [(s, e) for s, batch in replies for e in batch]
                    if not entries:
                        break
                    recorded += self._write(conn, entries)  # (acknowledged: "0" then reads the next pending)
        return recorded

    def _read(self, streams: list[bytes], start: str) -> list:
        """XREADGROUP; a stream that lost its group (Redis restarted empty, the stream made anew by a call's
        settlement) gets it again and is read from its start."""
        try:
            return self._xreadgroup(streams, start)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("event streams lost their consumer group (Redis lost its state): creating it again")
            self._grouped.clear()
            for stream in streams:
                self._ensure_group(stream)
            return self._xreadgroup(streams, start)

    def _xreadgroup(self, streams: list[bytes], start: str) -> list:
        """One XREADGROUP over every stream on a single Redis; on a cluster one per hash slot (each account's
        stream has a slot of its own: a command naming two would be refused with CROSSSLOT), sent together in
        one pipeline, which redis-py splits by node."""
        groups = per_slot(self._redis, streams)
        if len(groups) == 1:
            return self._redis.xreadgroup(GROUP, self._consumer, dict.fromkeys(groups[0], start), count=READ_COUNT)
        pipe = self._redis.pipeline(transaction=False)
        for group in groups:
            pipe.xreadgroup(GROUP, self._consumer, dict.fromkeys(group, start), count=READ_COUNT)
        return [reply for replies in pipe.execute() for reply in replies or ()]

    def _write(self, conn: psycopg.Connection, entries: list[tuple[bytes, tuple[bytes, dict]]]) -> int:
        """One transaction for a batch; then the providers' live credits (once each); then XACK. A crash in
        between only re-reads the batch, and every step repeats as a no-op."""
        calls, rejects = [], []
        for stream, (entry_id, fields) in entries:
            if not fields:  # pending, but deleted from the stream meanwhile: nothing left to record
                continue
            try:
                calls.append(CallEvent.decode(fields))
            except (ValueError, TypeError, KeyError) as exc:
                rejects.append((stream, entry_id, fields, exc))
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            # A statement before left a transaction open: in it this batch would be a mere savepoint, committed
            # when the caller commits, while its entries are acknowledged and trimmed at once - a control
            # service killed in between lost every batch of its round. The batch commits before its XACK.
            conn.commit()
        with conn.transaction():
            if self._fence is not None:
                self._fence(conn)
            record_events(conn, calls)
            dialogs.forget(conn, self._state.keys.namespace, [c.call_id for c in calls if not c.refused])
            for stream, entry_id, fields, exc in rejects:
                _reject(conn, stream, entry_id, fields, exc)
        self._state.credit_providers([(c.provider, c.account, c.call_id, c.provider_cost) for c in calls
                                      if not c.refused and c.provider and c.provider_cost])
        last: dict[bytes, bytes] = {}
        by_stream: dict[bytes, list[bytes]] = {}
        for stream, (entry_id, _fields) in entries:
            by_stream.setdefault(stream, []).append(entry_id)
            last[stream] = max(last.get(stream, entry_id), entry_id, key=_entry_order)
        self._acknowledge(by_stream, last)
        return len(entries)

    def _acknowledge(self, by_stream: dict[bytes, list[bytes]], last: dict[bytes, bytes]) -> None:
        """XACK, then trim what is recorded: PostgreSQL holds it now, and Redis's memory is what every node
        shares (the admission's refusal backlog counts what is left). Entries before the last one recorded are
        recorded too (pending ones are read first), except those still pending: another service read them in an
        overlap of leaders and may not have written them. Entries delivered after the XPENDING below come after
        the last one recorded, so trimming before it never reaches them. Exact: approximate trimming keeps whole
        nodes of 100."""
        streams = list(by_stream)
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xack(stream, GROUP, *by_stream[stream])
            pipe.xpending(stream, GROUP)
        replies = pipe.execute()
        for stream, pending in zip(streams, replies[1::2], strict=True):
            limit = _after(last[stream])
            if pending["pending"]:
                limit = min(limit, _str(pending["min"]), key=_entry_order)
            pipe.xtrim(stream, minid=limit, approximate=False)
        pipe.execute()

    def _adopt(self, streams: list[bytes]) -> None:
        """Take over entries pending under other consumer names (the host names of versions before CONSUMER):
        read, never acknowledged, they would otherwise wait forever."""
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xpending(stream, GROUP)
        for stream, pending in zip(streams, pipe.execute(), strict=True):
            others = [c for c in pending["consumers"] if _str(c["name"]) != self._consumer]
            if not others:
                continue
            start = "0-0"
            while True:
                start, *_ = self._redis.xautoclaim(stream, GROUP, self._consumer, 0, start, count=READ_COUNT)
                if _str(start) == "0-0":
                    break
            log.info("took over the pending entries of %s in %s", [_str(c["name"]) for c in others], _str(stream))

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


def record_events(conn: psycopg.Connection, calls: list[CallEvent]) -> None:
    """The events' CDRs, the customers' debits and the providers' credits (each once per account and call),
    set-wise, inside the caller's transaction."""
    if not calls:
        return
    conn.execute(_CREATE_STAGING)
    with conn.cursor().copy(_COPY) as copy:
        for seq, call in enumerate(calls):
            copy.write_row((seq, provider_settlement_id(call.account, call.call_id), *_cdr_row(call)))
    conn.execute(_UPSERT_CDRS)
    conn.execute(_POST_ENTRIES)
    conn.execute(f"TRUNCATE {_STAGING}")  # (ON COMMIT would too; the caller's transaction may go on)


def _cdr_row(call: CallEvent) -> tuple:
    return (call.call_id, call.account, call.direction, call.caller_id_received, call.caller_id_presented,
            call.destination_dialled, call.destination_sent, call.rate_group, call.prefix, call.rate_per_min,
            call.trunk, call.provider, call.gateway, _timestamp(call.setup_time), _timestamp(call.answer_time),
            _timestamp(call.end_time), call.billable_seconds, call.sip_code, call.sip_reason, call.stage,
            call.end_reason, call.customer_cost, call.provider_cost, call.record)


def _reject(conn: psycopg.Connection, stream: bytes, entry_id: bytes, fields: dict, exc: Exception) -> None:
    """An entry no writer should have made: kept for a person to look at, once."""
    text = {_str(k): _str(v) for k, v in fields.items()}
    log.error("event %s of %s is not a call event (%s): kept in rejected_events", _str(entry_id), _str(stream), exc)
    conn.execute("INSERT INTO rejected_events (stream, entry_id, fields, error) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT DO NOTHING", (_str(stream), _str(entry_id), json.dumps(text), str(exc)[:500]))


def _str(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _entry_order(entry_id: bytes | str) -> tuple[int, int]:
    milliseconds, _, sequence = _str(entry_id).partition("-")
    return int(milliseconds), int(sequence or 0)


def _after(entry_id: bytes | str) -> str:
    """The smallest stream id after `entry_id`."""
    milliseconds, sequence = _entry_order(entry_id)
    return f"{milliseconds}-{sequence + 1}"


def _timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
