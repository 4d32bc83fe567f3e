"""Small helpers for API tests: unique test data and decoding of rich error statuses."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def unique_number() -> str:
    return "T" + uuid.uuid4().hex[:12]


@dataclass
class ApiFailure:
    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[str]


def failure(call) -> ApiFailure:
    """Run `call()`, expect an RpcError, and decode its ErrorInfo and BadRequest details."""
    try:
        call()
    except grpc.RpcError as err:
        status = rpc_status.from_call(err)
        reason, fields = "", []
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields += [v.field for v in bad.field_violations]
        return ApiFailure(err.code(), err.details(), reason, fields)
    raise AssertionError("the call succeeded; an error was expected")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def forged_page_tokens(genuine: str) -> list[str]:
    """Page tokens a caller might make up: the genuine one with a character changed, and base64 of JSON that
    an unsigned token format would have parsed (deep nesting, wrong types, Infinity)."""
    flipped = genuine[:20] + ("A" if genuine[20] != "A" else "B") + genuine[21:]
    return [flipped, "%%%", _b64("[[" * 100_000), _b64('{"after": true, "q": "x"}'), _b64('{"a": 1}'),
            _b64("Infinity"), _b64('{"after": "x", "q": "0000000000000000"}'), "x" * 5000, "ü" * 10]
