"""RouteService: the route simulator (control/routing), behind the same interceptors as every RPC."""

from __future__ import annotations

import re

from control.accounts import accounts, company
from control.api import calls
from control.api.errors import invalid, unavailable
from control.db import Database
from control.routing.report import Report
from control.routing.simulator import ProjectionUnavailable, Simulator
from fastpath.decision import MAX_DIALLED
from tollgate.v1 import route_pb2, route_pb2_grpc

MAX_CALLER_ID = 256  # a From user longer than any caller id the switch presents; bounded like every input
CALL_ID = re.compile(r"[!-~]{1,255}")  # what the KEMI script accepts as a Call-ID (kemi/tollgate_kemi.py)


def _check(request: route_pb2.SimulateCallRequest) -> str:
    """The account number the request names; INVALID_ARGUMENT naming the first bad field."""
    if not request.account:
        raise invalid("account", "is required")
    number = accounts.number_from_name(request.account, "account")
    if not request.number:
        raise invalid("number", "is required")
    if len(request.number) > MAX_DIALLED:
        raise invalid("number", f"at most {MAX_DIALLED} characters (the switch answers a longer one 484 at once)")
    if len(request.caller_id) > MAX_CALLER_ID:
        raise invalid("caller_id", f"at most {MAX_CALLER_ID} characters")
    if request.call_id and not CALL_ID.fullmatch(request.call_id):
        raise invalid("call_id", "1 to 255 printable ASCII characters without spaces")
    return number


class RouteService(route_pb2_grpc.RouteServiceServicer):
    def __init__(self, db: Database, simulator: Simulator):
        self._db = db
        self._simulator = simulator

    def SimulateCall(self, request: route_pb2.SimulateCallRequest, context) -> route_pb2.SimulateCallResponse:
        _check(request)
        with self._db.transaction() as conn:
            # An account token may simulate only its own calls: another account is NOT_FOUND, like a missing one.
            account = accounts.get(conn, calls.principal(), request.account)
            decimals = company.load(conn)["decimals"]
        at = request.at_time.seconds if request.HasField("at_time") else None
        try:
            simulation = self._simulator.simulate(account.account_number, request.caller_id, request.number, at,
                                                  request.call_id)
        except ProjectionUnavailable as exc:
            raise unavailable(f"the switch's data in Redis cannot be read now; retry shortly ({exc})") from None
        return Report(simulation, decimals, carriers=calls.principal().is_operator).build()
