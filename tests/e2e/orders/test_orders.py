"""OrderService end to end: a real gateway over the real simulator, real ib_insync, real gRPC.

Order types to their final state (fills, commissions, partial fills), cancel, GetOrder by
both keys, ListOrders filters, rejections with IB codes. Idempotency, safety and
deadlines are in test_orders_idempotency.py and test_orders_safety.py.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error, gateway_channel
from tests.e2e.orders.test_orders_support import (
    AAPL_CON_ID,
    ACCOUNT,
    get_order,
    order_request,
    wait_for_order,
)
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def total(values: Any) -> Decimal:
    return sum((Decimal(v) for v in values), Decimal(0))


def check_fully_filled(order: orders_pb2.Order, quantity: str) -> None:
    """Filled, with fills adding up and a commission report for every fill."""
    assert order.status == orders_pb2.ORDER_STATUS_FILLED
    assert order.filled_quantity.value == quantity
    assert order.remaining_quantity.value == "0"
    assert order.fills, "a filled order lists its executions"
    assert total(f.quantity.value for f in order.fills) == Decimal(quantity)
    assert all(f.execution_id and f.exchange and f.price.value for f in order.fills)
    assert all(f.commission.value and f.commission_currency == "USD" for f in order.fills)
    assert total(f.commission.value for f in order.fills) == Decimal(order.total_commission.value)
    assert Decimal(order.total_commission.value) >= Decimal("1")  # IB fixed plan: $1 minimum
    value = sum(
        (Decimal(f.quantity.value) * Decimal(f.price.value) for f in order.fills), Decimal(0)
    )
    mean = value / Decimal(quantity)
    assert abs(Decimal(order.average_fill_price.value) - mean) < Decimal("1e-6")
    assert order.update_time.seconds >= order.create_time.seconds > 0


async def test_market_order_fills_with_commissions(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    reply = await stub.PlaceOrder(
        order_request("mkt-1", orders_pb2.ORDER_TYPE_MARKET, quantity="10"), timeout=10
    )
    assert not reply.replayed
    order = reply.order
    assert order.client_order_id == "mkt-1"
    assert order.order_id > 0 and order.perm_id > 0
    assert order.account_id == ACCOUNT
    assert order.contract.con_id == AAPL_CON_ID and order.contract.symbol == "AAPL"
    assert order.side == orders_pb2.ORDER_SIDE_BUY
    assert order.order_type == orders_pb2.ORDER_TYPE_MARKET
    assert order.quantity.value == "10"
    assert order.time_in_force == orders_pb2.TIME_IN_FORCE_DAY
    assert order.limit_price.value == "" and order.stop_price.value == ""
    filled = await wait_for_order(
        stub,
        "mkt-1",
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    check_fully_filled(filled, "10")
    ask = simulator.market.quote(AAPL_CON_ID).ask
    assert abs(Decimal(filled.average_fill_price.value) - Decimal(repr(ask))) < 5


async def test_large_market_order_fills_in_parts(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    # The simulator fills at most the displayed size (≤ 2,000 shares) per quote.
    await stub.PlaceOrder(
        order_request("mkt-big", orders_pb2.ORDER_TYPE_MARKET, quantity="6000"), timeout=10
    )
    seen_partial: list[orders_pb2.Order] = []

    def done(o: orders_pb2.Order) -> bool:
        if o.status == orders_pb2.ORDER_STATUS_SUBMITTED and o.fills:
            seen_partial.append(o)
        return o.status == orders_pb2.ORDER_STATUS_FILLED and all(
            f.commission.value for f in o.fills
        )

    filled = await wait_for_order(stub, "mkt-big", done, within=20)
    check_fully_filled(filled, "6000")
    assert len(filled.fills) >= 3
    if seen_partial:
        partial = seen_partial[0]
        assert Decimal(partial.filled_quantity.value) + Decimal(
            partial.remaining_quantity.value
        ) == Decimal("6000")
        assert Decimal(partial.remaining_quantity.value) > 0


async def test_limit_order_rests_then_cancel(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    bid = simulator.market.quote(AAPL_CON_ID).bid
    limit = f"{bid * 0.5:.2f}"
    reply = await stub.PlaceOrder(
        order_request(
            "lmt-rest",
            orders_pb2.ORDER_TYPE_LIMIT,
            quantity="5",
            limit_price=limit,
            time_in_force=orders_pb2.TIME_IN_FORCE_GTC,
            outside_rth=True,
        ),
        timeout=10,
    )
    order = reply.order
    assert order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert order.limit_price.value == convert_text(limit)
    assert order.time_in_force == orders_pb2.TIME_IN_FORCE_GTC
    assert order.outside_rth
    assert order.filled_quantity.value == "0" and order.remaining_quantity.value == "5"
    assert not order.fills and order.average_fill_price.value == ""

    cancelled = await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order=orders_pb2.OrderKey(client_order_id="lmt-rest")),
        timeout=10,
    )
    assert cancelled.order.status in (
        orders_pb2.ORDER_STATUS_CANCELLED,
        orders_pb2.ORDER_STATUS_PENDING_CANCEL,
    )
    final = await wait_for_order(
        stub, "lmt-rest", lambda o: o.status == orders_pb2.ORDER_STATUS_CANCELLED
    )
    assert final.remaining_quantity.value == "0" and final.filled_quantity.value == "0"
    assert final.ib_code == 202  # TWS's "Order Canceled - reason:"

    # A retry (its first answer lost) learns that the order is cancelled: no error.
    again = await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order=orders_pb2.OrderKey(order_id=order.order_id)),
        timeout=10,
    )
    assert again.already_cancelled
    assert again.order.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert again.order.client_order_id == "lmt-rest"
    first = await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order=orders_pb2.OrderKey(client_order_id="lmt-rest")),
        timeout=10,
    )
    assert first.already_cancelled


def convert_text(price: str) -> str:
    """How the gateway spells a price: plain decimal, no trailing zeros."""
    text = format(Decimal(price), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


async def test_marketable_limit_order_fills(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    ask = simulator.market.quote(AAPL_CON_ID).ask
    await stub.PlaceOrder(
        order_request(
            "lmt-fill", orders_pb2.ORDER_TYPE_LIMIT, quantity="3", limit_price=f"{ask + 5:.2f}"
        ),
        timeout=10,
    )
    filled = await wait_for_order(
        stub,
        "lmt-fill",
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    check_fully_filled(filled, "3")
    assert all(Decimal(f.price.value) <= Decimal(f"{ask + 5:.2f}") for f in filled.fills)


async def test_cancel_filled_order_is_failed_precondition(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    await stub.PlaceOrder(order_request("mkt-done", orders_pb2.ORDER_TYPE_MARKET), timeout=10)
    await wait_for_order(stub, "mkt-done", lambda o: o.status == orders_pb2.ORDER_STATUS_FILLED)
    err = await expect_error(
        stub.CancelOrder(
            orders_pb2.CancelOrderRequest(order=orders_pb2.OrderKey(client_order_id="mkt-done")),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.info is not None and err.info.reason == "ORDER_ALREADY_FILLED"


async def test_cancel_unknown_order_is_not_found(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    for key in (orders_pb2.OrderKey(client_order_id="nope"), orders_pb2.OrderKey(order_id=9999)):
        err = await expect_error(
            stub.CancelOrder(orders_pb2.CancelOrderRequest(order=key), timeout=10)
        )
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert err.info is not None and err.info.reason == "ORDER_NOT_FOUND"


async def test_stop_order_triggers_and_fills(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    mid = simulator.market.quote(AAPL_CON_ID).midpoint
    stop = f"{mid + 10:.2f}"
    reply = await stub.PlaceOrder(
        order_request("stp-1", orders_pb2.ORDER_TYPE_STOP, quantity="4", stop_price=stop),
        timeout=10,
    )
    assert reply.order.status == orders_pb2.ORDER_STATUS_PRE_SUBMITTED  # waiting for its stop
    assert reply.order.stop_price.value == convert_text(stop)
    assert reply.order.order_type == orders_pb2.ORDER_TYPE_STOP
    simulator.market.move_to(AAPL_CON_ID, mid + 15)
    filled = await wait_for_order(
        stub,
        "stp-1",
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    check_fully_filled(filled, "4")


async def test_stop_limit_order_triggers_and_fills(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    mid = simulator.market.quote(AAPL_CON_ID).midpoint
    stop, limit = f"{mid - 10:.2f}", f"{mid - 30:.2f}"
    reply = await stub.PlaceOrder(
        order_request(
            "stplmt-1",
            orders_pb2.ORDER_TYPE_STOP_LIMIT,
            side=orders_pb2.ORDER_SIDE_SELL,
            quantity="2",
            stop_price=stop,
            limit_price=limit,
        ),
        timeout=10,
    )
    order = reply.order
    assert order.status == orders_pb2.ORDER_STATUS_PRE_SUBMITTED
    assert (order.stop_price.value, order.limit_price.value) == (
        convert_text(stop),
        convert_text(limit),
    )
    assert order.side == orders_pb2.ORDER_SIDE_SELL
    simulator.market.move_to(AAPL_CON_ID, mid - 15)
    filled = await wait_for_order(
        stub,
        "stplmt-1",
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    check_fully_filled(filled, "2")
    assert all(Decimal(f.price.value) >= Decimal(limit) for f in filled.fills)


@pytest.mark.parametrize(
    ("key", "offset"),
    [("trail-amt", {"trailing_amount": "1.5"}), ("trail-pct", {"trailing_percent": "1"})],
)
async def test_trailing_stop_follows_and_fills(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
    simulator: TwsSimulator,
    key: str,
    offset: dict[str, Any],
) -> None:
    mid = simulator.market.quote(AAPL_CON_ID).midpoint
    reply = await stub.PlaceOrder(
        order_request(
            key,
            orders_pb2.ORDER_TYPE_TRAILING_STOP,
            side=orders_pb2.ORDER_SIDE_SELL,
            quantity="7",
            **offset,
        ),
        timeout=10,
    )
    order = reply.order
    assert order.order_type == orders_pb2.ORDER_TYPE_TRAILING_STOP
    assert order.status == orders_pb2.ORDER_STATUS_PRE_SUBMITTED
    if "trailing_amount" in offset:
        assert (order.trailing_amount.value, order.trailing_percent.value) == ("1.5", "")
    else:
        assert (order.trailing_amount.value, order.trailing_percent.value) == ("", "1")
    simulator.market.move_to(AAPL_CON_ID, mid - 20)  # far below any trailing stop
    filled = await wait_for_order(
        stub,
        key,
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    check_fully_filled(filled, "7")


async def test_get_order_by_both_keys(stub: orders_pb2_grpc.OrderServiceAsyncStub) -> None:
    placed = (
        await stub.PlaceOrder(order_request("get-me", orders_pb2.ORDER_TYPE_MARKET), timeout=10)
    ).order
    by_key = await get_order(stub, "get-me")
    by_id = await get_order(stub, placed.order_id)
    assert by_key.perm_id == by_id.perm_id == placed.perm_id
    assert by_key.client_order_id == by_id.client_order_id == "get-me"
    err = await expect_error(
        stub.GetOrder(
            orders_pb2.GetOrderRequest(order=orders_pb2.OrderKey(client_order_id="unknown")),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.info is not None and err.info.metadata["client_order_id"] == "unknown"
    bad = await expect_error(stub.GetOrder(orders_pb2.GetOrderRequest(), timeout=10))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "order" in bad.violations


async def test_list_orders_filters(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    bid = simulator.market.quote(AAPL_CON_ID).bid
    await stub.PlaceOrder(
        order_request("list-open", orders_pb2.ORDER_TYPE_LIMIT, limit_price=f"{bid * 0.5:.2f}"),
        timeout=10,
    )
    await stub.PlaceOrder(order_request("list-done", orders_pb2.ORDER_TYPE_MARKET), timeout=10)
    await wait_for_order(stub, "list-done", lambda o: o.status == orders_pb2.ORDER_STATUS_FILLED)

    async def keys(**kw: Any) -> list[str]:
        reply = await stub.ListOrders(orders_pb2.ListOrdersRequest(**kw), timeout=10)
        return [o.client_order_id for o in reply.orders]

    assert await keys() == ["list-open", "list-done"]  # oldest first
    assert await keys(filter=orders_pb2.ORDER_FILTER_OPEN) == ["list-open"]
    assert await keys(filter=orders_pb2.ORDER_FILTER_COMPLETED) == ["list-done"]
    assert await keys(account_id=ACCOUNT) == ["list-open", "list-done"]
    listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
    done = next(o for o in listed.orders if o.client_order_id == "list-done")
    assert done.fills and done.filled_quantity.value == "1"

    err = await expect_error(
        stub.ListOrders(orders_pb2.ListOrdersRequest(account_id="DU0000000"), timeout=10)
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "account_id" in err.violations


async def test_rejections_carry_ib_codes(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    # An injected rejection: 201 → FAILED_PRECONDITION with IB's reason.
    simulator.faults.reject_order()
    err = await expect_error(
        stub.PlaceOrder(order_request("rej-1", orders_pb2.ORDER_TYPE_MARKET), timeout=10)
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.info is not None and err.info.reason == "ORDER_REJECTED"
    assert err.info.domain == "ibgateway"
    assert err.info.metadata["ib_code"] == "201"
    assert err.info.metadata["client_order_id"] == "rej-1"
    assert "Rejected by the simulator" in err.message
    # TWS created nothing, so the key is free: the retry places the order.
    retry = await stub.PlaceOrder(order_request("rej-1", orders_pb2.ORDER_TYPE_MARKET), timeout=10)
    assert not retry.replayed and retry.order.perm_id > 0

    # Insufficient buying power: IB's 201 with its margin text.
    poor = await expect_error(
        stub.PlaceOrder(
            order_request("rej-2", orders_pb2.ORDER_TYPE_MARKET, quantity="1000000"), timeout=10
        )
    )
    assert poor.code == grpc.StatusCode.FAILED_PRECONDITION
    assert poor.info is not None and poor.info.metadata["ib_code"] == "201"
    assert "EQUITY WITH LOAN VALUE" in poor.message

    # A price off the tick grid: 110 → INVALID_ARGUMENT.
    off_tick = await expect_error(
        stub.PlaceOrder(
            order_request("rej-3", orders_pb2.ORDER_TYPE_LIMIT, limit_price="100.123"), timeout=10
        )
    )
    assert off_tick.code == grpc.StatusCode.INVALID_ARGUMENT
    assert off_tick.info is not None and off_tick.info.metadata["ib_code"] == "110"

    # An unknown instrument: 200 → NOT_FOUND, before anything is sent.
    unknown = await expect_error(
        stub.PlaceOrder(
            order_request(
                "rej-4", orders_pb2.ORDER_TYPE_MARKET, contract=common_pb2.Contract(symbol="NOPE")
            ),
            timeout=10,
        )
    )
    assert unknown.code == grpc.StatusCode.NOT_FOUND
    assert unknown.info is not None and unknown.info.metadata["ib_code"] == "200"

    listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
    assert [o.client_order_id for o in listed.orders] == ["rej-1"]  # refused ones left nothing


async def test_validation_errors_over_the_wire(stub: orders_pb2_grpc.OrderServiceAsyncStub) -> None:
    D = common_pb2.Decimal
    cases: list[tuple[orders_pb2.PlaceOrderRequest, set[str]]] = [
        (order_request("", orders_pb2.ORDER_TYPE_MARKET), {"client_order_id"}),
        (order_request("bad key!", orders_pb2.ORDER_TYPE_MARKET), {"client_order_id"}),
        (order_request("v1", orders_pb2.ORDER_TYPE_MARKET, contract=common_pb2.Contract()),
         {"contract.symbol"}),
        (order_request("v2", orders_pb2.ORDER_TYPE_MARKET, side=orders_pb2.ORDER_SIDE_UNSPECIFIED),
         {"side"}),
        (order_request("v3", orders_pb2.ORDER_TYPE_UNSPECIFIED), {"order_type"}),
        (order_request("v4", orders_pb2.ORDER_TYPE_MARKET, quantity="0"), {"quantity"}),
        (order_request("v5", orders_pb2.ORDER_TYPE_MARKET, quantity="-2"), {"quantity"}),
        (order_request("v6", orders_pb2.ORDER_TYPE_MARKET, quantity="1e2"), {"quantity"}),
        (order_request("v7", orders_pb2.ORDER_TYPE_LIMIT), {"limit_price"}),
        (order_request("v8", orders_pb2.ORDER_TYPE_STOP), {"stop_price"}),
        (order_request("v9", orders_pb2.ORDER_TYPE_STOP_LIMIT), {"stop_price", "limit_price"}),
        (order_request("v10", orders_pb2.ORDER_TYPE_TRAILING_STOP), {"trailing_amount"}),
        (order_request("v11", orders_pb2.ORDER_TYPE_TRAILING_STOP, trailing_amount="1",
                       trailing_percent="1"), {"trailing_percent"}),
        (order_request("v12", orders_pb2.ORDER_TYPE_LIMIT, limit_price="0"), {"limit_price"}),
        (order_request("v13", orders_pb2.ORDER_TYPE_MARKET, limit_price="10"), {"limit_price"}),
        (order_request("v14", orders_pb2.ORDER_TYPE_MARKET, time_in_force=9),
         {"time_in_force"}),
        (orders_pb2.PlaceOrderRequest(),
         {"client_order_id", "contract.symbol", "side", "order_type", "quantity"}),
        # The declared field bounds are checked first, alone (api/request_rules.py).
        (orders_pb2.PlaceOrderRequest(quantity=D(value="x")), {"quantity"}),
        (order_request("v15", orders_pb2.ORDER_TYPE_MARKET, quantity="١"), {"quantity"}),
        (order_request("v16", orders_pb2.ORDER_TYPE_MARKET, quantity="9" * 31), {"quantity"}),
        (order_request("v17", orders_pb2.ORDER_TYPE_MARKET, quantity="1.123456789"),
         {"quantity"}),
        (order_request("v18", orders_pb2.ORDER_TYPE_MARKET, side=7),  # type: ignore[arg-type]
         {"side"}),
        (order_request("v19\x00", orders_pb2.ORDER_TYPE_MARKET), {"client_order_id"}),
    ]  # fmt: skip
    for req, fields in cases:
        err = await expect_error(stub.PlaceOrder(req, timeout=10))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, req
        assert err.info is not None
        assert (err.info.reason, err.info.domain) == ("INVALID_ARGUMENT", "ibgateway")
        assert set(err.violations) == fields, (req, err.violations)
        assert all(err.violations.values())
    # An account this login does not manage.
    unknown = await expect_error(
        stub.PlaceOrder(
            order_request("v15", orders_pb2.ORDER_TYPE_MARKET, account_id="DU7654321"), timeout=10
        )
    )
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.info is not None and unknown.info.reason == "UNKNOWN_ACCOUNT"
    assert set(unknown.violations) == {"account_id"}
    listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
    assert not listed.orders


async def test_not_connected_is_unavailable(make_gateway: Any) -> None:
    gw: Gateway = await make_gateway()
    assert gw.session is not None
    await gw.session.disconnect()
    async with gateway_channel(gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        for call in (
            stub.PlaceOrder(order_request("nc-1", orders_pb2.ORDER_TYPE_MARKET), timeout=10),
            stub.GetOrder(
                orders_pb2.GetOrderRequest(order=orders_pb2.OrderKey(order_id=1)), timeout=10
            ),
            stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10),
        ):
            err = await expect_error(call)
            assert err.code == grpc.StatusCode.UNAVAILABLE
            assert err.info is not None and err.info.reason == "NOT_CONNECTED"
            assert "API" in err.message  # names what to check


async def test_concurrent_orders_with_different_keys(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    replies = await asyncio.gather(
        *[
            stub.PlaceOrder(order_request(f"many-{i}", orders_pb2.ORDER_TYPE_MARKET), timeout=10)
            for i in range(8)
        ]
    )
    assert len({r.order.perm_id for r in replies}) == 8
    assert not any(r.replayed for r in replies)
