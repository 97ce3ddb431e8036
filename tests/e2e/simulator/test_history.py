"""Historical data from the simulator with the real ib_insync: bars, limits, pacing,
keepUpToDate, real-time bars, head timestamp."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ib_insync import IB, BarData, Contract, Forex, RequestError, Stock, util

from tws_simulator import TwsSimulator

from .conftest import Connect, simulator_config

EASTERN = ZoneInfo("US/Eastern")


async def aapl(ib: IB) -> Contract:
    [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    return contract


def well_formed(bars: list[BarData]) -> None:
    assert bars
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
    dates = [b.date for b in bars]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)


@pytest.mark.parametrize(
    ("duration", "size", "what", "rth"),
    [
        ("1800 S", "1 secs", "TRADES", False),
        ("2 D", "5 mins", "MIDPOINT", False),
        ("2 D", "1 hour", "BID", True),
        ("1 W", "30 mins", "ASK", False),
        ("1 M", "1 day", "BID_ASK", True),
        ("1 Y", "1 week", "ADJUSTED_LAST", True),
        ("1 Y", "1 month", "HISTORICAL_VOLATILITY", True),
        ("1 M", "1 day", "OPTION_IMPLIED_VOLATILITY", True),
    ],
)
async def test_bars_for_every_kind(ib: IB, duration: str, size: str, what: str, rth: bool) -> None:
    contract = await aapl(ib)
    ib.RaiseRequestErrors = True
    bars = await ib.reqHistoricalDataAsync(contract, "", duration, size, what, rth, timeout=10)
    well_formed(bars)
    if size.endswith(("day", "week", "month")):
        assert all(type(b.date) is date for b in bars)
    else:
        # formatDate=1: TWS names the exchange's zone, ib_insync makes it tz-aware
        assert all(isinstance(b.date, datetime) and b.date.tzinfo is not None for b in bars)
    if what in ("TRADES", "ADJUSTED_LAST"):
        assert all(b.volume > 0 and b.low <= b.average <= b.high for b in bars)
    else:
        assert all(b.volume == -1 and b.barCount == -1 for b in bars)
    if what.endswith("VOLATILITY"):
        assert all(0 < b.close < 2 for b in bars)
    if rth and size == "1 hour":
        today = datetime.now(EASTERN).date()
        earlier = [b.date for b in bars if isinstance(b.date, datetime) and b.date.date() < today]
        assert earlier and all(9 <= d.hour < 16 for d in earlier)


async def test_today_agrees_with_the_live_quote(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    await asyncio.sleep(0.5)
    simulator.market.paused = True  # freeze prices so both sides see the same market
    await asyncio.sleep(0.05)
    quote = simulator.market.quote(contract.conId)
    [today] = await ib.reqHistoricalDataAsync(contract, "", "1 D", "1 day", "TRADES", False)
    assert (today.open, today.high, today.low, today.close) == (
        quote.open,
        quote.high,
        quote.low,
        quote.last,
    )
    assert today.volume == float(quote.volume)
    minutes = await ib.reqHistoricalDataAsync(contract, "", "3600 S", "5 secs", "MIDPOINT", False)
    assert minutes[-1].close == pytest.approx(quote.midpoint)
    # the previous trading day's regular session closes at the quote's previous close
    daily = await ib.reqHistoricalDataAsync(contract, "", "5 D", "1 day", "TRADES", True)
    assert daily[-1].date == today.date and daily[-2].date < today.date
    assert daily[-2].close == quote.close


async def test_the_past_is_deterministic_with_the_seed(ib: IB) -> None:
    contract = await aapl(ib)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = await ib.reqHistoricalDataAsync(contract, end, "1 W", "1 hour", "TRADES", False)
    async with TwsSimulator(simulator_config()) as other:
        ib2 = IB()
        await ib2.connectAsync(other.host, other.port, clientId=3)
        try:
            second = await ib2.reqHistoricalDataAsync(
                contract, end, "1 W", "1 hour", "TRADES", False
            )
        finally:
            ib2.disconnect()
    diff = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert len(first) >= 16 and not diff, diff[:1]


async def test_forex_has_no_trades_but_midpoints(ib: IB) -> None:
    [eur] = await ib.qualifyContractsAsync(Forex("EURUSD"))
    ib.RaiseRequestErrors = True
    with pytest.raises(RequestError) as info:
        await ib.reqHistoricalDataAsync(eur, "", "1 D", "1 hour", "TRADES", False)
    assert info.value.code == 162
    bars = await ib.reqHistoricalDataAsync(eur, "", "1 W", "4 hours", "MIDPOINT", False)
    well_formed(bars)
    assert all(1.0 < b.close < 1.2 for b in bars)


async def test_epoch_dates_and_explicit_end(ib: IB) -> None:
    contract = await aapl(ib)
    end = datetime.now(UTC) - timedelta(days=7)
    bars = await ib.reqHistoricalDataAsync(
        contract, end, "1 D", "1 hour", "TRADES", False, formatDate=2
    )
    dates = [b.date for b in bars if isinstance(b.date, datetime)]
    assert dates and len(dates) == len(bars)
    assert all(d.utcoffset() == timedelta(0) for d in dates) and dates[-1] <= end
    frame = util.df(bars)
    assert frame is not None and len(frame) == len(bars)


async def test_limits_and_bad_requests_fail_at_once(ib: IB) -> None:
    contract = await aapl(ib)
    ib.RaiseRequestErrors = True
    started = time.monotonic()
    for args, code in [
        (("1 D", "1 secs", "TRADES"), 162),  # more than IB serves in one request
        (("1 Y", "1 min", "TRADES"), 162),
        (("1 D", "7 mins", "TRADES"), 321),  # not one of IB's bar sizes
        (("1 Q", "1 hour", "TRADES"), 162),
        (("1 D", "1 hour", "SCHEDULED"), 162),
    ]:
        with pytest.raises(RequestError) as info:
            await ib.reqHistoricalDataAsync(contract, "", *args, False, timeout=5)
        assert info.value.code == code, args
    with pytest.raises(RequestError) as unsupported:
        await asyncio.wait_for(ib.reqFundamentalDataAsync(contract, "ReportSnapshot"), 5)
    assert unsupported.value.code == 503
    assert time.monotonic() - started < 3


@pytest.mark.sim_config(history_requests_per_10min=3)
async def test_pacing_violations(simulator: TwsSimulator, connect: Connect) -> None:
    ib = await connect(client_id=1)
    ib.RaiseRequestErrors = True
    contract = await aapl(ib)
    await ib.reqHistoricalDataAsync(contract, "", "1 D", "1 hour", "TRADES", False)
    with pytest.raises(RequestError) as identical:
        await ib.reqHistoricalDataAsync(contract, "", "1 D", "1 hour", "TRADES", False)
    assert identical.value.code == 162 and "pacing" in identical.value.message
    await ib.reqHistoricalDataAsync(contract, "", "2 D", "1 hour", "TRADES", False)
    await ib.reqHistoricalDataAsync(contract, "", "3 D", "1 hour", "MIDPOINT", False)
    with pytest.raises(RequestError) as budget:
        await ib.reqHistoricalDataAsync(contract, "", "4 D", "1 hour", "BID", False)
    assert budget.value.code == 162
    other = await connect(client_id=2)  # pacing is per client
    assert await other.reqHistoricalDataAsync(contract, "", "4 D", "1 hour", "BID", False)


async def test_keep_up_to_date_and_real_time_bars(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    live = await ib.reqHistoricalDataAsync(
        contract, "", "60 S", "5 secs", "MIDPOINT", False, keepUpToDate=True
    )
    realtime = ib.reqRealTimeBars(contract, 5, "TRADES", False)
    first_len = len(live)
    updates: list[bool] = []
    live.updateEvent += lambda bars, new_bar: updates.append(new_bar)
    for _ in range(80):
        if len(live) > first_len and realtime:
            break
        await asyncio.sleep(0.1)
    assert updates and len(live) > first_len
    assert realtime and realtime[-1].time.tzinfo is not None
    bar = realtime[-1]
    assert bar.low <= bar.open_ <= bar.high and bar.volume >= 0
    ib.cancelHistoricalData(live)
    ib.cancelRealTimeBars(realtime)
    await asyncio.sleep(0.2)
    assert not simulator.history.updates and not simulator.history.realtime


async def test_head_timestamp(ib: IB) -> None:
    contract = await aapl(ib)
    head = await ib.reqHeadTimeStampAsync(contract, "TRADES", True, 1)
    assert isinstance(head, datetime) and head.year <= datetime.now().year - 9
