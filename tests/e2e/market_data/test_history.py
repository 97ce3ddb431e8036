"""GetHistoricalBars end to end: gateway + real ib_insync + the simulator's history."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from google.protobuf import json_format

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)

# The README's grpcurl examples, verbatim.
README_DAILY = """{"contract": {"symbol": "AAPL"}, "duration": {"count": 5, "unit":
 "DURATION_UNIT_DAY"}, "barSize": "BAR_SIZE_1_DAY", "regularTradingHoursOnly": true}"""
README_EURUSD = """{"contract": {"symbol": "EUR", "secType": "SECURITY_TYPE_FOREX",
 "exchange": "IDEALPRO", "currency": "USD"}, "duration": {"count": 1800, "unit":
 "DURATION_UNIT_SECOND"}, "barSize": "BAR_SIZE_5_MINUTES"}"""


def request(text: str) -> market_data_pb2.GetHistoricalBarsRequest:
    return json_format.Parse(text, market_data_pb2.GetHistoricalBarsRequest())


def history(
    symbol: str = "AAPL",
    count: int = 2,
    unit: int = market_data_pb2.DURATION_UNIT_DAY,
    size: int = market_data_pb2.BAR_SIZE_1_HOUR,
    what: int = market_data_pb2.WHAT_TO_SHOW_TRADES,
    **kw: object,
) -> market_data_pb2.GetHistoricalBarsRequest:
    return market_data_pb2.GetHistoricalBarsRequest(
        contract=common_pb2.Contract(symbol=symbol),
        duration=market_data_pb2.HistoryDuration(count=count, unit=unit),  # type: ignore[arg-type]
        bar_size=size,  # type: ignore[arg-type]
        what_to_show=what,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


# the intraday bar sizes of test_bars_of_several_sizes, in seconds
INTRADAY_SECONDS = {"BAR_SIZE_1_SECOND": 1, "BAR_SIZE_15_MINUTES": 900, "BAR_SIZE_1_HOUR": 3600}


def check_bars(bars: list[market_data_pb2.Bar], *, volume: bool) -> None:
    assert bars
    times = [b.time.ToDatetime() for b in bars]
    assert times == sorted(times) and len(set(times)) == len(times)
    for bar in bars:
        o, h, lo, c = (Decimal(x.value) for x in (bar.open, bar.high, bar.low, bar.close))
        assert lo <= min(o, c) <= max(o, c) <= h
        if volume:
            assert Decimal(bar.volume.value) > 0 and lo <= Decimal(bar.wap.value) <= h
            assert bar.bar_count > 0
        else:
            assert bar.volume.value == "" and bar.wap.value == "" and bar.bar_count == 0


@pytest.mark.parametrize(
    ("count", "unit", "size", "what"),
    [
        (2, "DURATION_UNIT_DAY", "BAR_SIZE_1_HOUR", "WHAT_TO_SHOW_TRADES"),
        (1800, "DURATION_UNIT_SECOND", "BAR_SIZE_1_SECOND", "WHAT_TO_SHOW_MIDPOINT"),
        (1, "DURATION_UNIT_WEEK", "BAR_SIZE_15_MINUTES", "WHAT_TO_SHOW_BID_ASK"),
        (1, "DURATION_UNIT_MONTH", "BAR_SIZE_1_DAY", "WHAT_TO_SHOW_ASK"),
        (1, "DURATION_UNIT_YEAR", "BAR_SIZE_1_WEEK", "WHAT_TO_SHOW_HISTORICAL_VOLATILITY"),
    ],
)
async def test_bars_of_several_sizes(
    channel: grpc.aio.Channel, count: int, unit: str, size: str, what: str
) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    req = history(
        count=count,
        unit=market_data_pb2.DurationUnit.Value(unit),
        size=market_data_pb2.BarSize.Value(size),
        what=market_data_pb2.WhatToShow.Value(what),
    )
    asked = datetime.now(UTC)
    reply = await md.GetHistoricalBars(req, timeout=20)
    assert reply.contract.con_id == 265598 and reply.time_zone == "US/Eastern"
    check_bars(list(reply.bars), volume=what == "WHAT_TO_SHOW_TRADES")
    calendar = size in ("BAR_SIZE_1_DAY", "BAR_SIZE_1_WEEK")
    assert all(bool(b.trade_date) == calendar for b in reply.bars)
    # every bar but the one forming now is complete
    assert all(b.completed for b in reply.bars[:-1])
    last = reply.bars[-1]
    if last.completed:
        # The forming bar ended while the answer was on its way (1-second bars on a busy
        # machine): it is still the bar that was forming when we asked.
        assert not calendar
        length = timedelta(seconds=INTRADAY_SECONDS[size])
        start = last.time.ToDatetime(tzinfo=UTC)
        assert asked - length <= start <= datetime.now(UTC) - length


async def test_readme_examples(channel: grpc.aio.Channel, simulator: TwsSimulator) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    daily = await md.GetHistoricalBars(request(README_DAILY), timeout=20)
    check_bars(list(daily.bars), volume=True)
    assert len(daily.bars) == 5 and daily.bars[-1].trade_date
    today = datetime.now(UTC).astimezone().date()
    assert abs((datetime.strptime(daily.bars[-1].trade_date, "%Y%m%d").date() - today).days) <= 1
    quote = simulator.market.quote(265598)
    assert Decimal(daily.bars[-2].close.value) == Decimal(str(quote.close))  # previous close
    eur = await md.GetHistoricalBars(request(README_EURUSD), timeout=20)
    assert eur.contract.local_symbol == "EUR.USD"
    check_bars(list(eur.bars), volume=False)  # currency pairs default to midpoints
    assert all(Decimal("1") < Decimal(b.close.value) < Decimal("1.2") for b in eur.bars)


async def test_explicit_end_time_in_the_past(channel: grpc.aio.Channel) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    end = datetime.now(UTC) - timedelta(days=10)
    req = history(count=1, unit=market_data_pb2.DURATION_UNIT_WEEK)
    req.end_time.FromDatetime(end)
    reply = await md.GetHistoricalBars(req, timeout=20)
    check_bars(list(reply.bars), volume=True)
    assert reply.bars[-1].time.ToDatetime(tzinfo=UTC) < end
    assert all(b.completed for b in reply.bars)


async def test_invalid_requests_say_what_is_allowed(channel: grpc.aio.Channel) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    err = await expect_error(
        md.GetHistoricalBars(
            history(
                count=1,
                unit=market_data_pb2.DURATION_UNIT_YEAR,
                size=market_data_pb2.BAR_SIZE_1_MINUTE,
            )
        )
    )
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1 day of 1 min bars" in err.violations["duration"]
    err = await expect_error(
        md.GetHistoricalBars(
            market_data_pb2.GetHistoricalBarsRequest(contract=common_pb2.Contract(symbol="X"))
        )
    )
    assert {"bar_size", "duration.unit", "duration.count"} <= set(err.violations)
    future = history()
    future.end_time.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    err = await expect_error(md.GetHistoricalBars(future))
    assert "end_time" in err.violations
    err = await expect_error(md.GetHistoricalBars(history(symbol="NOPE")))
    assert err.code is grpc.StatusCode.NOT_FOUND


async def test_forex_trades_are_not_found(channel: grpc.aio.Channel) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    req = history(symbol="EUR", what=market_data_pb2.WHAT_TO_SHOW_TRADES)
    req.contract.sec_type = 4  # type: ignore[assignment]
    req.contract.currency = "USD"
    err = await expect_error(md.GetHistoricalBars(req))
    assert err.code is grpc.StatusCode.NOT_FOUND and err.info is not None
    assert err.info.metadata["ib_code"] == "162"


async def test_pacing_cache_budget_and_retry_info(
    simulator: TwsSimulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(history_requests_per_10min=3)
    async with gateway_channel(gw) as channel:
        md = market_data_pb2_grpc.MarketDataServiceStub(channel)
        # a burst of identical requests: one IB request, the rest shared or cached
        replies = await asyncio.gather(*(md.GetHistoricalBars(history()) for _ in range(5)))
        assert len({r.SerializeToString(deterministic=True) for r in replies}) <= 2
        assert [r.bars for r in replies] == [replies[0].bars] * 5
        again = await md.GetHistoricalBars(history())
        assert again.cached and again.bars == replies[0].bars
        # two more distinct requests fit the budget of 3; the 4th is refused at once
        await md.GetHistoricalBars(history(count=3))
        await md.GetHistoricalBars(history(what=market_data_pb2.WHAT_TO_SHOW_MIDPOINT))
        started = time.monotonic()
        err = await expect_error(md.GetHistoricalBars(history(count=4)))
        assert time.monotonic() - started < 1.5
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.info is not None and err.info.reason == "HISTORY_BUDGET_EXHAUSTED"
        assert err.retry is not None and err.retry.retry_delay.seconds > 500
        # cached answers cost nothing and still come back
        assert (await md.GetHistoricalBars(history())).cached
    # the simulator (IB) saw exactly three historical requests from the gateway
    [pacing] = simulator.history._pacing.values()
    assert len(pacing.times) == 3


@pytest.mark.sim_config(history_requests_per_10min=1)
async def test_ib_pacing_violation_is_resource_exhausted(
    simulator: TwsSimulator, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(history_cache_seconds=0)
    async with gateway_channel(gw) as channel:
        md = market_data_pb2_grpc.MarketDataServiceStub(channel)
        await md.GetHistoricalBars(history())
        err = await expect_error(md.GetHistoricalBars(history(count=3)))
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.info is not None and err.info.metadata["ib_code"] == "162"
        assert err.retry is not None
        # after IB's violation the gateway holds requests instead of adding to it
        err = await expect_error(md.GetHistoricalBars(history(count=4)))
        assert err.info is not None and err.info.reason == "IB_PACING_PENALTY"
        assert err.retry is not None and err.retry.retry_delay.seconds >= 5


async def test_a_slow_tws_gives_deadline_exceeded_and_the_answer_is_kept(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    md = market_data_pb2_grpc.MarketDataServiceStub(channel)
    await md.GetHistoricalBars(history(count=1), timeout=10)  # contract details cached by TWS
    simulator.faults.set_delay(1.5)
    try:
        started = asyncio.get_running_loop().time()
        err = await expect_error(md.GetHistoricalBars(history(count=2), timeout=0.8))
        assert asyncio.get_running_loop().time() - started < 1.5
        assert err.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert err.info is not None and err.info.reason == "IB_TIMEOUT"
        await asyncio.sleep(2.5)  # TWS answers late; the gateway keeps the answer
    finally:
        simulator.faults.set_delay(0)
    again = await md.GetHistoricalBars(history(count=2), timeout=5)
    assert again.cached and again.bars
