"""API errors: one exception type, turned into a rich gRPC status (ErrorInfo + BadRequest) in one place.

Code in control/ raises ApiError for everything the caller did wrong. Database errors the caller caused
(unique and foreign-key violations, checks, values out of range, a statement cancelled because the client
left or its deadline passed) are mapped here too, by `from_exception`, which the error interceptor calls for
every failed RPC: no caller mistake becomes UNKNOWN or INTERNAL.

Whatever the caller sent and an error repeats goes through `clip`, and `to_status` caps every text again, so
that an error never grows with its input (a status trailer over 16 KB is refused by the client).
"""

from __future__ import annotations

import grpc
import psycopg.errors
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "tollgate.v1"
MAX_ECHO = 200  # characters of caller input an error message repeats
_MAX_MESSAGE = 1000  # the whole description, whatever it holds


class ApiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str, field: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field
        self.retry_after = retry_after

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)
        details = [_pack(info)]
        message = _cap(self.message, _MAX_MESSAGE)
        field = _cap(self.field, MAX_ECHO) if self.field else None
        if field:
            violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        text = f"{field}: {message}" if field else message
        status = status_pb2.Status(code=self.code.value[0], message=text, details=details)
        return rpc_status.to_status(status)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def clip(value: object) -> str:
    """The caller's input as an error repeats it: repr() form, at most MAX_ECHO characters."""
    text = value if isinstance(value, str) else str(value)
    return repr(_cap(text, MAX_ECHO))


def invalid(field: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_ARGUMENT", field=field)


def not_found(what: str, consequence: str = "") -> ApiError:
    """ "account X not found", with what followed from it when it helps ("; nothing was deleted")."""
    tail = f"; {consequence}" if consequence else ""
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{_cap(what, MAX_ECHO)} not found{tail}", reason="NOT_FOUND")


def already_exists(field: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, message, reason="ALREADY_EXISTS", field=field)


def failed_precondition(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, reason="FAILED_PRECONDITION")


def permission_denied(message: str = "this token may not do that") -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, reason="PERMISSION_DENIED")


def unauthenticated(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, reason="UNAUTHENTICATED")


def resource_exhausted(message: str, retry_after: float | None = None) -> ApiError:
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason="RESOURCE_EXHAUSTED",
                    retry_after=retry_after)


def deadline_exceeded(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, message, reason="DEADLINE_EXCEEDED")


def unavailable(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAVAILABLE, message, reason="UNAVAILABLE")


def cancelled(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.CANCELLED, message, reason="CANCELLED")


# ---------------------------------------------------------------------------------------------- database

# Constraint name -> (API field, label of the resource or ""). Filled by the modules that own the tables
# (accounts here, every catalog resource through `register_constraints`), read only by from_exception.
_CONSTRAINT_FIELDS: dict[str, tuple[str, str]] = {
    "accounts_number_key": ("account_number", ""),
    "accounts_account_number_exact_key": ("account_number", ""),
    "accounts_email_live_key": ("email", ""),
    "accounts_pin_live_key": ("pin", ""),
    "sip_devices_username_key": ("account_number", ""),
    "accounts_rate_group_id_fkey": ("billing.rate_group", ""),
    "accounts_non_cli_rate_group_id_fkey": ("billing.non_cli_rate_group", ""),
    "accounts_localization_id_fkey": ("settings.localization", ""),
}


def register_constraints(mapping: dict[str, tuple[str, str]]) -> None:
    """Name the API field behind each constraint (a table's own module knows its columns)."""
    _CONSTRAINT_FIELDS.update(mapping)


def _from_database(exc: psycopg.Error, client_gone: bool) -> ApiError | None:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        if client_gone:
            return cancelled("the client cancelled the call or its deadline passed; the query was stopped")
        return deadline_exceeded("the database statement ran past its time limit; narrow the request")
    constraint = getattr(exc.diag, "constraint_name", None) or ""
    field, label = _CONSTRAINT_FIELDS.get(constraint, (constraint or "", ""))
    if isinstance(exc, psycopg.errors.UniqueViolation):
        if constraint.endswith("_pkey"):
            return already_exists(field or "name", f"{label or 'the object'} already exists")
        return already_exists(field, "is already in use")
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        return invalid(field, "refers to an object that does not exist")
    if isinstance(exc, psycopg.errors.CheckViolation | psycopg.errors.NumericValueOutOfRange):
        return invalid(field, "is out of range or malformed")
    return None


def from_exception(exc: BaseException, client_gone: bool = False) -> ApiError | None:
    """The API error `exc` stands for, or None when it is a fault of ours (logged, answered INTERNAL)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, psycopg.Error):
        mapped = _from_database(exc, client_gone)
        if mapped is None and isinstance(exc, psycopg.OperationalError):  # the server went away, not a bug
            return unavailable("the database is unreachable; retry shortly")
        return mapped
    return None
