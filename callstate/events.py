"""A call's event: what its stream entry carries from the switch to the ledger, which makes it the call's CDR.

One typed definition, CallEvent, with its encoding. The KEMI script writes it at a call's end (kemi/settlement.py
settle_call, through callstate/lua/settle.lua) and when it refuses an identified call (refused_call, through
callstate/lua/record_refusal.lua); the reaper's script writes it for an orphaned call (callstate/lua/reap.lua
builds the same JSON with cjson). One reader: the ledger (control/billing/ledger.py).

A stream entry holds the field `event`: a JSON object whose values are strings (the Lua writer may give
integers: decode() takes either).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

# Why a call ended (CallEvent.end_reason).
HANGUP = "hangup"  # a BYE from either party
DURATION_LIMIT = "duration_limit"  # cut at its granted seconds (the switch's BYEs)
FAILED = "failed"  # never answered: the far end's (or the relay's) final failure
REFUSED = "refused"  # refused by a check of SPEC §8 before it was relayed: cost 0, `stage` names the check
ORPHANED = "orphaned"  # its end never came (its node died): settled by the reaper (callstate/lua/reap.lua)

# The admission script's refusals (its reply code -> SIP answer, reason, refusing check), SPEC §8: what the KEMI
# script answers and records.
REFUSALS: dict[int, tuple[int, str, str]] = {
    -1: (503, "CPS limit exceeded", "cps"),
    -2: (503, "Concurrent call limit", "concurrency"),
    -3: (402, "Insufficient balance", "balance"),
    -5: (503, "Call state being restored", "call_state"),
}


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One call's record, answered, failed or refused (SPEC §9). Times are epoch seconds; money is micros."""

    call_id: str
    account: str  # the calling customer
    direction: str = ""  # outbound | local | inbound ('' when refused before it was known)
    caller_id_received: str = ""
    caller_id_presented: str = ""
    destination_dialled: str = ""
    destination_sent: str = ""
    rate_group: str = ""
    prefix: str = ""
    rate_per_min: int = 0
    trunk: str = ""
    provider: str = ""
    gateway: str = ""
    setup_time: float | None = None
    answer_time: float | None = None
    end_time: float | None = None
    billable_seconds: int = 0
    sip_code: int = 0  # the final answer the caller got (200 when answered)
    sip_reason: str = ""  # its reason phrase
    stage: str = ""  # the check that refused the call (fastpath.decision.STAGES, REFUSALS); '' when relayed
    end_reason: str = ""  # HANGUP, DURATION_LIMIT, FAILED, REFUSED or ORPHANED
    customer_cost: int = 0
    provider_cost: int = 0
    record: bool = False  # marked for the media recorder

    @property
    def refused(self) -> bool:
        return self.end_reason == REFUSED

    def encode(self) -> str:
        """The `event` field: compact JSON, every value a string (times to the millisecond, '' for none)."""
        return json.dumps({name: _text(getattr(self, name)) for name in _NAMES}, separators=(",", ":"))

    @classmethod
    def decode(cls, fields: dict[bytes, bytes] | dict[str, str]) -> CallEvent:
        """The event of a stream entry, whoever wrote it. Unknown names are ignored (a newer writer's) and
        missing ones take their defaults."""
        raw = fields.get(b"event", fields.get("event")) if fields else None
        if raw is None:
            raise ValueError(f"stream entry without an event field: {sorted(fields or {})}")
        values = json.loads(raw)
        return cls(**{name: _PARSERS[name](values[name]) for name in _NAMES if name in values})

    @staticmethod
    def unknown_names(fields: dict[bytes, bytes] | dict[str, str]) -> set[str]:
        """The names of a stream entry's event that CallEvent does not know (the writers' contract test)."""
        raw = fields.get(b"event", fields.get("event"))
        return set(json.loads(raw)) - set(_NAMES)


_NAMES = tuple(f.name for f in dataclasses.fields(CallEvent))


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _time(value: object) -> float | None:
    return float(value) if value not in ("", None) else None


def _int(value: object) -> int:
    return int(value) if value not in ("", None) else 0


def _flag(value: object) -> bool:
    return value in ("yes", True, "1", 1)


_PARSERS = {f.name: {"int": _int, "float | None": _time, "bool": _flag}.get(f.type, str)
            for f in dataclasses.fields(CallEvent)}


def provider_settlement_id(customer: str, call_id: str) -> str:
    """What a provider's settlement and ledger entry are keyed by: a Call-ID is chosen by the caller's
    equipment, so two customers' calls may share one."""
    return f"{customer}/{call_id}"
