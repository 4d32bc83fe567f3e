"""Turning gRPC failures into one stderr report and one exit code, so scripts can branch on the code."""

import sys
from typing import TextIO

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2  # argparse's own code for bad command lines; our usage checks reuse it

# The one place that maps server status codes to exit codes; anything not listed is EXIT_OTHER.
EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.PERMISSION_DENIED: 6,
    grpc.StatusCode.UNAUTHENTICATED: 6,
    grpc.StatusCode.UNAVAILABLE: 7,
}


class UsageError(Exception):
    """A command line that argparse accepted but that makes no sense (e.g. `update` with nothing to set)."""


class Aborted(Exception):
    """The operator answered "no" to a confirmation: nothing was done, and the exit code says so (EXIT_OTHER)."""


def exit_code_for(code: grpc.StatusCode | None) -> int:
    return EXIT_CODES.get(code, EXIT_OTHER) if code is not None else EXIT_OTHER


def _rich_status(err: grpc.RpcError) -> status_pb2.Status | None:
    try:
        return rpc_status.from_call(err)
    except (ValueError, AttributeError):
        # A status proto that disagrees with the call (or an error that is not a call) is not worth a
        # traceback: the plain code and details still say what happened.
        return None


def _violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found


def report_rpc_error(err: grpc.RpcError, stream: TextIO | None = None) -> int:
    """Print `error: CODE: field: description` per field violation, or `error: CODE: message` when the
    status has none; return the exit code.

    The server's message already repeats the first violation ("email: not a valid address"), so printing
    both would show a validation error twice.
    """
    stream = stream or sys.stderr
    code: grpc.StatusCode | None = err.code() if hasattr(err, "code") else None
    prefix = f"error: {code.name if code else 'UNKNOWN'}"
    message = err.details() if hasattr(err, "details") else str(err)
    status = _rich_status(err)
    violations = _violations(status) if status is not None else []
    if status is not None:
        message = status.message
    if violations:
        for field, description in violations:
            print(f"{prefix}: {field}: {description}" if field else f"{prefix}: {description}", file=stream)
    else:
        print(f"{prefix}: {message}", file=stream)
    return exit_code_for(code)
