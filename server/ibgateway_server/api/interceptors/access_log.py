"""One log line per finished call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from ibgateway_server.api.interceptors.base import (
    Behavior,
    RpcOutcome,
    WrappingInterceptor,
    current_outcome,
    final_code,
)

access_log = logging.getLogger("ibgateway_server.access")


class AccessLogInterceptor(WrappingInterceptor):
    """One log line per finished call: method, peer, code, reason, duration."""

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        outcome = current_outcome()
        start = time.perf_counter()
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            outcome.code = outcome.code or grpc.StatusCode.CANCELLED
            raise
        finally:
            self._log(method, request, context, outcome, start)

    async def stream(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        outcome = current_outcome()
        start = time.perf_counter()
        access_log.debug("%s stream opened by %s", method, context.peer())
        try:
            async for item in behavior(request, context):
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            # the client went away (or the server is stopping)
            outcome.code = outcome.code or grpc.StatusCode.CANCELLED
            raise
        finally:
            self._log(method, request, context, outcome, start)

    @staticmethod
    def _log(
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        outcome: RpcOutcome,
        start: float,
    ) -> None:
        code = final_code(outcome, context)
        level = logging.INFO if code in ("OK", "CANCELLED") else logging.WARNING
        if code == "INTERNAL":
            level = logging.ERROR
        if not access_log.isEnabledFor(level):
            return  # (context.peer() and the formatting are not free)
        reason = f" {outcome.reason}" if outcome.reason else ""
        peer, millis = context.peer(), (time.perf_counter() - start) * 1000
        # the same facts as fields, for structured (JSON) logs
        fields = {"method": method, "peer": peer, "code": code, "duration_ms": round(millis, 3)}
        if outcome.reason:
            fields["reason"] = outcome.reason
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id":
                fields["request_id"] = str(value)[:64]
        if outcome.request is not None:
            request = outcome.request
        key_of = getattr(request, "order", None)  # an OrderKey, or a PlaceOrder's key
        client_order_id = getattr(request, "client_order_id", None) or getattr(
            key_of, "client_order_id", None
        )
        if isinstance(client_order_id, str) and client_order_id:
            fields["client_order_id"] = client_order_id
        access_log.log(level, "%s %s %s%s %.1fms", method, peer, code, reason, millis, extra=fields)
