"""Small helpers for API tests: unique test data and decoding of rich error statuses."""

from __future__ import annotations

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
