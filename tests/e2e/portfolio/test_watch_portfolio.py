"""WatchPortfolio end to end: snapshot, fills, partial fills, a closed position, P&L,
heartbeats and a reconnect, over the simulator with the real ib_insync."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2

from ibgateway.v1 import (
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error
from tests.e2e.orders.test_orders_support import order_request
from tws_simulator import TwsSimulator

pytestmark = [
    pytest.mark.sim_config(positions={"AAPL": (100, 150.0)}, account_update_interval=0.2),
    pytest.mark.timeout(60),
]

Response = portfolio_pb2.WatchPortfolioResponse


class Watcher:
    """Reads a WatchPortfolio stream in the background and keeps every message."""

    def __init__(self, channel: grpc.aio.Channel, heartbeat: float = 0.3, account: str = ""):
        stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        self.call = stub.WatchPortfolio(
            portfolio_pb2.WatchPortfolioRequest(
                account_id=account,
                heartbeat_interval=duration_pb2.Duration(nanos=int(heartbeat * 1e9)),
            )
        )
        self.messages: list[Response] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.call:
            self.messages.append(message)

    async def wait(self, predicate: Callable[[Response], bool], within: float = 10.0) -> Response:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        seen = 0
        while loop.time() < end:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            if self.task.done():
                self.task.result()
                raise AssertionError("the stream ended")
            await asyncio.sleep(0.02)
        kinds = [m.WhichOneof("event") for m in self.messages]
        raise AssertionError(f"not seen within {within}s; got {kinds[-20:]}")

    def positions(self, symbol: str) -> list[portfolio_pb2.PositionUpdate]:
        return [
            update
            for m in self.messages
            if m.HasField("changes")
            for update in m.changes.positions
            if update.position.contract.symbol == symbol
        ]

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


def position_of(symbol: str, quantity: str | None = None) -> Callable[[Response], bool]:
    def match(message: Response) -> bool:
        if not message.HasField("changes"):
            return False
        return any(
            u.position.contract.symbol == symbol
            and (quantity is None or u.position.quantity.value == quantity)
            for u in message.changes.positions
        )

    return match


def kind(name: str) -> Callable[[Response], bool]:
    return lambda message: message.WhichOneof("event") == name


async def place_market(
    channel: grpc.aio.Channel, key: str, symbol: str, side: int, quantity: str
) -> None:
    stub = orders_pb2_grpc.OrderServiceStub(channel)
    await stub.PlaceOrder(
        order_request(
            key,
            orders_pb2.ORDER_TYPE_MARKET,
            side=side,  # type: ignore[arg-type]
            quantity=quantity,
            contract=common_pb2.Contract(symbol=symbol),
        ),
        timeout=10,
    )


async def test_snapshot_first_then_fills_partial_fills_and_a_closed_position(
    channel: grpc.aio.Channel,
) -> None:
    watcher = Watcher(channel)
    try:
        first = await watcher.wait(lambda m: True)
        assert first.HasField("snapshot")
        snapshot = first.snapshot
        assert snapshot.account_id == "DU1234567"
        [aapl] = snapshot.positions
        assert aapl.contract.symbol == "AAPL" and aapl.quantity.value == "100"
        assert aapl.average_cost.value == "150" and Decimal(aapl.market_value.value) > 0
        tags = {v.tag for v in snapshot.account_values}
        assert {"NetLiquidation", "BuyingPower", "AvailableFunds"} <= tags
        # the account's P&L follows as soon as IB has it
        await watcher.wait(lambda m: m.HasField("changes") and m.changes.HasField("pnl"))
        await watcher.wait(
            lambda m: (
                m.HasField("changes")
                and any(v.tag == "NetLiquidation" for v in m.changes.account_values)
            )
        )

        # a fill opens a position
        await place_market(channel, "w-msft", "MSFT", orders_pb2.ORDER_SIDE_BUY, "10")
        opened = await watcher.wait(position_of("MSFT", "10"))
        [update] = [u for u in opened.changes.positions if u.position.contract.symbol == "MSFT"]
        assert not update.closed and update.position.contract.con_id == 272093

        # a large order fills in parts: the quantity grows through partial fills
        await place_market(channel, "w-tsla", "TSLA", orders_pb2.ORDER_SIDE_BUY, "6000")
        await watcher.wait(position_of("TSLA", "6000"), within=20)
        quantities = [Decimal(u.position.quantity.value) for u in watcher.positions("TSLA")]
        assert any(0 < q < 6000 for q in quantities), quantities
        assert quantities == sorted(quantities)

        # selling everything closes the position, reported once as closed
        await place_market(channel, "w-aapl", "AAPL", orders_pb2.ORDER_SIDE_SELL, "100")
        closed = await watcher.wait(
            lambda m: (
                m.HasField("changes")
                and any(
                    u.closed and u.position.contract.symbol == "AAPL" for u in m.changes.positions
                )
            )
        )
        [gone] = [u for u in closed.changes.positions if u.position.contract.symbol == "AAPL"]
        assert gone.position.quantity.value == "0"
        await asyncio.sleep(0.5)
        assert not any(
            u.position.contract.symbol == "AAPL" and not u.closed
            for u in watcher.positions("AAPL")[watcher.positions("AAPL").index(gone) :]
        )
    finally:
        watcher.close()


@pytest.mark.sim_config(account_update_interval=60.0, pnl_interval=60.0)
async def test_heartbeats_keep_a_quiet_stream_alive(channel: grpc.aio.Channel) -> None:
    watcher = Watcher(channel, heartbeat=0.2)
    try:
        await watcher.wait(kind("snapshot"))
        start = len(watcher.messages)
        await asyncio.sleep(1.0)
        later = [m.WhichOneof("event") for m in watcher.messages[start:]]
        assert later.count("heartbeat") >= 3, later
    finally:
        watcher.close()


async def test_a_reconnect_is_reported_and_followed_by_a_fresh_snapshot(
    channel: grpc.aio.Channel, simulator: TwsSimulator, gateway: Gateway
) -> None:
    watcher = Watcher(channel)
    try:
        await watcher.wait(kind("snapshot"))
        simulator.faults.drop_all_connections()
        lost = await watcher.wait(
            lambda m: (
                m.HasField("connection_state")
                and m.connection_state.state != common_pb2.CONNECTION_STATE_CONNECTED
            )
        )
        assert lost.connection_state.message
        await watcher.wait(
            lambda m: (
                m.HasField("connection_state")
                and m.connection_state.state == common_pb2.CONNECTION_STATE_CONNECTED
            )
        )
        start = len(watcher.messages)
        again = await watcher.wait(
            lambda m: m.HasField("snapshot") and watcher.messages.index(m) >= start - 1
        )
        assert [p.contract.symbol for p in again.snapshot.positions] == ["AAPL"]
        # the P&L subscription was made again: figures keep coming
        count = len(watcher.messages)
        await watcher.wait(
            lambda m: (
                watcher.messages.index(m) >= count
                and m.HasField("changes")
                and m.changes.HasField("pnl")
            )
        )
        # one P&L subscription at the simulator, not one per connection
        assert len(simulator.account_feed._pnl) == 1
    finally:
        watcher.close()


async def test_watchers_share_the_pnl_subscription_and_release_it(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    first, second = Watcher(channel), Watcher(channel)
    try:
        for watcher in (first, second):
            await watcher.wait(lambda m: m.HasField("changes") and m.changes.HasField("pnl"))
        assert len(simulator.account_feed._pnl) == 1
    finally:
        first.close()
    await asyncio.sleep(0.3)
    assert len(simulator.account_feed._pnl) == 1
    second.close()
    for _ in range(50):
        if not simulator.account_feed._pnl:
            break
        await asyncio.sleep(0.05)
    assert not simulator.account_feed._pnl


async def test_unknown_account_is_invalid(channel: grpc.aio.Channel) -> None:
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    err = await expect_error(
        _first(stub.WatchPortfolio(portfolio_pb2.WatchPortfolioRequest(account_id="DU0000000")))
    )
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "account_id" in err.violations


async def _first(call: grpc.aio.UnaryStreamCall) -> Response:
    async for message in call:
        return message
    raise AssertionError("no message")
