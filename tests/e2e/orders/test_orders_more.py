"""ModifyOrder, PreviewOrder, CancelAllOrders and ListExecutions end to end: a real gateway
over the real simulator, real ib_insync, real gRPC; the simulator's side is checked with a
separate plain ib_insync client."""

from __future__ import annotations

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
    simulator_orders,
    wait_for_order,
)
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)

LMT = orders_pb2.ORDER_TYPE_LIMIT
MKT = orders_pb2.ORDER_TYPE_MARKET


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def far_below(sim: TwsSimulator, factor: float = 0.5) -> str:
    """A buy limit far below the market: it rests until cancelled."""
    return f"{sim.market.quote(AAPL_CON_ID).bid * factor:.2f}"


async def working_in_simulator(sim: TwsSimulator) -> list[str]:
    """The orderRefs of the orders the simulator still works, as a plain client sees them."""
    done = {"Cancelled", "ApiCancelled", "Filled", "Inactive"}
    return [
        t.order.orderRef for t in await simulator_orders(sim) if t.orderStatus.status not in done
    ]


def by_key(key: str) -> orders_pb2.OrderKey:
    return orders_pb2.OrderKey(client_order_id=key)


def dec(value: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=value)


async def place_resting(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, sim: TwsSimulator, key: str, **kw: Any
) -> orders_pb2.Order:
    reply = await stub.PlaceOrder(
        order_request(key, LMT, quantity="5", limit_price=far_below(sim), **kw), timeout=10
    )
    assert reply.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    return reply.order


async def fill_market(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, key: str, quantity: str, **kw: Any
) -> orders_pb2.Order:
    await stub.PlaceOrder(order_request(key, MKT, quantity=quantity, **kw), timeout=10)
    return await wait_for_order(
        stub,
        key,
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )


# ---------------------------------------------------------------------- ModifyOrder


async def test_modify_price_and_quantity_in_place(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    placed = await place_resting(stub, simulator, "mod-1")
    new_price = far_below(simulator, 0.6)
    assert new_price != placed.limit_price.value
    reply = await stub.ModifyOrder(
        orders_pb2.ModifyOrderRequest(
            order=by_key("mod-1"),
            quantity=dec("7"),
            limit_price=dec(new_price),
            time_in_force=orders_pb2.TIME_IN_FORCE_GTC,
        ),
        timeout=10,
    )
    order = reply.order
    assert order.order_id == placed.order_id and order.perm_id == placed.perm_id
    assert order.client_order_id == "mod-1"  # the idempotency key stays
    assert order.quantity.value == "7"
    assert Decimal(order.limit_price.value) == Decimal(new_price)
    assert order.time_in_force == orders_pb2.TIME_IN_FORCE_GTC
    assert order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    got = await get_order(stub, placed.order_id)
    assert got.quantity.value == "7" and Decimal(got.limit_price.value) == Decimal(new_price)
    # TWS (the simulator) holds one order, with the new terms.
    [seen] = await simulator_orders(simulator, "mod-1")
    assert seen.order.permId == placed.perm_id
    assert Decimal(repr(seen.order.totalQuantity)) == 7
    assert Decimal(repr(seen.order.lmtPrice)) == Decimal(new_price)
    # A retry of the original PlaceOrder now differs from the order: the key is bound.
    err = await expect_error(
        stub.PlaceOrder(
            order_request("mod-1", LMT, quantity="5", limit_price=placed.limit_price.value),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS


async def test_modify_filled_order_is_failed_precondition(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    await fill_market(stub, "mod-filled", "2")
    err = await expect_error(
        stub.ModifyOrder(
            orders_pb2.ModifyOrderRequest(order=by_key("mod-filled"), quantity=dec("3")),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.info is not None and err.info.reason == "ORDER_ALREADY_FILLED"


async def test_modify_with_invalid_price(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    placed = await place_resting(stub, simulator, "mod-bad")
    # Off the tick grid: TWS answers 110; the order keeps working on its old terms.
    err = await expect_error(
        stub.ModifyOrder(
            orders_pb2.ModifyOrderRequest(order=by_key("mod-bad"), limit_price=dec("100.123")),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.metadata["ib_code"] == "110"
    got = await get_order(stub, "mod-bad")
    assert got.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert got.limit_price.value == placed.limit_price.value
    [seen] = await simulator_orders(simulator, "mod-bad")
    assert Decimal(repr(seen.order.lmtPrice)) == Decimal(placed.limit_price.value)
    # Validated by the gateway before anything is sent.
    err = await expect_error(
        stub.ModifyOrder(
            orders_pb2.ModifyOrderRequest(
                order=by_key("mod-bad"), limit_price=dec("-1"), stop_price=dec("5")
            ),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"limit_price"}
    err = await expect_error(
        stub.ModifyOrder(
            orders_pb2.ModifyOrderRequest(order=by_key("mod-bad"), stop_price=dec("5")),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"stop_price"}  # a LIMIT order has no stop price


# ---------------------------------------------------------------------- PreviewOrder


async def test_preview_returns_margin_and_commission_and_places_nothing(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    # Read-only mode allows previews: they place nothing.
    gw: Gateway = await make_gateway(read_only=True)
    async with gateway_channel(gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        reply = await stub.PreviewOrder(
            orders_pb2.PreviewOrderRequest(
                contract=common_pb2.Contract(symbol="AAPL"),
                side=orders_pb2.ORDER_SIDE_BUY,
                order_type=LMT,
                quantity=dec("100"),
                limit_price=dec(far_below(simulator, 0.9)),
            ),
            timeout=10,
        )
        assert reply.contract.con_id == AAPL_CON_ID
        assert reply.account_id == ACCOUNT
        for impact in (reply.initial_margin, reply.maintenance_margin, reply.equity_with_loan):
            before, change, after = (
                Decimal(impact.before.value),
                Decimal(impact.change.value),
                Decimal(impact.after.value),
            )
            assert before + change == after
        assert Decimal(reply.initial_margin.change.value) > 0
        assert Decimal(reply.commission.value) >= Decimal("1")
        assert reply.commission_currency == "USD"
        # Unset figures (IB's max double) come back empty, not as 1.79e308.
        assert reply.min_commission.value == "" and reply.max_commission.value == ""
        err = await expect_error(
            stub.PreviewOrder(
                orders_pb2.PreviewOrderRequest(
                    contract=common_pb2.Contract(symbol="AAPL"),
                    side=orders_pb2.ORDER_SIDE_BUY,
                    order_type=LMT,
                    quantity=dec("1"),
                ),
                timeout=10,
            )
        )
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(err.violations) == {"limit_price"}
        listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        assert list(listed.orders) == []
    assert await simulator_orders(simulator) == []
    assert await working_in_simulator(simulator) == []


# ---------------------------------------------------------------------- CancelAllOrders


async def test_cancel_all_of_an_account(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    a = await place_resting(stub, simulator, "ca-1")
    b = await place_resting(stub, simulator, "ca-2")
    await fill_market(stub, "ca-filled", "1")
    reply = await stub.CancelAllOrders(
        orders_pb2.CancelAllOrdersRequest(account_id=ACCOUNT), timeout=10
    )
    assert sorted(o.order_id for o in reply.orders) == sorted([a.order_id, b.order_id])
    assert all(o.status == orders_pb2.ORDER_STATUS_CANCELLED for o in reply.orders)
    assert await working_in_simulator(simulator) == []
    assert (await get_order(stub, "ca-filled")).status == orders_pb2.ORDER_STATUS_FILLED
    again = await stub.CancelAllOrders(
        orders_pb2.CancelAllOrdersRequest(account_id=ACCOUNT), timeout=10
    )
    assert list(again.orders) == []
    err = await expect_error(
        stub.CancelAllOrders(orders_pb2.CancelAllOrdersRequest(account_id="DU0000000"), timeout=10)
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_global_cancel_includes_other_clients(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    other: Gateway = await make_gateway(ibkr_client_id=1)
    async with gateway_channel(other) as ch:
        await place_resting(orders_pb2_grpc.OrderServiceStub(ch), simulator, "gc-other")
    gw: Gateway = await make_gateway(ibkr_client_id=2)
    async with gateway_channel(gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        mine = await place_resting(stub, simulator, "gc-mine")
        assert sorted(await working_in_simulator(simulator)) == ["gc-mine", "gc-other"]
        reply = await stub.CancelAllOrders(orders_pb2.CancelAllOrdersRequest(), timeout=10)
        assert {o.client_order_id for o in reply.orders} == {"gc-other", "gc-mine"}
        assert all(o.status == orders_pb2.ORDER_STATUS_CANCELLED for o in reply.orders)
        assert await working_in_simulator(simulator) == []
        got = await get_order(stub, mine.order_id)
        assert got.status == orders_pb2.ORDER_STATUS_CANCELLED


async def test_cancel_all_refused_in_read_only_mode(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    gw: Gateway = await make_gateway(read_only=True)
    async with gateway_channel(gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        for call in (
            stub.CancelAllOrders(orders_pb2.CancelAllOrdersRequest(), timeout=10),
            stub.ModifyOrder(
                orders_pb2.ModifyOrderRequest(order=by_key("x"), quantity=dec("1")), timeout=10
            ),
        ):
            err = await expect_error(call)
            assert err.code == grpc.StatusCode.PERMISSION_DENIED
            assert err.info is not None and err.info.reason == "READ_ONLY_MODE"


# ---------------------------------------------------------------------- ListExecutions


async def test_list_executions_with_filters(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    first = await fill_market(stub, "ex-1", "3")
    second = await fill_market(stub, "ex-2", "2", side=orders_pb2.ORDER_SIDE_SELL)
    reply = await stub.ListExecutions(orders_pb2.ListExecutionsRequest(), timeout=10)
    by_order = {e.client_order_id: e for e in reply.executions}
    assert set(by_order) == {"ex-1", "ex-2"}
    assert len(reply.executions) == len(first.fills) + len(second.fills)
    ex1, ex2 = by_order["ex-1"], by_order["ex-2"]
    assert ex1.order_id == first.order_id and ex1.perm_id == first.perm_id
    assert ex1.side == orders_pb2.ORDER_SIDE_BUY and ex2.side == orders_pb2.ORDER_SIDE_SELL
    assert ex1.account_id == ACCOUNT and ex1.contract.con_id == AAPL_CON_ID
    assert ex1.fill.execution_id == first.fills[0].execution_id
    assert ex1.fill.commission.value and ex1.fill.commission_currency == "USD"
    times = [e.fill.execution_time.ToNanoseconds() for e in reply.executions]
    assert times == sorted(times)

    async def ids(**kw: Any) -> list[str]:
        got = await stub.ListExecutions(orders_pb2.ListExecutionsRequest(**kw), timeout=10)
        return [e.client_order_id for e in got.executions]

    assert set(await ids(account_id=ACCOUNT, symbol="aapl")) == {"ex-1", "ex-2"}
    assert await ids(symbol="MSFT") == []
    # At or after: IB's execution times have whole seconds, so both fills may share one.
    since = first.fills[0].execution_time
    assert sorted(await ids(since_time=since)) == ["ex-1"] * len(first.fills) + ["ex-2"] * len(
        second.fills
    )
    later = type(since)(seconds=max(times) // 10**9 + 1)
    assert await ids(since_time=later) == []
    err = await expect_error(
        stub.ListExecutions(orders_pb2.ListExecutionsRequest(account_id="DU0000000"), timeout=10)
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
