"""Request bytes decoded by the gateway itself (MALFORMED_REQUEST, REQUEST_TOO_LARGE) and the
declared field rules (api/request_rules.py) applied once, before any servicer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from ibgateway_server import errors
from ibgateway_server.api.interceptors.base import Behavior, WrappingInterceptor, current_outcome
from ibgateway_server.api.request_rules import check_request

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


class RequestCheckInterceptor(WrappingInterceptor):
    """Innermost: decode the request bytes, bound their size, check the field rules.

    It takes over the handler's deserializer (the server hands the raw bytes through),
    so a request that does not decode is an INVALID_ARGUMENT ``MALFORMED_REQUEST`` that
    the outer interceptors log and count like any other error, and never a traceback.
    """

    def __init__(self, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.max_request_bytes = max_request_bytes

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        decode = handler.request_deserializer
        if decode is None or handler.request_streaming:
            return handler
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            inner: Behavior = handler.unary_unary

            async def unary(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await inner(self._request(method, decode, raw), context)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=None, response_serializer=serialize
            )
        if handler.unary_stream is not None:
            streaming: Behavior = handler.unary_stream
            if inspect.isasyncgenfunction(streaming):

                async def stream(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                    request = self._request(method, decode, raw)
                    async for item in streaming(request, context):
                        yield item

                return grpc.unary_stream_rpc_method_handler(
                    stream, request_deserializer=None, response_serializer=serialize
                )

            async def writer(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await streaming(self._request(method, decode, raw), context)

            return grpc.unary_stream_rpc_method_handler(
                writer, request_deserializer=None, response_serializer=serialize
            )
        return handler

    def _request(self, method: str, decode: Callable[[bytes], Any], raw: Any) -> Any:
        if not isinstance(raw, bytes | bytearray | memoryview):
            return raw  # already decoded (a server without this takeover)
        size = len(raw)
        if size > self.max_request_bytes:
            raise errors.GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "REQUEST_TOO_LARGE",
                f"the request has {size} bytes; this gateway accepts at most "
                f"{self.max_request_bytes} (IBGW_MAX_REQUEST_BYTES)",
                metadata={"size_bytes": str(size), "limit_bytes": str(self.max_request_bytes)},
            )
        try:
            request = decode(bytes(raw))
        except Exception:
            raise errors.malformed_request(method, size) from None
        current_outcome().request = request
        check_request(request)
        return request
