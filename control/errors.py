"""API errors: one exception type, turned into a rich gRPC status (ErrorInfo + BadRequest) in one place.

Code in control/ raises ApiError for everything the caller did wrong; database errors caused by the
caller (unique and foreign-key violations) are mapped here too, so no caller mistake becomes INTERNAL.
"""

from __future__ import annotations

import grpc
import psycopg.errors
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "tollgate.v1"


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)
        details = [_pack(info)]
        if self.field:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        text = f"{self.field}: {self.message}" if self.field else self.message
        status = status_pb2.Status(code=self.code.value[0], message=text, details=details)
        return rpc_status.to_status(status)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def invalid(field: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_ARGUMENT", field=field)


def not_found(what: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{what} not found", reason="NOT_FOUND")


def already_exists(field: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, message, reason="ALREADY_EXISTS", field=field)


def failed_precondition(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, reason="FAILED_PRECONDITION")


def permission_denied(message: str = "this token may not do that") -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, reason="PERMISSION_DENIED")


def unauthenticated(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, reason="UNAUTHENTICATED")


# Unique indexes and foreign keys -> the API field the caller set. Keep in step with migrations/.
_CONSTRAINT_FIELDS = {
    "accounts_number_key": "account_number",
    "accounts_account_number_exact_key": "account_number",
    "accounts_email_live_key": "email",
    "accounts_pin_live_key": "pin",
    "sip_devices_username_key": "account_number",
    "accounts_rate_group_id_fkey": "billing.rate_group",
    "accounts_non_cli_rate_group_id_fkey": "billing.non_cli_rate_group",
    "accounts_localization_id_fkey": "settings.localization",
}


def from_database(exc: psycopg.Error) -> ApiError | None:
    """The API error a database error stands for, or None when it is a fault of ours."""
    constraint = getattr(exc.diag, "constraint_name", None) or ""
    field = _CONSTRAINT_FIELDS.get(constraint, constraint or None)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return already_exists(field or "", "is already in use")
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return invalid(field or "", "refers to an object that does not exist")
    if isinstance(exc, psycopg.errors.CheckViolation | psycopg.errors.NumericValueOutOfRange):
        return invalid(field or "", "value out of range")
    return None


