"""Prometheus metrics with go-grpc-prometheus names."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ibgateway_server.api.interceptors.base import (
    Behavior,
    RpcOutcome,
    WrappingInterceptor,
    current_outcome,
    final_code,
    split_method,
)


class GatewayMetrics:
    """Prometheus metrics of one gateway (own registry, so several can coexist).

    The gRPC ones carry go-grpc-prometheus' names and labels (``grpc_server_*``,
    ``grpc_type/grpc_service/grpc_method/grpc_code``), so existing gRPC dashboards work;
    the gateway's own metrics are named ``ibgw_*``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        rpc = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            rpc,
            registry=self.registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*rpc, "grpc_code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server (a stream: its whole life).",
            rpc,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
            registry=self.registry,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            rpc,
            registry=self.registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            rpc,
            registry=self.registry,
        )
        self.ib_connected = Gauge(
            "ibgw_ib_connected", "1 while the IB session is connected", registry=self.registry
        )
        self.ib_state = Gauge(
            "ibgw_ib_session_state",
            "1 for the IB session's current state",
            ["state"],
            registry=self.registry,
        )
        self.ib_disconnects = Counter(
            "ibgw_ib_disconnects",
            "IB connections lost (not counting requested disconnects)",
            registry=self.registry,
        )


class _CountingContext:
    """A servicer context whose ``write`` counts the messages it sends; everything else
    is the call's own context."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], sent: Any) -> None:
        self._context = context
        self._sent = sent

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._sent.inc()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every call by method and final status code, and counts messages
    (request streams are not used by this API: one message received per call)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        # the labelled children of each method (a labels() lookup takes a lock)
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}
        self._handled: dict[tuple[tuple[str, str, str], str], Any] = {}

    def _children_of(self, labels: tuple[str, str, str]) -> tuple[Any, Any, Any, Any]:
        children = self._children.get(labels)
        if children is None:
            m = self.metrics
            children = (
                m.started.labels(*labels),
                m.msg_received.labels(*labels),
                m.msg_sent.labels(*labels),
                m.latency.labels(*labels),
            )
            self._children[labels] = children
        return children

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
        labels = (kind, *split_method(method))
        sent = self._started(labels)
        try:
            if kind == "unary":
                response = await behavior(request, context)
                sent.inc()
                return response
            # a stream written with `await context.write(...)`: count what it writes
            return await behavior(request, _CountingContext(context, sent))
        except asyncio.CancelledError:
            outcome.code = outcome.code or grpc.StatusCode.CANCELLED
            raise
        finally:
            self._done(labels, context, outcome, start)

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
        labels = (kind, *split_method(method))
        sent = self._started(labels)
        try:
            async for item in behavior(request, context):
                sent.inc()
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            # the client went away (or the server is stopping)
            outcome.code = outcome.code or grpc.StatusCode.CANCELLED
            raise
        finally:
            self._done(labels, context, outcome, start)

    def _started(self, labels: tuple[str, str, str]) -> Any:
        """Count the call's start and its request; returns its messages-sent counter."""
        started, received, sent, _ = self._children_of(labels)
        started.inc()
        received.inc()
        return sent

    def _done(
        self,
        labels: tuple[str, str, str],
        context: grpc.aio.ServicerContext[Any, Any],
        outcome: RpcOutcome,
        start: float,
    ) -> None:
        code = final_code(outcome, context)
        handled = self._handled.get((labels, code))
        if handled is None:
            handled = self._handled[(labels, code)] = self.metrics.handled.labels(*labels, code)
        handled.inc()
        self._children_of(labels)[3].observe(time.perf_counter() - start)
