"""Every exception → google.rpc.Status with ErrorInfo (never UNKNOWN, never a traceback)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from ibgateway_server import errors
from ibgateway_server.api.interceptors.base import Behavior, WrappingInterceptor, current_outcome
from ibgateway_server.ib import failures

log = logging.getLogger(__name__)


class ErrorMappingInterceptor(WrappingInterceptor):
    """Every exception → google.rpc.Status with ErrorInfo (see errors.py)."""

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        try:
            return await behavior(request, context)
        except Exception as exc:
            await self._abort(method, context, exc)

    async def stream(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except Exception as exc:
            await self._abort(method, context, exc)

    async def _abort(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], exc: Exception
    ) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc  # the servicer aborted with its own status
        if context.cancelled() or context.done() or type(exc).__name__ == "ExecuteBatchError":
            # The call is already over (the client left mid-send): no status can reach
            # anyone, so end it as a cancellation rather than logging an internal error.
            log.debug("%s ended by the client: %r", method, exc)
            current_outcome().code = grpc.StatusCode.CANCELLED
            raise asyncio.CancelledError() from exc
        err = failures.from_exception(exc)
        if err is None:
            # The client gets a generic INTERNAL and this id; the details stay here.
            request_id = uuid.uuid4().hex[:16]
            log.error("unexpected error in %s (request id %s)", method, request_id, exc_info=exc)
            err = errors.internal_error(request_id)
        else:
            log.debug("%s failed: %r", method, err)
        outcome = current_outcome()
        outcome.code, outcome.reason = err.code, err.reason
        await context.abort_with_status(err.to_grpc_status())
