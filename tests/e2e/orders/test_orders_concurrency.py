"""Orders under concurrency and refusal: a modification TWS refuses leaves the order as
it was (MODIFY_REJECTED, never REJECTED/CANCELLED), concurrent ModifyOrder/CancelOrder on
one order never cross answers, a CancelOrder retried after a lost answer succeeds."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error, rich_error
from tests.e2e.orders.test_order_events_support import (
    ACKNOWLEDGED,
    kinds,
    open_reader,
    place_market,
    place_resting_limit,
)
from tests.e2e.orders.test_orders_more import working_in_simulator
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)

MODIFY_REJECTED = orders_pb2.ORDER_EVENT_TYPE_MODIFY_REJECTED
SUBMITTED = orders_pb2.ORDER_STATUS_SUBMITTED


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def key(client_order_id: str) -> orders_pb2.OrderKey:
    return orders_pb2.OrderKey(client_order_id=client_order_id)


def modify(client_order_id: str, quantity: str) -> orders_pb2.ModifyOrderRequest:
    return orders_pb2.ModifyOrderRequest(
        order=key(client_order_id), quantity=common_pb2.Decimal(value=quantity)
    )


async def test_a_refused_modification_leaves_the_order_working(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    reader = await open_reader(stub)
    placed = await place_resting_limit(stub, simulator, "mr-1")
    assert (await reader.next_event()).type == ACKNOWLEDGED
    # Far beyond the account's buying power: TWS refuses the change with 201.
    refused = await expect_error(stub.ModifyOrder(modify("mr-1", "900000"), timeout=10))
    assert refused.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.info is not None and refused.info.metadata["ib_code"] == "201"

    event = await reader.next_event()
    assert event.type == MODIFY_REJECTED, kinds([event])
    assert event.ib_code == 201 and event.message
    assert event.order.status == SUBMITTED
    assert event.order.quantity.value == placed.quantity.value == "5"
    now = (await stub.GetOrder(orders_pb2.GetOrderRequest(order=key("mr-1")), timeout=10)).order
    assert now.status == SUBMITTED and now.quantity.value == "5"
    assert now.limit_price == placed.limit_price
    assert "mr-1" in await working_in_simulator(simulator)

    # Nothing else about this order: the next event is another order's.
    await place_market(stub, "mr-next")
    following = await reader.next_event()
    await reader.close()
    assert following.order.client_order_id == "mr-next", kinds([following])

    # The order still works normally: a valid change, then a cancel.
    changed = await stub.ModifyOrder(modify("mr-1", "6"), timeout=10)
    assert changed.order.quantity.value == "6" and changed.order.status == SUBMITTED
    cancelled = await stub.CancelOrder(orders_pb2.CancelOrderRequest(order=key("mr-1")))
    assert not cancelled.already_cancelled


async def test_concurrent_modifications_of_one_order_do_not_cross(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    await place_resting_limit(stub, simulator, "mc-1")
    quantities = ["6", "900000", "7", "900001", "8"]
    calls = [stub.ModifyOrder(modify("mc-1", q), timeout=20) for q in quantities]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for quantity, result in zip(quantities, results, strict=True):
        if Decimal(quantity) > 1000:
            assert isinstance(result, grpc.aio.AioRpcError), (quantity, result)
            err = rich_error(result)
            assert err.code is grpc.StatusCode.FAILED_PRECONDITION, (quantity, err)
        else:
            assert isinstance(result, orders_pb2.ModifyOrderResponse), (quantity, result)
            # each call's answer is the order with its own change
            assert result.order.quantity.value == quantity
    final = (await stub.GetOrder(orders_pb2.GetOrderRequest(order=key("mc-1")))).order
    assert final.status == SUBMITTED and final.quantity.value in ("6", "7", "8")


async def test_concurrent_modify_and_cancel_of_one_order(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    await place_resting_limit(stub, simulator, "mx-1")
    cancel = orders_pb2.CancelOrderRequest(order=key("mx-1"))
    results = await asyncio.gather(
        stub.ModifyOrder(modify("mx-1", "6"), timeout=20),
        stub.CancelOrder(cancel, timeout=20),
        stub.ModifyOrder(modify("mx-1", "7"), timeout=20),
        stub.CancelOrder(cancel, timeout=20),
        return_exceptions=True,
    )
    # The calls run one at a time, in whatever order they arrive: a modification before
    # the cancel answers with its own change, one after it finds the order cancelled; one
    # cancel cancels, the other is told the order is already cancelled.
    modifies = [(results[0], "6"), (results[2], "7")]
    cancels = [results[1], results[3]]
    for result, quantity in modifies:
        if isinstance(result, orders_pb2.ModifyOrderResponse):
            assert result.order.quantity.value == quantity
        else:
            assert isinstance(result, grpc.aio.AioRpcError), result
            err = rich_error(result)
            assert err.info is not None and err.info.reason == "ORDER_ALREADY_CANCELLED", err
    assert all(isinstance(c, orders_pb2.CancelOrderResponse) for c in cancels), cancels
    assert sorted(c.already_cancelled for c in cancels) == [False, True]  # type: ignore[union-attr]
    assert all(
        c.order.status == orders_pb2.ORDER_STATUS_CANCELLED  # type: ignore[union-attr]
        for c in cancels
        if c.already_cancelled  # type: ignore[union-attr]
    )
    assert "mx-1" not in await working_in_simulator(simulator)


async def test_cancel_retried_after_its_answer_was_lost(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    await place_resting_limit(stub, simulator, "cl-1")
    request = orders_pb2.CancelOrderRequest(order=key("cl-1"))
    # The first answer never reaches the client (its deadline is gone almost at once) ...
    lost = await asyncio.gather(stub.CancelOrder(request, timeout=0.002), return_exceptions=True)
    if isinstance(lost[0], grpc.aio.AioRpcError):
        assert lost[0].code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # ... the retry tells it the order is cancelled, as an answer, not as a failure.
    for _ in range(50):
        retry = await stub.CancelOrder(request, timeout=10)
        assert retry.order.status in (
            orders_pb2.ORDER_STATUS_CANCELLED,
            orders_pb2.ORDER_STATUS_PENDING_CANCEL,
        )
        if retry.order.status == orders_pb2.ORDER_STATUS_CANCELLED:
            break
        await asyncio.sleep(0.05)
    final = await stub.CancelOrder(request, timeout=10)
    assert final.already_cancelled and final.order.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert "cl-1" not in await working_in_simulator(simulator)
