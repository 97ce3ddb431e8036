"""Calls that need IB: edge → owner over NATS request/reply.

Why NATS request/reply rather than a gRPC channel to the owner: the edge never needs to
know where the owner is (after a failover the same subject reaches the new holder, who
alone subscribes to it), "no responders" tells at once that no owner is serving, and the
request's timeout is the client's own deadline.

The edge sends the request's bytes unchanged, with headers for the client's remaining
deadline and its metadata (``authorization``, any idempotency or request id; the
idempotency key of an order is its ``client_order_id``, inside the request). The owner
replays the call on its own gRPC server (an internal loopback port): every servicer,
validation rule, auth check, metric and error mapping of the all-in-one gateway applies
unchanged, and the reply carries either the response bytes or the ``google.rpc.Status``
(ErrorInfo, BadRequest, RetryInfo), which the edge raises as the same error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import nats.errors
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ibgateway_server.cluster.subjects import Subjects
from ibgateway_server.errors import GatewayError

log = logging.getLogger(__name__)

DEADLINE_HEADER = "Ibgw-Timeout-Ms"
METADATA_HEADER = "Ibgw-Metadata"
STATUS_HEADER = "Ibgw-Status"
REVISION_HEADER = "Ibgw-Lease-Revision"
DEFAULT_TIMEOUT = 30.0  # a call without a deadline waits at most this long for the owner
# metadata that belongs to this hop, not to the caller
_HOP_METADATA = frozenset({"user-agent", "content-type", "te", "grpc-accept-encoding"})
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_to_error(status: status_pb2.Status) -> GatewayError:
    """The GatewayError behind a google.rpc.Status made by the owner (same code, reason,
    metadata, field violations and retry delay)."""
    code = _CODES.get(status.code, grpc.StatusCode.INTERNAL)
    if code in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN):
        code = grpc.StatusCode.INTERNAL
    reason, metadata = "INTERNAL", {}
    violations: list[tuple[str, str]] = []
    retry_after: float | None = None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            retry_after = _seconds(retry.retry_delay)
    ib_code = metadata.pop("ib_code", None)
    return GatewayError(
        code,
        reason,
        status.message,
        ib_code=int(ib_code) if ib_code and ib_code.lstrip("-").isdigit() else None,
        metadata=metadata,
        field_violations=violations,
        retry_after=retry_after,
    )


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def no_owner(detail: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "NO_OWNER",
        f"no gateway owner is serving ({detail}); a standby takes over within the lease time",
        retry_after=1.0,
    )


class Forwarder:
    """The edge's side: one NATS request per forwarded call."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        *,
        revision: Callable[[], int] = lambda: 0,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self._revision = revision  # the newest lease revision the edge has seen

    async def call(
        self,
        method: str,
        request: bytes,
        *,
        within: float | None,
        metadata: list[tuple[str, str]] | None = None,
    ) -> bytes:
        """One call to the owner, waiting at most ``within`` seconds (None: the default):
        a gRPC method (``/pkg.Service/Method``) or a cluster subject."""
        wait = DEFAULT_TIMEOUT if within is None else max(0.0, within)
        headers = {DEADLINE_HEADER: str(int(wait * 1000))}
        if metadata:
            headers[METADATA_HEADER] = json.dumps(metadata)
        subject = method if not method.startswith("/") else self.subjects.rpc(method)
        try:
            reply = await self.nc.request(subject, request, timeout=wait, headers=headers)
        except nats.errors.NoRespondersError:
            raise no_owner("no owner holds the lease") from None
        except nats.errors.TimeoutError:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "OWNER_TIMEOUT",
                f"the gateway owner did not answer within {wait:g}s",
            ) from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
            raise no_owner("NATS connection down") from None
        reply_headers = reply.headers or {}
        revision = int(reply_headers.get(REVISION_HEADER, "0") or 0)
        if revision and revision < self._revision():
            # an owner that lost its lease and does not know it yet: its answer is void
            raise no_owner("a stale owner answered")
        code = int(reply_headers.get(STATUS_HEADER, "0") or 0)
        if code == 0:
            return bytes(reply.data)
        status = status_pb2.Status()
        with contextlib.suppress(Exception):
            status.ParseFromString(reply.data)
        if not status.code:
            status.code = code
        raise status_to_error(status)

    async def handler_call(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        """Forward one gRPC call (raw request bytes) with the client's deadline and
        metadata; returns the raw response bytes or raises the owner's error."""
        metadata = [
            (k, v)
            for k, v in (context.invocation_metadata() or ())
            if isinstance(v, str) and k not in _HOP_METADATA and not k.startswith("grpc-")
        ]
        return await self.call(method, request, within=context.time_remaining(), metadata=metadata)


class RpcBridge:
    """The owner's side: answers forwarded calls by replaying them on its own server.

    Subscribed only while the owner holds the lease; each request runs in its own task
    (a slow PlaceOrder does not hold up a GetQuotes behind it).
    """

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        target: str,
        revision: Callable[[], int],
        on_answer: Callable[[], None] = lambda: None,
    ) -> None:
        self.nc = nc
        self._on_answer = on_answer
        self.subjects = subjects
        self.target = target
        self._revision = revision
        self._channel: grpc.aio.Channel | None = None
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target)
        self._sub = await self.nc.subscribe(self.subjects.rpc_all, cb=self._on_request)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        assert self._channel is not None
        headers = msg.headers or {}
        method = self.subjects.method_of(msg.subject)
        timeout = int(headers.get(DEADLINE_HEADER, "0") or 0) / 1000 or DEFAULT_TIMEOUT
        metadata = tuple(tuple(pair) for pair in json.loads(headers.get(METADATA_HEADER, "[]")))
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(method)
        reply_headers = {REVISION_HEADER: str(self._revision())}
        try:
            data = await call(bytes(msg.data), timeout=timeout, metadata=metadata)
            reply_headers[STATUS_HEADER] = "0"
        except grpc.aio.AioRpcError as exc:
            data = _status_bytes(exc)
            reply_headers[STATUS_HEADER] = str(exc.code().value[0])
        self._on_answer()
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(msg.reply, data, headers=reply_headers)


async def reply_error(nc: NatsClient, msg: Msg, err: GatewayError, revision: int) -> None:
    """Answer a request with a GatewayError (as the edge's :meth:`Forwarder.call` reads it)."""
    headers = {STATUS_HEADER: str(err.code.value[0]), REVISION_HEADER: str(revision)}
    if msg.reply:
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(msg.reply, err.to_status_proto().SerializeToString(), headers=headers)


async def reply_ok(nc: NatsClient, msg: Msg, data: bytes, revision: int) -> None:
    if msg.reply:
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(
                msg.reply, data, headers={STATUS_HEADER: "0", REVISION_HEADER: str(revision)}
            )


def _status_bytes(exc: grpc.aio.AioRpcError) -> bytes:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return value
    return status_pb2.Status(
        code=exc.code().value[0], message=exc.details() or ""
    ).SerializeToString()
