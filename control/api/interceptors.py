"""The server's interceptors, outermost first:

0. MetricsInterceptor counts every RPC by method and status code and times it (control/metrics.py), around
   everything else, so that a refusal by any interceptor below is counted with its code.
1. ErrorInterceptor opens the Call (request id, client address, the server's parts) and turns whatever an
   RPC raises into its status: an ApiError as it is, a database error the caller caused through
   errors.from_exception, anything else INTERNAL with its traceback logged (a fault of ours, never the
   caller's). It is the one place that maps errors, so a caller's mistake never logs a traceback.
2. AuthInterceptor turns the bearer token into a principal and checks the permission table
   (control/api/permissions.py) before the servicer runs: servicers never read tokens.
3. RequestCheckInterceptor checks every request message (control/api/request_checks.py).
Server reflection (the only bidirectional stream) passes through untouched: it is public and reads nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import grpc

from control.access.auth import TokenAuthority
from control.api import calls, errors, permissions, request_checks
from control.metrics import ControlMetrics

log = logging.getLogger("tollgate.control")

Behavior = Callable  # (request or request iterator, context) -> response or response iterator


def _rewrap(handler: grpc.RpcMethodHandler | None, wrap: Callable[[Behavior, bool], Behavior]):
    """The handler with its behavior replaced by wrap(behavior, response_streaming)."""
    if handler is None or handler.stream_stream:
        return handler
    if handler.unary_unary:
        return handler._replace(unary_unary=wrap(handler.unary_unary, False))
    if handler.unary_stream:
        return handler._replace(unary_stream=wrap(handler.unary_stream, True))
    return handler._replace(stream_unary=wrap(handler.stream_unary, False))


def _around(before: Callable[[object, grpc.ServicerContext], object]) -> Callable[[Behavior, bool], Behavior]:
    """A wrapper that runs `before(request, context)` (it may return a replacement request) first."""

    def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
        if response_streaming:
            def streaming(request, context) -> Iterator:
                yield from behavior(before(request, context), context)
            return streaming

        def unary(request, context):
            return behavior(before(request, context), context)
        return unary

    return wrap


class MetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: ControlMetrics):
        self._metrics = metrics

    def _observe(self, method: str, context: grpc.ServicerContext, started: float, raised: bool) -> None:
        # An abort sets the code and raises; a client gone mid-stream is CANCELLED; an exception that escapes
        # everything is UNKNOWN to the client.
        code = context.code()
        if code is None and raised:
            code = grpc.StatusCode.UNKNOWN if context.is_active() else grpc.StatusCode.CANCELLED
        code = code or grpc.StatusCode.OK
        self._metrics.rpcs.labels(method, code.name).inc()
        self._metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method.rsplit(".", 1)[-1]  # "AccountService/GetAccount"

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:
                def streaming(request, context) -> Iterator:
                    started, raised = time.perf_counter(), True
                    try:
                        yield from behavior(request, context)
                        raised = False
                    finally:
                        self._observe(method, context, started, raised)
                return streaming

            def unary(request, context):
                started, raised = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    raised = False
                    return response
                finally:
                    self._observe(method, context, started, raised)
            return unary

        # (an unknown method has no handler: never counted, so a client cannot invent label values)
        return _rewrap(continuation(handler_call_details), wrap)


class ErrorInterceptor(grpc.ServerInterceptor):
    def __init__(self, server: calls.Server):
        self._server = server

    def _call(self, method: str, context: grpc.ServicerContext) -> calls.Call:
        return calls.Call(method=method, context=context, request_id=calls.request_id_from(
            context.invocation_metadata()), source=context.peer() or "", server=self._server)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:
                def streaming(request, context) -> Iterator:
                    with calls.serving(self._call(method, context)) as call:
                        try:
                            yield from behavior(request, context)
                        except Exception as exc:
                            _abort(context, call, exc)
                return streaming

            def unary(request, context):
                with calls.serving(self._call(method, context)) as call:
                    try:
                        return behavior(request, context)
                    except Exception as exc:
                        _abort(context, call, exc)
            return unary

        return _rewrap(continuation(handler_call_details), wrap)


def _abort(context: grpc.ServicerContext, call: calls.Call, exc: Exception) -> None:
    mapped = errors.from_exception(exc, client_gone=call.client_gone())
    if mapped is None:
        log.error("%s failed (request %s)", call.rpc, call.request_id, exc_info=exc)
        mapped = errors.ApiError(grpc.StatusCode.INTERNAL, f"internal error, logged as request {call.request_id}",
                                 reason="INTERNAL")
    context.abort_with_status(mapped.to_status())


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, authority: TokenAuthority):
        self._authority = authority

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if permissions.is_public(method):
            return handler

        def authenticate(request, context: grpc.ServicerContext):
            principal = self._authority.principal_for(context.invocation_metadata())
            if not permissions.allows(method, principal.role):
                who = "an account token" if principal.kind == "account" else f"the {principal.role} role"
                raise errors.permission_denied(f"{who} may not call {method.rsplit('.', 1)[-1]}")
            calls.current().principal = principal
            return request

        return _rewrap(handler, _around(authenticate))


def _checked_stream(requests: Iterator) -> Iterator:
    for request in requests:
        request_checks.check(request)
        yield request


class RequestCheckInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is not None and handler.stream_unary:
            return handler._replace(stream_unary=_around(lambda requests, _: _checked_stream(requests))(
                handler.stream_unary, False))

        def checked(request, context):
            request_checks.check(request)
            return request

        return _rewrap(handler, _around(checked))
