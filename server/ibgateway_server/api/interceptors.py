"""Server interceptors: error mapping, access logging and Prometheus metrics.

Order on the server (outermost first): metrics → access log → error mapping → auth
(when tokens are configured) → request checks → servicer.
The request checks decode the request bytes themselves (grpc's own decoding would fail
before any interceptor runs: the call would be neither logged nor counted), refuse what
does not decode (``MALFORMED_REQUEST``) or is too large, and apply the declared field
rules (``api/request_rules.py``) once, before any servicer.
The error mapper turns every exception into a rich google.rpc.Status (never UNKNOWN,
never a traceback); the outer two observe the final code through a per-call
:class:`RpcOutcome` kept in a context variable (interceptors and the handler share one
contextvars.Context per call).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ibgateway_server import errors
from ibgateway_server.api.request_rules import check_request
from ibgateway_server.ib import failures

log = logging.getLogger(__name__)
access_log = logging.getLogger("ibgateway_server.access")

Behavior = Callable[..., Any]


@dataclass
class RpcOutcome:
    """What became of one call (filled in by the error mapper)."""

    code: grpc.StatusCode | None = None
    reason: str = ""
    request: Any = None  # the decoded request (the outer interceptors see its bytes)


_outcome: contextvars.ContextVar[RpcOutcome | None] = contextvars.ContextVar(
    "ibgw_rpc_outcome", default=None
)


def _current_outcome() -> RpcOutcome:
    outcome = _outcome.get()
    if outcome is None:
        outcome = RpcOutcome()
        _outcome.set(outcome)
    return outcome


def _final_code(outcome: RpcOutcome, context: grpc.aio.ServicerContext[Any, Any]) -> str:
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


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
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


class ErrorMappingInterceptor(_WrappingInterceptor):
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
            _current_outcome().code = grpc.StatusCode.CANCELLED
            raise asyncio.CancelledError() from exc
        err = failures.from_exception(exc)
        if err is None:
            # The client gets a generic INTERNAL and this id; the details stay here.
            request_id = uuid.uuid4().hex[:16]
            log.error("unexpected error in %s (request id %s)", method, request_id, exc_info=exc)
            err = errors.internal_error(request_id)
        else:
            log.debug("%s failed: %r", method, err)
        outcome = _current_outcome()
        outcome.code, outcome.reason = err.code, err.reason
        await context.abort_with_status(err.to_grpc_status())


DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


class RequestCheckInterceptor(_WrappingInterceptor):
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
        _current_outcome().request = request
        check_request(request)
        return request


# RPCs that change state: placing and cancelling orders (trade), and controlling the IB
# session (admin: it can cut every client off, or aim the gateway elsewhere).
TRADE_METHODS = frozenset(
    {
        "/ibgateway.v1.OrderService/PlaceOrder",
        "/ibgateway.v1.OrderService/PlaceBracketOrder",
        "/ibgateway.v1.OrderService/CancelOrder",
        "/ibgateway.v1.OrderService/ModifyOrder",
        "/ibgateway.v1.OrderService/CancelAllOrders",
    }
)
ADMIN_METHODS = frozenset(
    {
        "/ibgateway.v1.ConnectionService/Connect",
        "/ibgateway.v1.ConnectionService/Disconnect",
    }
)
# Open to everyone: probes and schema discovery.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def required_scope(method: str) -> str | None:
    if method.startswith(PUBLIC_PREFIXES):
        return None
    if method in ADMIN_METHODS:
        return "admin"
    return "trade" if method in TRADE_METHODS else "read"


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


class AdmissionInterceptor(_WrappingInterceptor):
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


class AuthInterceptor(_WrappingInterceptor):
    """Bearer tokens with scopes: ``authorization: Bearer <token>`` metadata.

    Sits inside the error mapper, so a refusal is a rich status (UNAUTHENTICATED /
    PERMISSION_DENIED with ErrorInfo) that is logged and counted like any other.
    Tokens are compared in constant time and never logged.
    """

    def __init__(self, tokens: dict[str, frozenset[str]]) -> None:
        self._tokens = [(t.encode(), scopes) for t, scopes in tokens.items()]

    def _authorize(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        scope = required_scope(method)
        if scope is None:
            return
        presented = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode(errors="replace")
                break
        kind, _, token = presented.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise errors.GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "MISSING_TOKEN",
                "this gateway needs a bearer token: send 'authorization: Bearer <token>' metadata",
            )
        scopes = self._scopes_of(token.strip().encode())
        if scopes is None:
            raise errors.GatewayError(
                grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN", "the bearer token is not valid"
            )
        if scope not in scopes:
            raise errors.GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "INSUFFICIENT_SCOPE",
                f"this RPC needs a token with the '{scope}' scope",
                metadata={"required_scope": scope},
            )

    def _scopes_of(self, token: bytes) -> frozenset[str] | None:
        found = None
        for candidate, scopes in self._tokens:  # no early exit: constant time per token
            if hmac.compare_digest(candidate, token):
                found = scopes
        return found

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        self._authorize(method, context)
        return await behavior(request, context)

    async def stream(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        self._authorize(method, context)
        async for item in behavior(request, context):
            yield item


class AccessLogInterceptor(_WrappingInterceptor):
    """One log line per finished call: method, peer, code, reason, duration."""

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        outcome = _current_outcome()
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
        outcome = _current_outcome()
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
        code = _final_code(outcome, context)
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


class MetricsInterceptor(_WrappingInterceptor):
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
        outcome = _current_outcome()
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
        outcome = _current_outcome()
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
        code = _final_code(outcome, context)
        handled = self._handled.get((labels, code))
        if handled is None:
            handled = self._handled[(labels, code)] = self.metrics.handled.labels(*labels, code)
        handled.inc()
        self._children_of(labels)[3].observe(time.perf_counter() - start)
