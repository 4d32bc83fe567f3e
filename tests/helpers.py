"""Small helpers for tests: unique test data, every service's stub, decoding of rich error statuses, running the CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from psycopg import sql

from tollgate.v1 import (
    account_pb2_grpc,
    audit_pb2_grpc,
    auth_pb2_grpc,
    cdr_pb2_grpc,
    company_pb2_grpc,
    directory_pb2_grpc,
    invoice_pb2_grpc,
    notification_pb2_grpc,
    operator_pb2_grpc,
    rating_pb2_grpc,
    receipt_pb2_grpc,
    route_pb2,
    route_pb2_grpc,
    trunks_pb2_grpc,
)


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def unique_number() -> str:
    return "T" + uuid.uuid4().hex[:12]


@dataclass
class Stubs:
    accounts: account_pb2_grpc.AccountServiceStub
    company: company_pb2_grpc.CompanyServiceStub
    auth: auth_pb2_grpc.AuthServiceStub
    rate_groups: rating_pb2_grpc.RateGroupServiceStub
    trunks: trunks_pb2_grpc.TrunkServiceStub
    directory: directory_pb2_grpc.DirectoryServiceStub
    metadata: tuple
    cdrs: cdr_pb2_grpc.CdrServiceStub
    invoices: invoice_pb2_grpc.InvoiceServiceStub
    operators: operator_pb2_grpc.OperatorServiceStub
    audit: audit_pb2_grpc.AuditServiceStub
    receipts: receipt_pb2_grpc.ReceiptServiceStub
    notifications: notification_pb2_grpc.NotificationServiceStub
    routes: route_pb2_grpc.RouteServiceStub


def stubs_for(channel: grpc.Channel, token: str) -> Stubs:
    """Every service's stub on `channel`, and the bearer metadata of `token`."""
    return Stubs(
        account_pb2_grpc.AccountServiceStub(channel),
        company_pb2_grpc.CompanyServiceStub(channel),
        auth_pb2_grpc.AuthServiceStub(channel),
        rating_pb2_grpc.RateGroupServiceStub(channel),
        trunks_pb2_grpc.TrunkServiceStub(channel),
        directory_pb2_grpc.DirectoryServiceStub(channel),
        (("authorization", f"Bearer {token}"),),
        cdr_pb2_grpc.CdrServiceStub(channel),
        invoice_pb2_grpc.InvoiceServiceStub(channel),
        operator_pb2_grpc.OperatorServiceStub(channel),
        audit_pb2_grpc.AuditServiceStub(channel),
        receipt_pb2_grpc.ReceiptServiceStub(channel),
        notification_pb2_grpc.NotificationServiceStub(channel),
        route_pb2_grpc.RouteServiceStub(channel),
    )


@dataclass
class Simulate:
    """RouteService.SimulateCall as tests call it: `simulate(account, number)`; `simulate.until(account, accept)`
    asks again until accept(response), since a change reaches the projection within about a second."""

    stubs: Stubs
    caller_id: str = "15550001111"

    def __call__(self, account: str, number: str, caller_id: str | None = None, metadata=None,
                 **fields) -> route_pb2.SimulateCallResponse:
        request = route_pb2.SimulateCallRequest(account=f"accounts/{account}", number=number,
                                                caller_id=self.caller_id if caller_id is None else caller_id,
                                                **fields)
        return self.stubs.routes.SimulateCall(request, metadata=metadata or self.stubs.metadata)

    def until(self, account: str, number: str, accept, timeout: float = 5.0,
              **options) -> route_pb2.SimulateCallResponse:
        deadline = time.monotonic() + timeout
        while True:
            response = self(account, number, **options)
            if accept(response) or time.monotonic() > deadline:
                return response
            time.sleep(0.1)


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


# ---------------------------------------------------------------------------------------------- the CLI

Run = Callable[..., subprocess.CompletedProcess]


def clean_env(home: Path) -> dict[str, str]:
    """The caller's environment minus anything that could point the CLI elsewhere (incl. ~/.config); plaintext,
    like the session's server (tests/test_tls.py runs the CLI over TLS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env["HOME"] = str(home)
    env["TOLLGATE_PLAINTEXT"] = "1"
    return env


def run_cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "admin", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    return result.stdout


def ok_json(result: subprocess.CompletedProcess):
    return json.loads(ok(result))


# ---------------------------------------------------------------------------------------------- money rows

def insert_cdrs(dsn: str, rows: list[dict]) -> None:
    """CDR rows straight into `cdrs`, as the ledger writes them (each dict names its columns; all alike)."""
    columns = list(rows[0])
    statement = sql.SQL("INSERT INTO cdrs ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder(c) for c in columns))
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.executemany(statement, rows)
