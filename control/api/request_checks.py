"""Checks every request message passes before a servicer sees it, whatever the RPC.

- No string may hold a NUL character: PostgreSQL cannot store one, and it used to surface as UNKNOWN with
  a traceback in the log (from an unauthenticated Login, too).
- Every Timestamp must be a real instant from year 1 to 9999 with nanos in 0..999,999,999: Python's
  datetime cannot hold others, and they used to surface as UNKNOWN.
The violation names the field by its path in the request (`account.profile.city`, `gateways[2].address`).
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from control.api.errors import invalid

_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_TIMESTAMP = "google.protobuf.Timestamp"


def check(message: Message, prefix: str = "") -> None:
    """Raise INVALID_ARGUMENT on the first NUL in a string or impossible Timestamp of `message`."""
    for field, value in message.ListFields():
        path = prefix + field.name
        if _repeated(field):
            for index, item in enumerate(value):
                _check_value(field, item, f"{path}[{index}]")
        else:
            _check_value(field, value, path)


def _check_value(field: FieldDescriptor, value, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        if "\x00" in value:
            raise invalid(path, "must not contain NUL characters")
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == _TIMESTAMP:
            _check_timestamp(value, path)
        else:
            check(value, path + ".")


def _check_timestamp(value, path: str) -> None:
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS:
        raise invalid(path, "must be between 0001-01-01 and 9999-12-31")
    if not 0 <= value.nanos <= 999_999_999:
        raise invalid(path, "nanos must be 0 to 999,999,999")


def _repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28; `label` is gone in 7
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED
