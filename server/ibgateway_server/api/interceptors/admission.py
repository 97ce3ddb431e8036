"""Admission control: concurrent streams in total and per client, a per-client unary rate limit."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from ibgateway_server import errors
from ibgateway_server.api.interceptors.auth import PUBLIC_PREFIXES
from ibgateway_server.api.interceptors.base import Behavior, WrappingInterceptor


@dataclass(frozen=True)
class AdmissionLimits:
    """What one gateway admits (0 = no limit)."""

    max_streams: int = 1000  # open streaming calls, all clients together
    max_streams_per_client: int = 100
    unary_rate: float = 100.0  # unary calls a second per client (sustained)
    unary_burst: int = 200  # ... and in a burst


class _Bucket:
    __slots__ = ("time", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.time = tokens, now


def client_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who a call counts against: its bearer token (a digest, never the token), else its
    peer address without the port."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            raw = value if isinstance(value, bytes) else value.encode()
            return "token:" + hashlib.sha256(raw).hexdigest()[:16]
    peer = context.peer() or "unknown"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class AdmissionInterceptor(WrappingInterceptor):
    """Admission control inside the error mapper, so every refusal is a logged, counted
    RESOURCE_EXHAUSTED with ErrorInfo (never a silent transport reset):

    * streaming calls: at most ``max_streams`` open at once, ``max_streams_per_client``
      per client (``STREAM_LIMIT_REACHED``);
    * unary calls: a token bucket per client, ``unary_rate`` a second with bursts of
      ``unary_burst`` (``RATE_LIMITED``, with RetryInfo saying when to retry).

    Health checks and reflection are not limited.
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.open_streams = 0
        self._streams_by_client: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    # ---------------------------------------------------------------- streams

    def _admit_stream(self, client: str) -> None:
        limits = self.limits
        mine = self._streams_by_client.get(client, 0)
        if limits.max_streams and self.open_streams >= limits.max_streams:
            raise self._stream_refusal("total", limits.max_streams)
        if limits.max_streams_per_client and mine >= limits.max_streams_per_client:
            raise self._stream_refusal("client", limits.max_streams_per_client)
        self.open_streams += 1
        self._streams_by_client[client] = mine + 1

    def _release_stream(self, client: str) -> None:
        self.open_streams -= 1
        left = self._streams_by_client.get(client, 1) - 1
        if left > 0:
            self._streams_by_client[client] = left
        else:
            self._streams_by_client.pop(client, None)

    @staticmethod
    def _stream_refusal(scope: str, limit: int) -> errors.GatewayError:
        whose = "this gateway's" if scope == "total" else "this client's"
        setting = "IBGW_MAX_STREAMS" if scope == "total" else "IBGW_MAX_STREAMS_PER_CLIENT"
        return errors.GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "STREAM_LIMIT_REACHED",
            f"{whose} limit of {limit} open streams is reached ({setting}); close a stream "
            "or retry later",
            metadata={"limit": str(limit), "scope": scope},
            retry_after=1.0,
        )

    # ---------------------------------------------------------------- unary rate

    def _admit_unary(self, client: str) -> None:
        rate, burst = self.limits.unary_rate, self.limits.unary_burst
        if rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_idle(now)
            bucket = self._buckets[client] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.time) * rate)
        bucket.time = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / rate
        raise errors.GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            f"more than {rate:g} calls a second (bursts of {burst}) from this client "
            "(IBGW_RATE_LIMIT); retry after the delay in RetryInfo",
            metadata={"rate_per_second": f"{rate:g}", "burst": str(burst)},
            retry_after=wait,
        )

    def _forget_idle(self, now: float) -> None:
        burst = float(self.limits.unary_burst)
        rate = self.limits.unary_rate
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.time) * rate >= burst:
                del self._buckets[key]

    # ---------------------------------------------------------------- calls

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        if method.startswith(PUBLIC_PREFIXES):
            return await behavior(request, context)
        client = client_identity(context)
        if kind == "unary":
            self._admit_unary(client)
            return await behavior(request, context)
        self._admit_stream(client)  # a stream written with context.write
        try:
            return await behavior(request, context)
        finally:
            self._release_stream(client)

    async def stream(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        if method.startswith(PUBLIC_PREFIXES):
            async for item in behavior(request, context):
                yield item
            return
        client = client_identity(context)
        self._admit_stream(client)
        try:
            async for item in behavior(request, context):
                yield item
        finally:
            self._release_stream(client)
