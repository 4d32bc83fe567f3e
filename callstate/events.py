"""A settled call's event, as its stream entry carries it (one field, `event`: JSON, every value a string)."""

from __future__ import annotations

import json


def encode_event(event: dict[str, str | int]) -> str:
    return json.dumps({name: str(value) for name, value in event.items()}, separators=(",", ":"))


def decode_event(fields: dict[bytes, bytes] | dict[str, str]) -> dict[str, str]:
    """The event of a stream entry (encode_event, or the reaper's)."""
    raw = fields.get(b"event", fields.get("event")) if fields else None
    if raw is None:
        raise ValueError(f"stream entry without an event field: {sorted(fields or {})}")
    return json.loads(raw)


def provider_settlement_id(customer: str, call_id: str) -> str:
    """What a provider's settlement and ledger entry are keyed by: a Call-ID is chosen by the caller's
    equipment, so two customers' calls may share one."""
    return f"{customer}/{call_id}"
