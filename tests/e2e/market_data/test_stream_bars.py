"""StreamBars end to end: real-time 5-second bars and keepUpToDate bars from the
simulator through the real ib_insync, shared lines, statuses and a forced reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from tests.e2e.conftest import expect_error
from tws_simulator import TwsSimulator

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.sim_config(history_update_interval=0.2),
]

Response = market_data_pb2.StreamBarsResponse


class BarReader:
    """Reads a StreamBars stream in the background and keeps every message."""

    def __init__(self, channel: grpc.aio.Channel, request: market_data_pb2.StreamBarsRequest):
        stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        self.call = stub.StreamBars(request)
        self.messages: list[Response] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.call:
            self.messages.append(message)

    async def wait(self, predicate: Callable[[Response], bool], within: float = 15.0) -> Response:
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
        raise AssertionError(f"not seen within {within}s: {[str(m)[:80] for m in self.messages]}")

    def bars(self, index: int = 0) -> list[market_data_pb2.Bar]:
        return [m.bar.bar for m in self.messages if m.HasField("bar") and m.bar.index == index]

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


def bars_request(
    *symbols: str,
    size: int = market_data_pb2.BAR_SIZE_UNSPECIFIED,
    what: int = market_data_pb2.WHAT_TO_SHOW_UNSPECIFIED,
) -> market_data_pb2.StreamBarsRequest:
    return market_data_pb2.StreamBarsRequest(
        contracts=[common_pb2.Contract(symbol=s) for s in symbols],
        bar_size=size,  # type: ignore[arg-type]
        what_to_show=what,  # type: ignore[arg-type]
        heartbeat_interval=duration_pb2.Duration(seconds=1),
    )


def completed(index: int = 0) -> Callable[[Response], bool]:
    return lambda m: m.HasField("bar") and m.bar.index == index and m.bar.bar.completed


def status(index: int, state: int) -> Callable[[Response], bool]:
    return lambda m: (
        m.HasField("subscription_status")
        and m.subscription_status.index == index
        and m.subscription_status.state == state
    )


def check_sequence(bars: list[market_data_pb2.Bar]) -> None:
    """Completed bars come once each, in order; no forming bar after its completion."""
    done = [b.time.ToSeconds() for b in bars if b.completed]
    assert done == sorted(set(done)), done
    finished: set[int] = set()
    for bar in bars:
        assert bar.time.ToSeconds() not in finished, "a bar came again after it completed"
        if bar.completed:
            finished.add(bar.time.ToSeconds())
        o, h, lo, c = (Decimal(x.value) for x in (bar.open, bar.high, bar.low, bar.close))
        assert lo <= min(o, c) <= max(o, c) <= h


async def test_real_time_bars_and_a_bad_symbol(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    reader = BarReader(channel, bars_request("AAPL", "NOSUCH"))
    try:
        await reader.wait(status(0, market_data_pb2.SUBSCRIPTION_STATE_ACTIVE))
        await reader.wait(status(1, market_data_pb2.SUBSCRIPTION_STATE_NOT_FOUND))
        first = await reader.wait(completed(0), within=12)
        assert first.bar.contract.con_id == 265598
        assert first.bar.bar.time.ToSeconds() % 5 == 0
        assert Decimal(first.bar.bar.volume.value) >= 0
        await reader.wait(lambda m: m.HasField("heartbeat"))
        assert len(simulator.history.realtime) == 1
    finally:
        reader.close()
    await asyncio.sleep(0.3)
    assert not simulator.history.realtime  # the IB subscription ended with its last stream


async def test_kept_up_to_date_bars_are_shared_and_completed_once(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    request = bars_request(
        "MSFT", size=market_data_pb2.BAR_SIZE_10_SECONDS, what=market_data_pb2.WHAT_TO_SHOW_MIDPOINT
    )
    first, second = BarReader(channel, request), BarReader(channel, request)
    try:
        await first.wait(lambda m: m.HasField("bar") and not m.bar.bar.completed)
        await second.wait(lambda m: m.HasField("bar"))
        assert len(simulator.history.updates) == 1  # one IB subscription for both streams
        # the forming bar changes, then completes; the next one starts
        start = len(first.bars())
        await first.wait(lambda m: completed()(m) and first.messages.index(m) > start, within=15)
        await first.wait(
            lambda m: (
                m.HasField("bar") and not m.bar.bar.completed and first.bars()[-1] == m.bar.bar
            )
        )
        check_sequence(first.bars())
        check_sequence(second.bars())
        assert all(b.volume.value == "" for b in first.bars())  # midpoints have no volume
    finally:
        first.close()
        second.close()
    await asyncio.sleep(0.3)
    assert not simulator.history.updates


async def test_bars_resume_after_a_reconnect_without_repeating(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    reader = BarReader(channel, bars_request("AAPL", size=market_data_pb2.BAR_SIZE_10_SECONDS))
    try:
        await reader.wait(completed(), within=15)
        simulator.faults.drop_all_connections()
        await reader.wait(status(0, market_data_pb2.SUBSCRIPTION_STATE_PAUSED))
        await reader.wait(
            lambda m: (
                m.HasField("connection_state")
                and m.connection_state.state == common_pb2.CONNECTION_STATE_CONNECTED
            )
        )
        back = await reader.wait(status(0, market_data_pb2.SUBSCRIPTION_STATE_ACTIVE))
        after = reader.messages.index(back)
        await reader.wait(lambda m: completed()(m) and reader.messages.index(m) > after, within=15)
        check_sequence(reader.bars())
    finally:
        reader.close()


async def test_invalid_live_bar_requests(channel: grpc.aio.Channel) -> None:
    stub = market_data_pb2_grpc.MarketDataServiceStub(channel)

    async def first(request: market_data_pb2.StreamBarsRequest) -> None:
        async for _ in stub.StreamBars(request):
            return

    err = await expect_error(first(bars_request("AAPL", size=market_data_pb2.BAR_SIZE_1_SECOND)))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and "bar_size" in err.violations
    err = await expect_error(first(bars_request("AAPL", what=market_data_pb2.WHAT_TO_SHOW_BID_ASK)))
    assert "what_to_show" in err.violations
    err = await expect_error(first(market_data_pb2.StreamBarsRequest()))
    assert "contracts" in err.violations


async def test_forex_trades_fail_per_subscription(channel: grpc.aio.Channel) -> None:
    request = bars_request(what=market_data_pb2.WHAT_TO_SHOW_TRADES)
    request.contracts.add(symbol="EUR", sec_type=common_pb2.SECURITY_TYPE_FOREX, currency="USD")
    request.contracts.add(symbol="AAPL")
    reader = BarReader(channel, request)
    try:
        failed = await reader.wait(status(0, market_data_pb2.SUBSCRIPTION_STATE_FAILED))
        assert failed.subscription_status.ib_code == 420
        await reader.wait(completed(1), within=12)  # the other contract is not affected
    finally:
        reader.close()


async def test_daily_live_bars_are_dated_at_the_exchange(channel: grpc.aio.Channel) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    reader = BarReader(channel, bars_request("AAPL", size=market_data_pb2.BAR_SIZE_1_DAY))
    try:
        done = await reader.wait(completed())  # the last session, as context
        forming = await reader.wait(lambda m: m.HasField("bar") and not m.bar.bar.completed)
        for bar in (done.bar.bar, forming.bar.bar):
            day = datetime.strptime(bar.trade_date, "%Y%m%d").replace(tzinfo=ZoneInfo("US/Eastern"))
            assert bar.time.ToSeconds() == int(day.timestamp())
        assert done.bar.bar.trade_date < forming.bar.bar.trade_date
    finally:
        reader.close()


async def test_kept_up_bars_wait_for_the_history_pacing(channel: grpc.aio.Channel) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    # five history requests for AAPL trades within 2 s: a sixth would break IB's rule
    for days in range(1, 6):
        await md.GetHistoricalBars(
            market_data_pb2.GetHistoricalBarsRequest(
                contract=common_pb2.Contract(symbol="AAPL"),
                duration=market_data_pb2.HistoryDuration(
                    count=days, unit=market_data_pb2.DURATION_UNIT_DAY
                ),
                bar_size=market_data_pb2.BAR_SIZE_1_HOUR,
            ),
            timeout=10,
        )
    reader = BarReader(channel, bars_request("AAPL", size=market_data_pb2.BAR_SIZE_10_SECONDS))
    try:
        waiting = await reader.wait(status(0, market_data_pb2.SUBSCRIPTION_STATE_LIMIT_REACHED))
        assert "pacing" in waiting.subscription_status.message
        await reader.wait(status(0, market_data_pb2.SUBSCRIPTION_STATE_ACTIVE), within=5)
        await reader.wait(lambda m: m.HasField("bar"), within=5)
    finally:
        reader.close()
