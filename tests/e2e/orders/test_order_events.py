"""StreamOrderEvents end to end: a real gateway over the real simulator, real ib_insync,
real gRPC. The events of market, limit, cancelled and rejected orders; several streams;
the account filter; heartbeats; read-only mode. Resuming, gaps, cancellation, shutdown
and reconnects are in test_order_events_resume.py.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from ibgateway_server.ib.insync import IB, LimitOrder, MarketOrder, Stock
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel
from tests.e2e.orders.test_order_events_support import (
    ACKNOWLEDGED,
    COMMISSION,
    FILLED,
    MODIFIED,
    REJECTED,
    STATUS_CHANGED,
    EventReader,
    kinds,
    market_order_done,
    of_order,
    open_reader,
    place_market,
    place_resting_limit,
    stream_request,
)
from tests.e2e.orders.test_orders_support import AAPL_CON_ID, ACCOUNT, order_request
from tests.polling import wait_until
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


async def test_market_order_events_in_sequence(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    reader = await open_reader(stub)
    placed = await place_market(stub, "ev-mkt", quantity="10")
    events = await reader.events_until(market_order_done("ev-mkt"))
    await reader.close()

    # TWS's order: acknowledged, the execution, the status, the commission report.
    assert kinds(events) == ["ACKNOWLEDGED", "FILLED", "STATUS_CHANGED", "COMMISSION"]
    first = events[0].sequence
    assert first >= 1
    assert [e.sequence for e in events] == list(range(first, first + len(events)))
    assert gateway.order_book is not None
    assert {e.epoch for e in events} == {gateway.order_book.events.epoch}
    assert all(e.event_time.seconds > 0 for e in events)
    for event in events:
        order = event.order
        assert order.client_order_id == "ev-mkt"
        assert order.order_id == placed.order_id and order.perm_id == placed.perm_id
        assert order.account_id == ACCOUNT and order.contract.symbol == "AAPL"

    ack, fill, status, commission = events
    assert ack.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert ack.order.filled_quantity.value == "0" and not ack.HasField("fill")
    assert fill.fill.execution_id and fill.fill.quantity.value == "10"
    assert Decimal(fill.fill.price.value) > 0
    assert fill.order.filled_quantity.value == "10"
    assert status.order.status == orders_pb2.ORDER_STATUS_FILLED
    assert commission.fill.execution_id == fill.fill.execution_id
    assert Decimal(commission.fill.commission.value) >= 1
    assert commission.order.total_commission.value == commission.fill.commission.value
    assert not any(e.ib_code or e.message for e in events)


async def test_limit_order_then_cancel(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    reader = await open_reader(stub)
    await place_resting_limit(stub, simulator, "ev-lmt")
    ack = await reader.next_event()
    assert ack.type == ACKNOWLEDGED
    assert ack.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert ack.order.limit_price.value and ack.order.remaining_quantity.value == "5"

    await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order=orders_pb2.OrderKey(client_order_id="ev-lmt")),
        timeout=10,
    )
    events = await reader.events_until(
        lambda evs: any(e.order.status == orders_pb2.ORDER_STATUS_CANCELLED for e in evs)
    )
    await reader.close()
    assert all(e.type == STATUS_CHANGED for e in events)
    # PendingCancel (the gateway asked), then Cancelled with TWS's 202.
    assert [e.order.status for e in events] == [
        orders_pb2.ORDER_STATUS_PENDING_CANCEL,
        orders_pb2.ORDER_STATUS_CANCELLED,
    ]
    cancelled = events[-1]
    assert cancelled.ib_code == 202 and "Cancel" in cancelled.message
    assert cancelled.order.remaining_quantity.value == "0"
    assert [e.sequence for e in events] == [ack.sequence + 1, ack.sequence + 2]


@pytest.mark.parametrize("how", ["injected", "buying_power"])
async def test_rejection_is_one_rejected_event(
    how: str, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    reader = await open_reader(stub)
    quantity = "1"
    if how == "injected":
        simulator.faults.reject_order()
    else:
        quantity = "10000000"  # far beyond the paper account's buying power
    err = await expect_error(
        stub.PlaceOrder(order_request("ev-rej", orders_pb2.ORDER_TYPE_MARKET, quantity=quantity))
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    rejected = await reader.next_event()
    assert rejected.type == REJECTED
    assert rejected.ib_code == 201 and rejected.message.startswith("Order rejected")
    assert rejected.order.client_order_id == "ev-rej" and rejected.order.ib_code == 201
    assert rejected.order.status == orders_pb2.ORDER_STATUS_CANCELLED

    # Nothing else about it follows: the next event is the next order's.
    await place_market(stub, "ev-after")
    following = await reader.next_event()
    await reader.close()
    assert following.order.client_order_id == "ev-after"
    assert following.type == ACKNOWLEDGED and following.sequence == rejected.sequence + 1


async def test_two_streams_see_the_same_sequence(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    one, two = await open_reader(stub), await open_reader(stub)
    await place_market(stub, "ev-a")
    await place_market(stub, "ev-b")
    done_a, done_b = market_order_done("ev-a"), market_order_done("ev-b")
    seen = [await r.events_until(lambda e: done_a(e) and done_b(e)) for r in (one, two)]
    await one.close()
    await two.close()
    assert [e.SerializeToString() for e in seen[0]] == [e.SerializeToString() for e in seen[1]]
    sequences = [e.sequence for e in seen[0]]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert len(of_order(seen[0], "ev-a")) == len(of_order(seen[0], "ev-b")) == 4


async def test_account_filter(stub: orders_pb2_grpc.OrderServiceAsyncStub) -> None:
    mine = await open_reader(stub, stream_request(account_id=ACCOUNT, heartbeat=0.1))
    await place_market(stub, "ev-acct")
    events = await mine.events_until(market_order_done("ev-acct"))
    await mine.close()
    assert {e.order.account_id for e in events} == {ACCOUNT}

    err = await expect_error(stub.StreamOrderEvents(stream_request(account_id="DU0000000")).read())
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.reason == "UNKNOWN_ACCOUNT"
    assert "account_id" in err.violations


async def test_heartbeats_and_their_bounds(stub: orders_pb2_grpc.OrderServiceAsyncStub) -> None:
    reader = EventReader(stub, stream_request(heartbeat=0.2))
    beats = [await reader.next_of("heartbeat", within=3) for _ in range(3)]
    await reader.close()
    times = [b.heartbeat.heartbeat_time.ToNanoseconds() for b in beats]
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    assert all(0.15 <= gap < 1.5 for gap in gaps), gaps
    assert all(m.WhichOneof("event") == "heartbeat" for m in reader.received)  # quiet

    for seconds in (0.01, 7200.0):
        err = await expect_error(stub.StreamOrderEvents(stream_request(heartbeat=seconds)).read())
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "heartbeat_interval" in err.violations


async def test_read_only_gateway_streams_events(
    make_gateway: GatewayFactory, simulator: TwsSimulator
) -> None:
    gw = await make_gateway(read_only=True)
    async with gateway_channel(gw) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        reader = await open_reader(stub)
        assert reader.error is None
        refused = await expect_error(place_market(stub, "ro-1"))
        assert refused.code == grpc.StatusCode.PERMISSION_DENIED
        await reader.close()
        assert [m.WhichOneof("event") for m in reader.received] == ["heartbeat"] * len(
            reader.received
        )


async def test_an_order_placed_elsewhere_is_acknowledged_when_first_seen(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    reader = await open_reader(stub)
    other = IB()  # another API client of the same TWS
    await other.connectAsync(simulator.host, simulator.port, clientId=901, timeout=5)
    try:
        contract = Stock("AAPL", "SMART", "USD")
        await other.qualifyContractsAsync(contract)
        limit = round(simulator.market.quote(AAPL_CON_ID).bid * 0.5, 2)
        trade = other.placeOrder(
            contract, LimitOrder("BUY", 2, limit, orderRef="elsewhere-1", account=ACCOUNT)
        )
        assert await wait_until(lambda: trade.orderStatus.status == "Submitted")
        # TWS tells only the placing client; the gateway sees the order when it asks TWS
        # for every client's orders, e.g. for ListOrders.
        listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        assert "elsewhere-1" in [o.client_order_id for o in listed.orders]
        seen = await reader.next_event()
        assert seen.type == ACKNOWLEDGED and seen.order.client_order_id == "elsewhere-1"
        assert seen.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
        assert seen.order.perm_id == trade.order.permId
        # One that is already filled when first seen: acknowledged, then its execution.
        done = other.placeOrder(
            contract, MarketOrder("BUY", 3, orderRef="elsewhere-2", account=ACCOUNT)
        )
        assert await wait_until(lambda: done.orderStatus.status == "Filled" and done.fills)
        await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        filled = await reader.events_until(lambda evs: len(evs) == 3)
        assert kinds(filled) == ["ACKNOWLEDGED", "FILLED", "COMMISSION"]
        assert {e.order.client_order_id for e in filled} == {"elsewhere-2"}
        assert filled[0].order.status == orders_pb2.ORDER_STATUS_FILLED
        assert filled[1].fill.execution_id == done.fills[0].execution.execId
        # Seen once: asking again says nothing new.
        await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        await place_market(stub, "ev-next")
        assert (await reader.next_event()).order.client_order_id == "ev-next"
    finally:
        other.disconnect()
        await reader.close()


async def test_a_large_order_fills_in_parts_without_noise(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    # The simulator fills at most the displayed size (≤ 2,000 shares) per quote.
    reader = await open_reader(stub)
    await place_market(stub, "ev-big", quantity="6000")
    events = await reader.events_until(market_order_done("ev-big"), within=20)
    await reader.close()
    fills = [e for e in events if e.type == FILLED]
    commissions = [e for e in events if e.type == COMMISSION]
    assert len(fills) >= 3
    assert [e.fill.execution_id for e in commissions] == [e.fill.execution_id for e in fills]
    assert sum(Decimal(e.fill.quantity.value) for e in fills) == 6000
    # Each execution's own status report says nothing new; only the final status does.
    assert [e.order.status for e in events if e.type == STATUS_CHANGED] == [
        orders_pb2.ORDER_STATUS_FILLED
    ]
    filled_so_far = [Decimal(e.order.filled_quantity.value) for e in fills]
    assert filled_so_far == sorted(filled_so_far) and filled_so_far[-1] == 6000
    assert kinds(events)[0] == "ACKNOWLEDGED"


async def test_a_modification_confirmed_by_tws_is_one_modified_event(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    reader = await open_reader(stub)
    await place_resting_limit(stub, simulator, "ev-mod")
    ack = await reader.next_event()
    assert ack.type == ACKNOWLEDGED
    # No ModifyOrder RPC yet: modify it through the gateway's own IB session, as any
    # TWS API client would (placeOrder again with the same order id).
    assert gateway.order_book is not None and gateway.session is not None
    trade = gateway.order_book.find("ev-mod").trade
    new_limit = round(float(ack.order.limit_price.value) - 1, 2)
    trade.order.lmtPrice = new_limit
    gateway.session.ib.placeOrder(trade.contract, trade.order)
    modified = await reader.next_event()
    assert modified.type == MODIFIED and modified.sequence == ack.sequence + 1
    assert Decimal(modified.order.limit_price.value) == Decimal(str(new_limit))
    assert modified.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    # TWS's repeated confirmations say nothing more: the next event is the next order's.
    await place_market(stub, "ev-mod-next")
    following = await reader.next_event()
    await reader.close()
    assert following.order.client_order_id == "ev-mod-next"
