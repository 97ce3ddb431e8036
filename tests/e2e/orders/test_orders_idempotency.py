"""PlaceOrder's idempotency key end to end: a retry never places a second order.

Every test counts the orders on the simulator's side through a separate plain ib_insync
client (reqAllOpenOrders + reqCompletedOrders), not through the gateway.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from ibgateway_server.ib.session import SessionState
from tests.e2e.conftest import expect_error, gateway_channel, wait_for_state
from tests.e2e.orders.test_orders_support import (
    AAPL_CON_ID,
    get_order,
    order_request,
    perm_ids,
    simulator_orders,
    wait_for_order,
)
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)

MKT = orders_pb2.ORDER_TYPE_MARKET
LMT = orders_pb2.ORDER_TYPE_LIMIT


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def resting_limit(sim: TwsSimulator) -> str:
    """A buy limit far below the market: it rests until cancelled."""
    return f"{sim.market.quote(AAPL_CON_ID).bid * 0.5:.2f}"


async def test_retry_returns_the_same_order(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    req = order_request("idem-1", LMT, quantity="2", limit_price=resting_limit(simulator))
    first = await stub.PlaceOrder(req, timeout=10)
    second = await stub.PlaceOrder(req, timeout=10)
    assert (first.replayed, second.replayed) == (False, True)
    assert second.order.order_id == first.order.order_id
    assert second.order.perm_id == first.order.perm_id > 0
    assert second.order.create_time == first.order.create_time
    on_sim = await simulator_orders(simulator, "idem-1")
    assert perm_ids(on_sim) == {first.order.perm_id}


async def test_retry_of_a_filled_order_returns_it_filled(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    req = order_request("idem-filled", MKT, quantity="3")
    first = await stub.PlaceOrder(req, timeout=10)
    await wait_for_order(stub, "idem-filled", lambda o: o.status == orders_pb2.ORDER_STATUS_FILLED)
    again = await stub.PlaceOrder(req, timeout=10)
    assert again.replayed
    assert again.order.perm_id == first.order.perm_id
    assert again.order.status == orders_pb2.ORDER_STATUS_FILLED
    assert again.order.filled_quantity.value == "3"
    assert len(await simulator_orders(simulator, "idem-filled")) == 1


async def test_concurrent_retries_place_exactly_one_order(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    req = order_request("idem-burst", LMT, quantity="5", limit_price=resting_limit(simulator))
    replies = await asyncio.gather(*[stub.PlaceOrder(req, timeout=10) for _ in range(10)])
    assert sum(not r.replayed for r in replies) == 1
    assert len({r.order.perm_id for r in replies}) == 1
    assert len({r.order.order_id for r in replies}) == 1
    on_sim = await simulator_orders(simulator, "idem-burst")
    assert perm_ids(on_sim) == {replies[0].order.perm_id}


async def test_concurrent_market_orders_with_one_key_fill_once(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    req = order_request("idem-mkt-burst", MKT, quantity="10")
    replies = await asyncio.gather(*[stub.PlaceOrder(req, timeout=10) for _ in range(10)])
    assert sum(not r.replayed for r in replies) == 1
    filled = await wait_for_order(
        stub, "idem-mkt-burst", lambda o: o.status == orders_pb2.ORDER_STATUS_FILLED
    )
    assert filled.filled_quantity.value == "10"  # bought once, not ten times
    position = simulator.account.position(AAPL_CON_ID)
    assert position is not None and position.quantity == 10
    assert len(await simulator_orders(simulator, "idem-mkt-burst")) == 1


async def test_same_key_for_another_order_is_already_exists(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    limit = resting_limit(simulator)
    first = await stub.PlaceOrder(
        order_request("idem-reuse", LMT, quantity="2", limit_price=limit), timeout=10
    )
    err = await expect_error(
        stub.PlaceOrder(
            order_request(
                "idem-reuse",
                LMT,
                quantity="3",
                limit_price=limit,
                side=orders_pb2.ORDER_SIDE_SELL,
            ),
            timeout=10,
        )
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.info is not None and err.info.reason == "CLIENT_ORDER_ID_REUSED"
    assert err.info.metadata["differing_fields"] == "side,quantity"
    assert err.info.metadata["order_id"] == str(first.order.order_id)
    assert err.info.metadata["perm_id"] == str(first.order.perm_id)
    # The same numbers spelled differently are the same order.
    same = await stub.PlaceOrder(
        order_request("idem-reuse", LMT, quantity="2.000", limit_price=limit + "0"), timeout=10
    )
    assert same.replayed and same.order.perm_id == first.order.perm_id
    assert len(await simulator_orders(simulator, "idem-reuse")) == 1


async def test_retry_after_a_gateway_restart_finds_the_order_by_order_ref(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    open_req = order_request(
        "restart-open", LMT, quantity="4", limit_price=resting_limit(simulator)
    )
    filled_req = order_request("restart-filled", MKT, quantity="6")
    first_gw: Gateway = await make_gateway()
    async with gateway_channel(first_gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        opened = (await stub.PlaceOrder(open_req, timeout=10)).order
        filled = (await stub.PlaceOrder(filled_req, timeout=10)).order
        await wait_for_order(
            stub,
            "restart-filled",
            lambda o: (
                o.status == orders_pb2.ORDER_STATUS_FILLED
                and all(f.commission.value for f in o.fills)
            ),
        )
    await first_gw.stop(0.5)

    # A new gateway (a new process, as far as the book knows) on the same TWS.
    second_gw: Gateway = await make_gateway()
    async with gateway_channel(second_gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        again_open = await stub.PlaceOrder(open_req, timeout=10)
        again_filled = await stub.PlaceOrder(filled_req, timeout=10)
        assert again_open.replayed and again_filled.replayed
        assert again_open.order.perm_id == opened.perm_id
        assert again_open.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
        assert again_filled.order.perm_id == filled.perm_id
        assert again_filled.order.status == orders_pb2.ORDER_STATUS_FILLED
        # The completed order comes back with its executions and commissions.
        got = await get_order(stub, "restart-filled")
        assert got.filled_quantity.value == "6"
        assert sum(int(f.quantity.value) for f in got.fills) == 6
        assert got.total_commission.value
        listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        assert {o.client_order_id for o in listed.orders} >= {"restart-open", "restart-filled"}
        # The open order can still be cancelled through the new gateway.
        cancelled = await stub.CancelOrder(
            orders_pb2.CancelOrderRequest(
                order=orders_pb2.OrderKey(client_order_id="restart-open")
            ),
            timeout=10,
        )
        assert cancelled.order.perm_id == opened.perm_id
    assert len(await simulator_orders(simulator, "restart-open")) == 1
    assert len(await simulator_orders(simulator, "restart-filled")) == 1


async def test_retry_after_a_restart_with_another_client_id(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    req = order_request("restart-client", LMT, quantity="1", limit_price=resting_limit(simulator))
    first_gw: Gateway = await make_gateway(ibkr_client_id=1)
    async with gateway_channel(first_gw) as ch:
        placed = (await orders_pb2_grpc.OrderServiceStub(ch).PlaceOrder(req, timeout=10)).order
    await first_gw.stop(0.5)
    # Client 7 only sees client 1's open order through reqAllOpenOrders.
    second_gw: Gateway = await make_gateway(ibkr_client_id=7)
    async with gateway_channel(second_gw) as ch:
        again = await orders_pb2_grpc.OrderServiceStub(ch).PlaceOrder(req, timeout=10)
    assert again.replayed and again.order.perm_id == placed.perm_id
    assert len(await simulator_orders(simulator, "restart-client")) == 1


async def test_retry_after_a_reconnect(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator, gateway: Gateway
) -> None:
    req = order_request("reconnect-1", LMT, quantity="1", limit_price=resting_limit(simulator))
    first = await stub.PlaceOrder(req, timeout=10)
    assert simulator.faults.drop_all_connections() >= 1
    assert await wait_for_state(gateway, SessionState.RECONNECTING, SessionState.CONNECTING)
    assert await wait_for_state(gateway, SessionState.CONNECTED, within=10)
    again = await stub.PlaceOrder(req, timeout=10)
    assert again.replayed and again.order.perm_id == first.order.perm_id
    assert len(await simulator_orders(simulator, "reconnect-1")) == 1


async def test_unacknowledged_order_is_kept_and_returned_by_the_retry(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    # Every TWS answer is held back 0.5 s: the contract lookup comes back in time, the
    # order's acknowledgement does not fit in the client's 0.8 s deadline.
    req = order_request("slow-ack", LMT, quantity="1", limit_price=resting_limit(simulator))
    simulator.faults.set_delay(0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    err = await expect_error(stub.PlaceOrder(req, timeout=0.8))
    elapsed = loop.time() - start
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.5  # the client's deadline was honoured
    if err.info is not None:  # our answer beat grpc's own deadline error
        assert err.info.reason == "ORDER_NOT_ACKNOWLEDGED"
        assert err.info.metadata["client_order_id"] == "slow-ack"
    simulator.faults.set_delay(0)
    again = await stub.PlaceOrder(req, timeout=10)
    assert again.replayed
    assert again.order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    on_sim = await simulator_orders(simulator, "slow-ack")
    assert perm_ids(on_sim) == {again.order.perm_id}


async def test_deadline_before_anything_was_sent_places_on_retry(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    req = order_request("slow-lookup", LMT, quantity="1", limit_price=resting_limit(simulator))
    simulator.faults.set_delay(1.0)
    err = await expect_error(stub.PlaceOrder(req, timeout=0.4))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    simulator.faults.set_delay(0)  # the retry's answers queue behind the held-back ones
    placed = await stub.PlaceOrder(req, timeout=10)
    assert not placed.replayed  # nothing had reached TWS
    assert len(await simulator_orders(simulator, "slow-lookup")) == 1
