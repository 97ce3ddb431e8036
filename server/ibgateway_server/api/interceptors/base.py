"""What every interceptor shares: the per-call outcome the outer ones read, and the wrapping of
a method's handler (once per method, not per call)."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

Behavior = Callable[..., Any]


@dataclass
class RpcOutcome:
    """What became of one call (filled in by the error mapper)."""

    code: grpc.StatusCode | None = None
    reason: str = ""
    request: Any = None  # the decoded request (the outer interceptors see its bytes)


outcome_var: contextvars.ContextVar[RpcOutcome | None] = contextvars.ContextVar(
    "ibgw_rpc_outcome", default=None
)


def current_outcome() -> RpcOutcome:
    outcome = outcome_var.get()
    if outcome is None:
        outcome = RpcOutcome()
        outcome_var.set(outcome)
    return outcome


def final_code(outcome: RpcOutcome, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = outcome.code or context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return str(code)


def split_method(full_method: str) -> tuple[str, str]:
    """ "/pkg.Service/Method" → ("pkg.Service", "Method")."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service or "unknown", method or "unknown"


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each handler's behaviour with :meth:`unary` / :meth:`stream`.

    The wrapped handler is built once per method and reused (the inner handler is the
    same object on every call), not rebuilt on every call: part of the per-call cost.
    """

    _wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]]

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        try:
            cache = self._wrapped
        except AttributeError:
            cache = self._wrapped = {}
        cached = cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, "unary"), **kwargs
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_streaming(handler.unary_stream, method, "server_stream"), **kwargs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method, "client_stream"), **kwargs
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_streaming(handler.stream_stream, method, "bidi_stream"), **kwargs
            )
        return handler

    def _wrap_unary(self, behavior: Behavior, method: str, kind: str) -> Behavior:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await self.unary(method, kind, behavior, request, context)

        return unary

    def _wrap_streaming(self, behavior: Behavior, method: str, kind: str) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):
            # a streaming handler written with `await context.write(...)`
            return self._wrap_unary(behavior, method, kind)

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async for item in self.stream(method, kind, behavior, request, context):
                yield item

        return stream

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        return await behavior(request, context)

    async def stream(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        async for item in behavior(request, context):
            yield item
