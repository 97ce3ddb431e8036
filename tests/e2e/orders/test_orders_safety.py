"""OrderService safety: read-only mode and live (non-paper) accounts."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from ibgateway.v1 import orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error, gateway_channel
from tests.e2e.orders.test_orders_support import AAPL_CON_ID, order_request, simulator_orders
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)

LMT = orders_pb2.ORDER_TYPE_LIMIT


def resting(sim: TwsSimulator, key: str) -> orders_pb2.PlaceOrderRequest:
    bid = sim.market.quote(AAPL_CON_ID).bid
    return order_request(key, LMT, limit_price=f"{bid * 0.5:.2f}")


def by_key(key: str) -> orders_pb2.OrderKey:
    return orders_pb2.OrderKey(client_order_id=key)


async def test_read_only_refuses_changes_but_serves_reads(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    trading: Gateway = await make_gateway(ibkr_client_id=1)
    async with gateway_channel(trading) as ch:
        await orders_pb2_grpc.OrderServiceStub(ch).PlaceOrder(
            resting(simulator, "ro-existing"), timeout=10
        )
    read_only: Gateway = await make_gateway(ibkr_client_id=2, read_only=True)
    async with gateway_channel(read_only) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        for call in (
            stub.PlaceOrder(resting(simulator, "ro-new"), timeout=10),
            stub.CancelOrder(
                orders_pb2.CancelOrderRequest(order=by_key("ro-existing")), timeout=10
            ),
        ):
            err = await expect_error(call)
            assert err.code == grpc.StatusCode.PERMISSION_DENIED
            assert err.info is not None and err.info.reason == "READ_ONLY_MODE"
            assert "IBGW_READ_ONLY" in err.message
        # Even an invalid order is refused for the mode first: nothing to learn from it.
        err = await expect_error(stub.PlaceOrder(orders_pb2.PlaceOrderRequest(), timeout=10))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        # Reads work: the order placed by the other client is visible.
        got = await stub.GetOrder(
            orders_pb2.GetOrderRequest(order=by_key("ro-existing")), timeout=10
        )
        assert got.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
        listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        assert [o.client_order_id for o in listed.orders] == ["ro-existing"]
    assert await simulator_orders(simulator, "ro-new") == []
    still = await simulator_orders(simulator, "ro-existing")
    assert [t.orderStatus.status for t in still] == ["Submitted"]  # not cancelled


@pytest.mark.sim_config(account_id="U7654321")
async def test_live_account_needs_live_trading_enabled(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    guarded: Gateway = await make_gateway(ibkr_client_id=1)
    async with gateway_channel(guarded) as ch:
        err = await expect_error(
            orders_pb2_grpc.OrderServiceStub(ch).PlaceOrder(
                resting(simulator, "live-1"), timeout=10
            )
        )
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.info is not None and err.info.reason == "LIVE_TRADING_DISABLED"
        assert err.info.metadata["account"] == "U7654321"
        assert "IBGW_ALLOW_LIVE_TRADING" in err.message
    assert await simulator_orders(simulator, "live-1") == []

    enabled: Gateway = await make_gateway(ibkr_client_id=2, allow_live_trading=True)
    async with gateway_channel(enabled) as ch:
        placed = await orders_pb2_grpc.OrderServiceStub(ch).PlaceOrder(
            resting(simulator, "live-2"), timeout=10
        )
        assert placed.order.account_id == "U7654321"
    assert len(await simulator_orders(simulator, "live-2")) == 1

    # The guarded gateway sees the live order but may not cancel it either.
    async with gateway_channel(guarded) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        err = await expect_error(
            stub.CancelOrder(orders_pb2.CancelOrderRequest(order=by_key("live-2")), timeout=10)
        )
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.info is not None and err.info.reason == "LIVE_TRADING_DISABLED"
        got = await stub.GetOrder(orders_pb2.GetOrderRequest(order=by_key("live-2")), timeout=10)
        assert got.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
