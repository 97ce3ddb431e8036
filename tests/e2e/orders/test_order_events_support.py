"""Helpers of the StreamOrderEvents e2e tests (no tests of its own).

:class:`EventReader` reads one StreamOrderEvents call in the background, the way a
consumer would, so that a test can wait for messages with a timeout without cancelling
the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration

from ibgateway.v1 import orders_pb2, orders_pb2_grpc
from tests.e2e.orders.test_orders_support import AAPL_CON_ID, order_request
from tws_simulator import TwsSimulator

Response = orders_pb2.StreamOrderEventsResponse
OrderEvent = orders_pb2.OrderEvent

ACKNOWLEDGED = orders_pb2.ORDER_EVENT_TYPE_ACKNOWLEDGED
STATUS_CHANGED = orders_pb2.ORDER_EVENT_TYPE_STATUS_CHANGED
FILLED = orders_pb2.ORDER_EVENT_TYPE_FILLED
COMMISSION = orders_pb2.ORDER_EVENT_TYPE_COMMISSION
REJECTED = orders_pb2.ORDER_EVENT_TYPE_REJECTED
MODIFIED = orders_pb2.ORDER_EVENT_TYPE_MODIFIED

MKT = orders_pb2.ORDER_TYPE_MARKET
LMT = orders_pb2.ORDER_TYPE_LIMIT


def stream_request(
    *,
    after_sequence: int = 0,
    epoch: str = "",
    account_id: str = "",
    heartbeat: float | None = None,
) -> orders_pb2.StreamOrderEventsRequest:
    request = orders_pb2.StreamOrderEventsRequest(
        after_sequence=after_sequence, epoch=epoch, account_id=account_id
    )
    if heartbeat is not None:
        interval = Duration()
        interval.FromNanoseconds(int(heartbeat * 1e9))
        request.heartbeat_interval.CopyFrom(interval)
    return request


def type_name(event_type: int) -> str:
    return orders_pb2.OrderEventType.Name(event_type).removeprefix("ORDER_EVENT_TYPE_")  # type: ignore[arg-type]


def kinds(events: list[OrderEvent]) -> list[str]:
    return [type_name(e.type) for e in events]


class EventReader:
    """One StreamOrderEvents call, read by a background task into a queue."""

    def __init__(
        self,
        stub: orders_pb2_grpc.OrderServiceAsyncStub,
        request: orders_pb2.StreamOrderEventsRequest | None = None,
    ) -> None:
        self.call: Any = stub.StreamOrderEvents(request or stream_request())
        self.received: list[Response] = []  # everything, in order
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = False
        self._queue: asyncio.Queue[Response | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for message in self.call:
                self.received.append(message)
                self._queue.put_nowait(message)
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        except asyncio.CancelledError:
            pass
        finally:
            self.ended = True
            self._queue.put_nowait(None)

    async def next(self, within: float = 10.0) -> Response | None:
        """The next message; None once the stream has ended."""
        return await asyncio.wait_for(self._queue.get(), within)

    async def next_event(self, within: float = 10.0) -> OrderEvent:
        """The next order event, skipping heartbeats and connection-state messages."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            message = await self.next(max(0.0, end - loop.time()))
            if message is None:
                raise AssertionError(f"the stream ended: {self.error!r}")
            if message.WhichOneof("event") == "order_event":
                return message.order_event

    async def events_until(
        self, done: Callable[[list[OrderEvent]], bool], within: float = 10.0
    ) -> list[OrderEvent]:
        """Order events until ``done(events so far)`` holds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        events: list[OrderEvent] = []
        while not done(events):
            remaining = end - loop.time()
            try:
                events.append(await self.next_event(max(0.0, remaining)))
            except TimeoutError:
                raise AssertionError(f"gave up after {kinds(events)}") from None
        return events

    async def next_of(self, kind: str, within: float = 10.0) -> Response:
        """The next message whose oneof is ``kind`` (skipping the others)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            message = await self.next(max(0.0, end - loop.time()))
            if message is None:
                raise AssertionError(f"the stream ended before a {kind}: {self.error!r}")
            if message.WhichOneof("event") == kind:
                return message

    async def finished(self, within: float = 5.0) -> grpc.StatusCode:
        """Wait for the end of the stream; its status code."""
        await asyncio.wait_for(asyncio.shield(self._task), within)
        code: grpc.StatusCode = await self.call.code()
        return code

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def open_reader(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
    request: orders_pb2.StreamOrderEventsRequest | None = None,
) -> EventReader:
    """A "from now on" stream that is surely registered: its first heartbeat (after 0.1 s
    of silence) has arrived, so no event placed afterwards can slip past it."""
    reader = EventReader(stub, request or stream_request(heartbeat=0.1))
    await reader.next_of("heartbeat", within=5)
    return reader


def of_order(events: list[OrderEvent], client_order_id: str) -> list[OrderEvent]:
    return [e for e in events if e.order.client_order_id == client_order_id]


def market_order_done(client_order_id: str) -> Callable[[list[OrderEvent]], bool]:
    """Done once the order is filled and every fill's commission was reported."""

    def done(events: list[OrderEvent]) -> bool:
        mine = of_order(events, client_order_id)
        filled = {e.fill.execution_id for e in mine if e.type == FILLED}
        commissioned = {e.fill.execution_id for e in mine if e.type == COMMISSION}
        final = any(e.order.status == orders_pb2.ORDER_STATUS_FILLED for e in mine)
        return final and bool(filled) and filled == commissioned

    return done


async def place_market(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, client_order_id: str, quantity: str = "10"
) -> orders_pb2.Order:
    reply = await stub.PlaceOrder(
        order_request(client_order_id, MKT, quantity=quantity), timeout=10
    )
    return reply.order


def resting_limit(sim: TwsSimulator) -> str:
    """A buy limit far below the market: it rests until cancelled (or the market falls)."""
    return f"{sim.market.quote(AAPL_CON_ID).bid * 0.5:.2f}"


async def place_resting_limit(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, sim: TwsSimulator, client_order_id: str
) -> orders_pb2.Order:
    reply = await stub.PlaceOrder(
        order_request(client_order_id, LMT, quantity="5", limit_price=resting_limit(sim)),
        timeout=10,
    )
    return reply.order
