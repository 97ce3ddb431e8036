"""Helpers of the order e2e tests (no tests of its own).

``simulator_orders`` looks at the simulator from the outside, the way any TWS API client
would: a second, plain ib_insync connection asking for every client's open orders and
the completed orders.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from ibgateway.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from ibgateway_server.ib.insync import IB, Trade
from tws_simulator import TwsSimulator

ACCOUNT = "DU1234567"  # the simulator's default paper account
AAPL_CON_ID = 265598

_observer_ids = itertools.count(900)


def order_request(
    client_order_id: str,
    order_type: orders_pb2.OrderType.ValueType,
    *,
    side: orders_pb2.OrderSide.ValueType = orders_pb2.ORDER_SIDE_BUY,
    quantity: str = "1",
    contract: common_pb2.Contract | None = None,
    limit_price: str = "",
    stop_price: str = "",
    trailing_amount: str = "",
    trailing_percent: str = "",
    **fields: Any,
) -> orders_pb2.PlaceOrderRequest:
    """A PlaceOrderRequest for AAPL (unless ``contract``); empty prices are left unset."""
    req = orders_pb2.PlaceOrderRequest(
        client_order_id=client_order_id,
        contract=contract if contract is not None else common_pb2.Contract(symbol="AAPL"),
        side=side,
        order_type=order_type,
        quantity=common_pb2.Decimal(value=quantity),
        **fields,
    )
    for name, value in (
        ("limit_price", limit_price),
        ("stop_price", stop_price),
        ("trailing_amount", trailing_amount),
        ("trailing_percent", trailing_percent),
    ):
        if value:
            getattr(req, name).value = value
    return req


async def get_order(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, key: str | int
) -> orders_pb2.Order:
    order_key = (
        orders_pb2.OrderKey(client_order_id=key)
        if isinstance(key, str)
        else orders_pb2.OrderKey(order_id=key)
    )
    reply = await stub.GetOrder(orders_pb2.GetOrderRequest(order=order_key), timeout=10)
    return reply.order


async def wait_for_order(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
    key: str | int,
    predicate: Callable[[orders_pb2.Order], bool],
    *,
    within: float = 10.0,
) -> orders_pb2.Order:
    """Poll GetOrder until ``predicate`` holds; fails with the last state seen."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        order = await get_order(stub, key)
        if predicate(order):
            return order
        if loop.time() >= end:
            raise AssertionError(f"order {key!r} never reached the expected state: {order}")
        await asyncio.sleep(0.02)


async def simulator_orders(sim: TwsSimulator, order_ref: str | None = None) -> list[Trade]:
    """Every order the simulator holds (open ones of all clients and completed ones), as a
    separate plain ib_insync client sees them; only those with ``order_ref`` if given."""
    ib = IB()
    await ib.connectAsync(sim.host, sim.port, clientId=next(_observer_ids), timeout=5)
    try:
        open_orders = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), 5)
        completed = await asyncio.wait_for(ib.reqCompletedOrdersAsync(False), 5)
    finally:
        ib.disconnect()
    trades = list(open_orders) + list(completed)
    if order_ref is not None:
        trades = [t for t in trades if t.order.orderRef == order_ref]
    return trades


def perm_ids(trades: list[Trade]) -> set[int]:
    return {t.order.permId for t in trades}
