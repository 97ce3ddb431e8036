"""OrderBook idempotency logic without TWS: a scripted stand-in for the session and IB.

The stand-in answers like TWS does through ib_insync (status changes on the Trade, error
events with the order id); the e2e tests run the same book over the real simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import grpc
import pytest
from eventkit import Event

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.api import order_requests
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import Contract, Fill, Order, OrderStatus, Trade, TradeLogEntry
from ibgateway_server.ib.session import IbSession, SessionEvent, SessionState, StateChange
from ibgateway_server.orders import ib_orders
from ibgateway_server.orders.book import OrderBook
from ibgateway_server.orders.intent import OrderIntent

T = TypeVar("T")
CLIENT_ID = 1


class ScriptedIB:
    """What the book uses of ib_insync's IB, answering placeOrder as scripted."""

    def __init__(self) -> None:
        self.errorEvent = Event("errorEvent")
        self.openOrderEvent = Event("openOrderEvent")
        self.orderStatusEvent = Event("orderStatusEvent")
        self.execDetailsEvent = Event("execDetailsEvent")
        self.commissionReportEvent = Event("commissionReportEvent")
        self.wrapper = type("Wrapper", (), {})()
        self.wrapper.trades = {}
        self.placed: list[Trade] = []
        self.cancelled: list[Order] = []
        self.next_id = 10
        self.next_perm = 5000
        # "ack", "reject:<code>" (ib_insync cancels the trade), "warn:<code>" (error
        # event only, as ib_insync does for 110), or "silent" (no answer at all).
        self.answer = "ack"

    def trades(self) -> list[Trade]:
        return list(self.wrapper.trades.values())

    def fills(self) -> list[Fill]:
        return []

    def placeOrder(self, contract: Contract, order: Order) -> Trade:
        order.orderId, order.clientId = self.next_id, CLIENT_ID
        self.next_id += 1
        trade = Trade(
            contract=contract,
            order=order,
            orderStatus=OrderStatus(orderId=order.orderId, status="PendingSubmit"),
            log=[TradeLogEntry(datetime.now(UTC), "PendingSubmit", "")],
        )
        self.wrapper.trades[(CLIENT_ID, order.orderId)] = trade
        self.placed.append(trade)
        answer = self.answer
        asyncio.get_running_loop().call_later(0.01, self._answer, trade, answer)
        return trade

    def _answer(self, trade: Trade, answer: str) -> None:
        if answer == "ack":
            self.acknowledge(trade)
        elif answer.startswith(("reject:", "warn:")):
            kind, code = answer.split(":")
            text = f"refused with {code}"
            if kind == "reject":
                trade.orderStatus.status = "Cancelled"
                trade.log.append(
                    TradeLogEntry(
                        datetime.now(UTC), "Cancelled", f"Error {code}: {text}", int(code)
                    )
                )
                self.orderStatusEvent.emit(trade)
                trade.statusEvent.emit(trade)
            self.errorEvent.emit(trade.order.orderId, int(code), text, trade.contract)

    def acknowledge(self, trade: Trade, status: str = "Submitted") -> None:
        self.next_perm += 1
        trade.order.permId = trade.orderStatus.permId = self.next_perm
        trade.orderStatus.status = status
        self.orderStatusEvent.emit(trade)
        trade.statusEvent.emit(trade)

    def cancelOrder(self, order: Order) -> None:
        self.cancelled.append(order)

    async def reqAllOpenOrdersAsync(self) -> list[Trade]:
        return []


class ScriptedSession:
    """The IbSession surface the book uses."""

    def __init__(self, ib: ScriptedIB, timeout: float = 1.0) -> None:
        self.ib = ib
        self.client_id = CLIENT_ID
        self.timeout = timeout
        self.connected = True
        self.accounts = ["DU1234567"]
        self.listeners: list[Callable[[StateChange], None]] = []

    def add_state_listener(self, listener: Callable[[StateChange], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def budget(self, context: object = None) -> float:
        return self.timeout

    def require_connected(self) -> None:
        if not self.connected:
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, "NOT_CONNECTED", "not connected")

    async def qualify(self, contract: Contract, *, context: object = None) -> Contract:
        return Contract(conId=265598, symbol=contract.symbol, secType="STK", exchange="SMART",
                        currency="USD")  # fmt: skip

    async def request(self, factory: Callable[[], Awaitable[T]], **_: Any) -> T:
        return await factory()

    async def shared(self, key: str, factory: Callable[[], Awaitable[T]], **_: Any) -> T:
        return await factory()

    def emit(self, event: SessionEvent, state: SessionState) -> None:
        for listener in list(self.listeners):
            listener(StateChange(event=event, state=state, message=event.value))


def intent(key: str = "k1", quantity: str = "10") -> tuple[OrderIntent, Contract, Order]:
    req = orders_pb2.PlaceOrderRequest(
        client_order_id=key,
        contract=common_pb2.Contract(symbol="AAPL"),
        side=orders_pb2.ORDER_SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_LIMIT,
        quantity=common_pb2.Decimal(value=quantity),
        limit_price=common_pb2.Decimal(value="150.1"),
    )
    validated = order_requests.validate_place_order(req)
    return validated, Contract(symbol="AAPL"), ib_orders.build_ib_order(validated, "DU1")


async def make_book(ib_timeout: float = 1.0) -> tuple[OrderBook, ScriptedIB, ScriptedSession]:
    ib = ScriptedIB()
    session = ScriptedSession(ib, ib_timeout)
    book = OrderBook(cast(IbSession, session))
    book.start()  # connected: indexes at once, then loads other clients' orders
    await book.wait_synced(1)
    return book, ib, session


async def test_new_key_places_and_waits_for_the_acknowledgement() -> None:
    book, ib, _ = await make_book()
    placement = await book.place(*intent())
    assert not placement.replayed
    assert len(ib.placed) == 1
    assert placement.entry.status == "Submitted" and placement.entry.perm_id > 0
    assert book.find("k1") is placement.entry
    assert book.find(placement.entry.order_id) is placement.entry


async def test_retry_is_replayed_without_placing() -> None:
    book, ib, _ = await make_book()
    first = await book.place(*intent())
    again = await book.place(*intent())
    assert again.replayed and again.entry is first.entry
    assert len(ib.placed) == 1


async def test_concurrent_calls_with_one_key_place_once() -> None:
    book, ib, _ = await make_book()
    results = await asyncio.gather(*[book.place(*intent()) for _ in range(10)])
    assert len(ib.placed) == 1
    assert [r.replayed for r in results].count(False) == 1
    assert len({id(r.entry) for r in results}) == 1
    assert not book._locks  # per-key locks are dropped once nobody waits


async def test_concurrent_calls_with_different_keys_do_not_wait_for_each_other() -> None:
    book, ib, _ = await make_book()
    ib.answer = "silent"
    slow = asyncio.create_task(book.place(*intent("slow")))
    await asyncio.sleep(0.02)
    ib.answer = "ack"
    fast = await asyncio.wait_for(book.place(*intent("fast")), 0.5)
    assert not fast.replayed
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_same_key_other_order_is_already_exists() -> None:
    book, ib, _ = await make_book()
    await book.place(*intent(quantity="10"))
    with pytest.raises(GatewayError) as caught:
        await book.place(*intent(quantity="11"))
    err = caught.value
    assert err.code is grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "CLIENT_ORDER_ID_REUSED"
    assert err.metadata["differing_fields"] == "quantity"
    assert len(ib.placed) == 1


async def test_refused_order_frees_its_key() -> None:
    book, ib, _ = await make_book()
    ib.answer = "reject:201"
    with pytest.raises(GatewayError) as caught:
        await book.place(*intent())
    err = caught.value
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert (err.reason, err.ib_code) == ("ORDER_REJECTED", 201)
    assert err.metadata["client_order_id"] == "k1"
    assert book.entries() == []  # TWS created nothing
    ib.answer = "ack"
    retry = await book.place(*intent())
    assert not retry.replayed and len(ib.placed) == 2


async def test_invalid_price_warning_is_a_refusal() -> None:
    # ib_insync treats 110 as a warning and leaves the trade pending.
    book, ib, _ = await make_book()
    ib.answer = "warn:110"
    with pytest.raises(GatewayError) as caught:
        await book.place(*intent())
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.ib_code == 110
    assert ib.placed[0].orderStatus.status == "PendingSubmit"
    assert book.entries() == []


async def test_informational_messages_do_not_refuse() -> None:
    book, ib, _ = await make_book()
    ib.answer = "warn:399"  # "Order message: ..." from TWS
    task = asyncio.create_task(book.place(*intent()))
    await asyncio.sleep(0.05)
    assert not task.done()
    ib.acknowledge(ib.placed[0])
    placement = await task
    assert placement.entry.message == (399, "refused with 399")


async def test_unacknowledged_order_stays_and_the_retry_returns_it() -> None:
    book, ib, _ = await make_book(ib_timeout=0.05)
    ib.answer = "silent"
    with pytest.raises(GatewayError) as caught:
        await book.place(*intent())
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == "ORDER_NOT_ACKNOWLEDGED"
    assert book.find("k1").status == "PendingSubmit"
    ib.acknowledge(ib.placed[0])
    retry = await book.place(*intent())
    assert retry.replayed and retry.entry.status == "Submitted"
    assert len(ib.placed) == 1


async def test_rebuild_after_reconnect() -> None:
    book, ib, session = await make_book()
    acked = (await book.place(*intent("acked"))).entry
    ib.answer = "silent"
    session.timeout = 0.02
    with pytest.raises(GatewayError):
        await book.place(*intent("in-flight"))
    # The connection drops: ib_insync forgets every trade; TWS reports what it has.
    session.connected = False
    session.emit(SessionEvent.DISCONNECTED, SessionState.RECONNECTING)
    ib.wrapper.trades = {}
    from_tws = Trade(
        contract=acked.trade.contract,
        order=Order(
            orderId=acked.order_id,
            clientId=CLIENT_ID,
            permId=acked.perm_id,
            action="BUY",
            totalQuantity=10.0,
            orderType="LMT",
            lmtPrice=150.1,
            tif="DAY",
            account="DU1",
            orderRef="acked",
        ),
        orderStatus=OrderStatus(orderId=acked.order_id, status="Filled", permId=acked.perm_id),
    )
    elsewhere = Trade(
        contract=acked.trade.contract,
        order=Order(
            orderId=3,
            clientId=2,
            permId=777,
            action="SELL",
            totalQuantity=1.0,
            orderType="MKT",
            orderRef="placed-elsewhere",
        ),
        orderStatus=OrderStatus(orderId=3, status="Submitted", permId=777),
    )
    ib.wrapper.trades = {(CLIENT_ID, acked.order_id): from_tws, (2, 3): elsewhere}
    session.connected = True
    session.emit(SessionEvent.CONNECTED, SessionState.CONNECTED)
    await book.wait_synced(1)
    rebuilt = book.find("acked")
    assert rebuilt.trade is from_tws and rebuilt.status == "Filled"
    assert rebuilt.create_time == acked.create_time  # the same order, as first seen
    assert book.find("placed-elsewhere").perm_id == 777
    # TWS never got the in-flight order: its key is free again.
    with pytest.raises(GatewayError) as caught:
        book.find("in-flight")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    session.timeout = 1.0
    ib.answer = "ack"
    assert not (await book.place(*intent("in-flight"))).replayed
    # A retry of the rebuilt order is recognised as the same order.
    assert (await book.place(*intent("acked"))).replayed


async def test_place_waits_for_the_rebuild() -> None:
    book, _, session = await make_book()
    session.emit(SessionEvent.DISCONNECTED, SessionState.RECONNECTING)
    session.connected = False
    with pytest.raises(GatewayError) as caught:
        await book.wait_synced(0.01)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_cancel_of_a_finished_order_is_failed_precondition() -> None:
    book, ib, _ = await make_book()
    entry = (await book.place(*intent())).entry
    entry.trade.orderStatus.status = "Filled"
    with pytest.raises(GatewayError) as caught:
        await book.cancel("k1")
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "ORDER_ALREADY_FILLED"
    assert ib.cancelled == []


async def test_cancel_waits_for_the_confirmation() -> None:
    book, ib, _ = await make_book()
    entry = (await book.place(*intent())).entry

    def confirm() -> None:
        entry.trade.orderStatus.status = "Cancelled"
        entry.trade.statusEvent.emit(entry.trade)

    asyncio.get_running_loop().call_later(0.02, confirm)
    cancelled = await book.cancel("k1")
    assert cancelled.entry.status == "Cancelled" and not cancelled.already_cancelled
    assert ib.cancelled == [entry.trade.order]
