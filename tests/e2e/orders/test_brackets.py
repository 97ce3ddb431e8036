"""PlaceBracketOrder and OCA groups end to end: gateway + simulator + real ib_insync.

The market is frozen (no random steps); tests move it with ``simulator.market.move_to``.
Every count of orders is taken on the simulator's side, by a separate plain ib_insync
client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error, gateway_channel
from tests.e2e.orders.test_orders_support import (
    AAPL_CON_ID,
    get_order,
    order_request,
    simulator_orders,
    wait_for_order,
)
from tws_simulator import TwsSimulator

pytestmark = [pytest.mark.timeout(60), pytest.mark.sim_config(tick_interval=60.0)]

LMT = orders_pb2.ORDER_TYPE_LIMIT
STP = orders_pb2.ORDER_TYPE_STOP
MKT = orders_pb2.ORDER_TYPE_MARKET
FILLED = orders_pb2.ORDER_STATUS_FILLED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def dec(value: float) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=f"{value:.2f}")


def bracket_request(
    key: str,
    mid: float,
    *,
    quantity: str = "10",
    entry: orders_pb2.BracketLeg | None = None,
    take_profit: bool = True,
    stop_loss: bool = True,
) -> orders_pb2.PlaceBracketOrderRequest:
    """A buy entry 1.00 under ``mid``, take-profit 2.00 over it, stop-loss 3.00 under it."""
    req = orders_pb2.PlaceBracketOrderRequest(
        client_order_id=key,
        contract=common_pb2.Contract(symbol="AAPL"),
        side=orders_pb2.ORDER_SIDE_BUY,
        quantity=common_pb2.Decimal(value=quantity),
        entry=entry or orders_pb2.BracketLeg(order_type=LMT, limit_price=dec(mid - 1.00)),
    )
    if take_profit:
        req.take_profit.CopyFrom(orders_pb2.BracketLeg(limit_price=dec(mid + 2.00)))
    if stop_loss:
        req.stop_loss.CopyFrom(orders_pb2.BracketLeg(stop_price=dec(mid - 3.00)))
    return req


def midpoint(simulator: TwsSimulator) -> float:
    return round(simulator.market.quote(AAPL_CON_ID).midpoint, 2)


async def test_bracket_structure_then_take_profit_cancels_the_stop_loss(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = midpoint(simulator)
    events = stub.StreamOrderEvents(orders_pb2.StreamOrderEventsRequest(epoch="", after_sequence=0))
    reply = await stub.PlaceBracketOrder(bracket_request("br-1", mid), timeout=10)
    assert not reply.replayed
    entry, take, stop = reply.entry, reply.take_profit, reply.stop_loss
    assert (entry.client_order_id, take.client_order_id, stop.client_order_id) == (
        "br-1",
        "br-1:tp",
        "br-1:sl",
    )
    assert entry.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert take.status == stop.status == orders_pb2.ORDER_STATUS_PRE_SUBMITTED
    assert {o.bracket_client_order_id for o in (entry, take, stop)} == {"br-1"}
    assert [o.bracket_role for o in (entry, take, stop)] == [
        orders_pb2.BRACKET_ROLE_ENTRY,
        orders_pb2.BRACKET_ROLE_TAKE_PROFIT,
        orders_pb2.BRACKET_ROLE_STOP_LOSS,
    ]
    assert take.parent_order_id == stop.parent_order_id == entry.order_id
    assert sorted(entry.child_order_ids) == sorted([take.order_id, stop.order_id])
    assert take.oca_group == stop.oca_group == "br-1:oca"
    assert take.oca_type == orders_pb2.OCA_TYPE_REDUCE_WITH_BLOCK
    assert take.side == stop.side == orders_pb2.ORDER_SIDE_SELL

    simulator.market.move_to(AAPL_CON_ID, mid - 1.50)
    await wait_for_order(stub, "br-1", lambda o: o.status == FILLED)
    await wait_for_order(stub, "br-1:tp", lambda o: o.status == orders_pb2.ORDER_STATUS_SUBMITTED)
    simulator.market.move_to(AAPL_CON_ID, mid + 2.50)
    await wait_for_order(stub, "br-1:tp", lambda o: o.status == FILLED)
    stopped = await wait_for_order(stub, "br-1:sl", lambda o: o.status == CANCELLED)
    assert not stopped.fills

    # Every leg's events carry the bracket's key.
    seen: dict[str, set[str]] = {}
    async with asyncio.timeout(10):
        async for message in events:
            if message.WhichOneof("event") != "order_event":
                continue
            order = message.order_event.order
            seen.setdefault(order.client_order_id, set()).add(order.bracket_client_order_id)
            if order.client_order_id == "br-1:sl" and order.status == CANCELLED:
                break
    events.cancel()
    assert seen == {"br-1": {"br-1"}, "br-1:tp": {"br-1"}, "br-1:sl": {"br-1"}}


async def test_bracket_stop_loss_cancels_the_take_profit(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = midpoint(simulator)
    market_entry = orders_pb2.BracketLeg(order_type=MKT)
    await stub.PlaceBracketOrder(bracket_request("br-sl", mid, entry=market_entry), timeout=10)
    await wait_for_order(stub, "br-sl", lambda o: o.status == FILLED)
    simulator.market.move_to(AAPL_CON_ID, mid - 3.50)
    stopped = await wait_for_order(stub, "br-sl:sl", lambda o: o.status == FILLED)
    assert stopped.filled_quantity.value == "10"
    await wait_for_order(stub, "br-sl:tp", lambda o: o.status == CANCELLED)


@pytest.mark.sim_config(tick_interval=60.0, cash=10_000_000.0)
async def test_a_partial_fill_of_one_exit_reduces_the_other(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = midpoint(simulator)
    req = bracket_request(
        "br-part", mid, quantity="20000", entry=orders_pb2.BracketLeg(order_type=MKT)
    )
    await stub.PlaceBracketOrder(req, timeout=10)
    for _ in range(200):  # the entry takes the displayed size of one quote after another
        if (await get_order(stub, "br-part")).status == FILLED:
            break
        simulator.market.move_to(AAPL_CON_ID, mid)
        await asyncio.sleep(0.01)
    await wait_for_order(stub, "br-part", lambda o: o.status == FILLED)
    simulator.market.move_to(AAPL_CON_ID, mid + 2.50)  # one quote: part of the take-profit
    take = await wait_for_order(stub, "br-part:tp", lambda o: bool(o.fills))
    filled = int(take.filled_quantity.value)
    assert 0 < filled < 20000
    stop = await wait_for_order(
        stub, "br-part:sl", lambda o: o.quantity.value == str(20000 - filled)
    )
    assert stop.status == orders_pb2.ORDER_STATUS_PRE_SUBMITTED


async def test_cancelling_the_entry_cancels_the_exits(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    await stub.PlaceBracketOrder(bracket_request("br-cx", midpoint(simulator)), timeout=10)
    cancelled = await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order=orders_pb2.OrderKey(client_order_id="br-cx")),
        timeout=10,
    )
    assert cancelled.order.status == CANCELLED
    for key in ("br-cx:tp", "br-cx:sl"):
        await wait_for_order(stub, key, lambda o: o.status == CANCELLED)


async def test_retry_returns_the_same_bracket(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    req = bracket_request("br-retry", midpoint(simulator))
    first, second = await asyncio.gather(
        stub.PlaceBracketOrder(req, timeout=10), stub.PlaceBracketOrder(req, timeout=10)
    )
    assert sorted([first.replayed, second.replayed]) == [False, True]
    assert first.take_profit.perm_id == second.take_profit.perm_id
    again = await stub.PlaceBracketOrder(req, timeout=10)
    assert again.replayed and again.entry.perm_id == first.entry.perm_id
    for ref in ("br-retry", "br-retry:tp", "br-retry:sl"):
        assert len(await simulator_orders(simulator, ref)) == 1
    # Another bracket under the same key is refused, naming what differs.
    other = bracket_request("br-retry", midpoint(simulator), stop_loss=False)
    error = await expect_error(stub.PlaceBracketOrder(other, timeout=10))
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.info is not None and error.info.reason == "CLIENT_ORDER_ID_REUSED"
    assert error.info.metadata["differing_fields"] == "stop_loss"


async def test_retry_after_a_gateway_restart_places_nothing_new(
    simulator: TwsSimulator, make_gateway: Any
) -> None:
    req = bracket_request("br-restart", midpoint(simulator))
    first_gw: Gateway = await make_gateway()
    async with gateway_channel(first_gw) as ch:
        placed = await orders_pb2_grpc.OrderServiceStub(ch).PlaceBracketOrder(req, timeout=10)
    await first_gw.stop(0.5)
    second_gw: Gateway = await make_gateway()
    async with gateway_channel(second_gw) as ch:
        stub = orders_pb2_grpc.OrderServiceStub(ch)
        again = await stub.PlaceBracketOrder(req, timeout=10)
        assert again.replayed
        assert [again.entry.perm_id, again.take_profit.perm_id, again.stop_loss.perm_id] == [
            placed.entry.perm_id,
            placed.take_profit.perm_id,
            placed.stop_loss.perm_id,
        ]
        assert again.stop_loss.bracket_client_order_id == "br-restart"
        assert again.stop_loss.parent_order_id == again.entry.order_id
        # ListOrders shows the structure too, rebuilt from what TWS reports.
        listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=10)
        legs = {o.client_order_id: o for o in listed.orders if o.bracket_client_order_id}
        assert set(legs) == {"br-restart", "br-restart:tp", "br-restart:sl"}
        assert sorted(legs["br-restart"].child_order_ids) == sorted(
            [again.take_profit.order_id, again.stop_loss.order_id]
        )
        assert legs["br-restart:tp"].oca_group == legs["br-restart:sl"].oca_group
    for ref in ("br-restart", "br-restart:tp", "br-restart:sl"):
        assert len(await simulator_orders(simulator, ref)) == 1


async def test_a_refused_leg_places_nothing(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    req = bracket_request("br-bad", midpoint(simulator))
    req.take_profit.limit_price.value = "190.001"  # off the tick grid: TWS refuses it (110)
    error = await expect_error(stub.PlaceBracketOrder(req, timeout=10))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None and error.info.metadata["ib_code"] == "110"
    await asyncio.sleep(0.2)
    assert await simulator_orders(simulator) == []
    # The key stays free: the corrected bracket goes through.
    fixed = await stub.PlaceBracketOrder(bracket_request("br-bad", midpoint(simulator)), timeout=10)
    assert not fixed.replayed


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r, "client_order_id", "k" * 38), "client_order_id"),
        (lambda r: setattr(r, "client_order_id", "x:tp"), "client_order_id"),
        (lambda r: r.ClearField("entry"), "entry.order_type"),
        (lambda r: setattr(r.take_profit, "order_type", STP), "take_profit.order_type"),
        (lambda r: r.stop_loss.ClearField("stop_price"), "stop_loss.stop_price"),
        (
            lambda r: setattr(r.entry, "time_in_force", orders_pb2.TIME_IN_FORCE_GTD),
            "entry.good_till_time",
        ),
    ],
    ids=["key-too-long", "key-reserved", "no-entry", "tp-not-limit", "sl-no-stop", "gtd-no-time"],
)
async def test_invalid_brackets_are_field_violations(
    simulator: TwsSimulator,
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
    mutate: Any,
    field: str,
) -> None:
    req = bracket_request("br-invalid", midpoint(simulator))
    mutate(req)
    error = await expect_error(stub.PlaceBracketOrder(req, timeout=10))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.violations


async def test_oca_group_of_three_on_place_order(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = midpoint(simulator)
    for n, step in enumerate((1.00, 2.00, 3.00)):
        await stub.PlaceOrder(
            order_request(
                f"oca-{n}",
                LMT,
                limit_price=f"{mid - step:.2f}",
                oca_group="three",
                oca_type=orders_pb2.OCA_TYPE_CANCEL_WITH_BLOCK,
            ),
            timeout=10,
        )
    simulator.market.move_to(AAPL_CON_ID, mid - 1.50)
    await wait_for_order(stub, "oca-0", lambda o: o.status == FILLED)
    for key in ("oca-1", "oca-2"):
        other = await wait_for_order(stub, key, lambda o: o.status == CANCELLED)
        assert (other.oca_group, other.oca_type) == ("three", orders_pb2.OCA_TYPE_CANCEL_WITH_BLOCK)


@pytest.mark.parametrize("deadline", [0.6, 1.0], ids=["before-transmit", "after-transmit"])
async def test_retry_after_the_answer_was_lost_returns_one_bracket(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub, deadline: float
) -> None:
    # Every TWS answer is held back 0.4 s: the bracket cannot be confirmed in time. With
    # 0.6 s the deadline ends the round trip before the last leg (nothing transmitted);
    # with 1 s it ends while the gateway waits for TWS to acknowledge the legs.
    req = bracket_request("br-lost", midpoint(simulator))
    simulator.faults.set_delay(0.4)
    error = await expect_error(stub.PlaceBracketOrder(req, timeout=deadline))
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    simulator.faults.set_delay(0)
    again = await stub.PlaceBracketOrder(req, timeout=10)
    assert again.entry.status == orders_pb2.ORDER_STATUS_SUBMITTED
    for ref, leg in (
        ("br-lost", again.entry),
        ("br-lost:tp", again.take_profit),
        ("br-lost:sl", again.stop_loss),
    ):
        on_sim = await simulator_orders(simulator, ref)
        assert [t.order.permId for t in on_sim] == [leg.perm_id]


async def test_preview_of_a_bracket_checks_the_exits_and_previews_the_entry(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = midpoint(simulator)
    req = orders_pb2.PreviewOrderRequest(
        contract=common_pb2.Contract(symbol="AAPL"),
        side=orders_pb2.ORDER_SIDE_BUY,
        order_type=LMT,
        quantity=common_pb2.Decimal(value="100"),
        limit_price=dec(mid),
        take_profit=orders_pb2.BracketLeg(limit_price=dec(mid + 2.00)),
        stop_loss=orders_pb2.BracketLeg(stop_price=dec(mid - 3.00)),
    )
    preview = await stub.PreviewOrder(req, timeout=10)
    # The entry's margin: 25 % of 100 shares at the limit.
    assert float(preview.initial_margin.change.value) == pytest.approx(0.25 * 100 * mid, rel=1e-3)
    req.stop_loss.order_type = LMT
    error = await expect_error(stub.PreviewOrder(req, timeout=10))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "stop_loss.order_type" in error.violations
    assert await simulator_orders(simulator) == []
