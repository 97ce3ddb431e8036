"""MarketDataService.StreamDepth end to end: the gateway's book against the simulator's."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from tests.e2e.conftest import expect_error
from tws_simulator import TwsSimulator

if TYPE_CHECKING:
    Stub = market_data_pb2_grpc.MarketDataServiceAsyncStub

AAPL = common_pb2.Contract(symbol="AAPL")


@pytest.fixture
def market(channel: grpc.aio.Channel) -> Stub:
    return market_data_pb2_grpc.MarketDataServiceStub(channel)


def depth(contract: common_pb2.Contract, **kw: Any) -> market_data_pb2.StreamDepthRequest:
    return market_data_pb2.StreamDepthRequest(contract=contract, **kw)


def rows(levels: Any) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(lv.price.value), Decimal(lv.size.value)) for lv in levels]


def sim_rows(levels: Any, n: int) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(repr(lv.price)), Decimal(lv.size)) for lv in levels[:n]]


async def next_book(call: Any, within: float = 5.0) -> market_data_pb2.DepthBook:
    while True:
        msg = await asyncio.wait_for(call.read(), within)
        assert msg is not grpc.aio.EOF
        if msg.HasField("book"):
            return msg.book


@pytest.mark.parametrize("smart", [False, True])
async def test_book_stays_equal_to_the_simulators(
    simulator: TwsSimulator, market: Stub, smart: bool
) -> None:
    call = market.StreamDepth(depth(AAPL, rows=8, smart_depth=smart))
    first = await asyncio.wait_for(call.read(), 5)
    assert isinstance(first, market_data_pb2.StreamDepthResponse)
    assert first.subscription_status.state == market_data_pb2.SUBSCRIPTION_STATE_ACTIVE
    assert first.subscription_status.contract.con_id == 265598
    books = [await next_book(call)]
    assert len(books[0].bids) == len(books[0].asks) == 8  # a whole book from the start
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.5
    while loop.time() < end:  # ~30 market steps: rows inserted, updated, deleted
        books.append(await next_book(call))
    simulator.market.paused = True
    try:
        last = books[-1]
        with pytest.raises(TimeoutError):
            while True:
                last = await next_book(call, within=0.5)
        [sub] = simulator.depth.subscriptions()  # both streams' views share one IB line
        assert rows(last.bids) == sim_rows(sub.bids, 8)
        assert rows(last.asks) == sim_rows(sub.asks, 8)
        quote = simulator.market.quote(265598)
        assert Decimal(last.bids[0].price.value) == Decimal(repr(quote.bid))
        assert Decimal(last.asks[0].price.value) == Decimal(repr(quote.ask))
        assert all(bool(lv.market_maker) == smart for lv in last.bids)
        assert last.HasField("update_time") and last.contract.symbol == "AAPL"
        assert len({tuple(rows(b.bids)) for b in books}) > 5  # it did change, many times
    finally:
        simulator.market.paused = False
        call.cancel()


async def test_streams_share_one_ib_subscription(simulator: TwsSimulator, market: Stub) -> None:
    a = market.StreamDepth(depth(AAPL, rows=3))
    b = market.StreamDepth(depth(common_pb2.Contract(con_id=265598), rows=12))
    book_a, book_b = await asyncio.gather(next_book(a), next_book(b))
    assert len(book_a.bids) == 3 and len(book_b.bids) == 12
    assert len(simulator.depth.subscriptions()) == 1
    a.cancel()
    await asyncio.sleep(0.2)
    assert len(simulator.depth.subscriptions()) == 1
    b.cancel()
    for _ in range(50):
        if not simulator.depth.subscriptions():
            break
        await asyncio.sleep(0.05)
    assert simulator.depth.subscriptions() == []  # the last one out cancels the IB line


@pytest.mark.sim_config(depth_line_limit=1)
async def test_depth_limit_and_refusals_end_the_stream_with_a_status(market: Stub) -> None:
    held = market.StreamDepth(depth(AAPL))
    await next_book(held)
    over = market.StreamDepth(depth(common_pb2.Contract(symbol="MSFT")))
    statuses = [msg async for msg in over]  # ends by itself after the refusal
    assert (
        statuses[-1].subscription_status.state == market_data_pb2.SUBSCRIPTION_STATE_LIMIT_REACHED
    )
    assert statuses[-1].subscription_status.ib_code == 309
    held.cancel()
    await asyncio.sleep(0.2)
    spx = common_pb2.Contract(symbol="SPX", sec_type=common_pb2.SECURITY_TYPE_INDEX)
    index = [msg async for msg in market.StreamDepth(depth(spx))]
    assert index[-1].subscription_status.state == market_data_pb2.SUBSCRIPTION_STATE_FAILED
    assert index[-1].subscription_status.ib_code == 10092


@pytest.mark.sim_config(depth_permission=False)
async def test_no_depth_permission(market: Stub) -> None:
    messages = [msg async for msg in market.StreamDepth(depth(AAPL))]
    status = messages[-1].subscription_status
    assert status.state == market_data_pb2.SUBSCRIPTION_STATE_PERMISSION_DENIED
    assert status.ib_code == 354


async def test_bad_requests(market: Stub) -> None:
    err = await expect_error(market.StreamDepth(depth(AAPL, rows=21)).read())
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and "rows" in err.violations
    err = await expect_error(market.StreamDepth(depth(common_pb2.Contract(symbol="NOPE"))).read())
    assert err.code is grpc.StatusCode.NOT_FOUND


async def test_book_resumes_after_a_reconnect(simulator: TwsSimulator, market: Stub) -> None:
    call = market.StreamDepth(depth(AAPL, rows=5, heartbeat_interval={"seconds": 1}))
    try:
        await next_book(call)
        simulator.faults.drop_all_connections()
        seen: list[market_data_pb2.StreamDepthResponse] = []

        async def until(pred: Any) -> market_data_pb2.StreamDepthResponse:
            while True:
                msg = await asyncio.wait_for(call.read(), 15)
                assert isinstance(msg, market_data_pb2.StreamDepthResponse)
                seen.append(msg)
                if pred(msg):
                    return msg

        paused = market_data_pb2.SUBSCRIPTION_STATE_PAUSED
        await until(lambda m: m.subscription_status.state == paused)
        await until(lambda m: m.connection_state.state == common_pb2.CONNECTION_STATE_CONNECTED)
        book = (await until(lambda m: m.HasField("book"))).book
        # a fresh, whole book from the new subscription (not rows on top of the old one)
        assert len(book.bids) == len(book.asks) == 5
        simulator.market.paused = True
        with pytest.raises(TimeoutError):
            while True:
                book = await next_book(call, within=0.5)
        [sub] = simulator.depth.subscriptions()
        assert rows(book.bids) == sim_rows(sub.bids, 5)
        assert rows(book.asks) == sim_rows(sub.asks, 5)
    finally:
        simulator.market.paused = False
        call.cancel()
