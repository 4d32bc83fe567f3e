"""The RPC being served, as the code below the interceptors sees it: who calls, from where, with which
request id, and the gRPC context (deadline, cancellation).

The error interceptor opens a Call for every RPC and the auth interceptor sets its principal, both on a
context variable of the serving thread, so functions deep in control/ (audit, paging, the database session)
need no extra parameters to know them.
"""

from __future__ import annotations

import contextvars
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from control.access.principals import Principal

if TYPE_CHECKING:
    from control.access.auth import PasswordGate
    from control.api.paging import PageTokens
    from control.config import Config

MAX_REQUEST_ID = 100


@dataclass(frozen=True)
class Server:
    """What every call of one control service shares (a process may run several, as the tests do)."""

    config: Config
    page_tokens: PageTokens
    passwords: PasswordGate


@dataclass
class Call:
    method: str  # "/tollgate.v1.TrunkService/UpdateTrunk"
    context: grpc.ServicerContext | None
    request_id: str
    source: str  # the client's address, "ipv4:127.0.0.1:4711" as gRPC reports it
    server: Server
    principal: Principal | None = None

    @property
    def rpc(self) -> str:
        """"tollgate.v1.TrunkService/UpdateTrunk": the method without its leading slash."""
        return self.method.lstrip("/")

    @property
    def source_address(self) -> str:
        """The client's IP address alone (no port): what login throttling counts per source."""
        kind, _, rest = self.source.partition(":")
        if kind in ("ipv4", "ipv6"):
            host = rest.rsplit(":", 1)[0]
            return host.strip("[]").replace("%5B", "").replace("%5D", "")
        return self.source

    def time_remaining(self) -> float | None:
        return self.context.time_remaining() if self.context is not None else None

    def client_gone(self) -> bool:
        return self.context is not None and not self.context.is_active()


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("call", default=None)


def request_id_from(metadata) -> str:
    """The caller's x-request-id (printable ASCII, clipped), else a fresh one: the audit log groups by it."""
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str):
            cleaned = "".join(c for c in value if c.isascii() and c.isprintable())[:MAX_REQUEST_ID]
            if cleaned:
                return cleaned
    return secrets.token_hex(8)


@contextmanager
def serving(call: Call) -> Iterator[Call]:
    token = _current.set(call)
    try:
        yield call
    finally:
        _current.reset(token)


def current() -> Call | None:
    """The RPC this thread serves, or None outside one (the ledger's and publisher's threads)."""
    return _current.get()


def principal() -> Principal:
    call = _current.get()
    if call is None or call.principal is None:  # a public RPC asked; a bug, not the caller's doing
        raise RuntimeError("no principal for this RPC")
    return call.principal
