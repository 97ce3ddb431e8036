"""Market data: streams until cancelled, snapshots, market data types, line limit, tick-by-tick."""

from __future__ import annotations

import asyncio
import math

import pytest
from ib_insync import IB, Forex, Stock, Ticker

from tws_simulator import TwsSimulator, market_data

from .conftest import Connect
from .helpers import RawClient, contract_of, wait_until


def on_grid(price: float, tick: float) -> bool:
    return math.isclose(round(price / tick) * tick, price, abs_tol=tick / 1000)


async def qualified(ib: IB, *contracts: Stock | Forex) -> list:
    result = await ib.qualifyContractsAsync(*contracts)
    assert len(result) == len(contracts)
    return result


async def test_streamed_ticks_until_cancelled(ib: IB, simulator: TwsSimulator) -> None:
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    updates: list[Ticker] = []
    ticker = ib.reqMktData(aapl)
    ticker.updateEvent += updates.append
    assert await wait_until(lambda: len(updates) >= 10)
    assert 0 < ticker.bid < ticker.ask
    assert on_grid(ticker.bid, 0.01) and on_grid(ticker.ask, 0.01)
    assert ticker.ask - ticker.bid <= 0.031
    assert ticker.bidSize > 0 and ticker.askSize > 0 and ticker.bidSize % 100 == 0
    assert await wait_until(lambda: ticker.last > 0 and ticker.volume > 0)
    assert ticker.low <= ticker.last <= ticker.high
    assert ticker.close > 0 and ticker.minTick == 0.01
    quote = simulator.market.quote(aapl.conId)
    assert abs(quote.bid - ticker.bid) < 5  # the same market, a few ticks apart at most
    assert simulator.market_data.lines_in_use == 1

    ib.cancelMktData(aapl)
    assert await wait_until(lambda: simulator.market_data.lines_in_use == 0)
    await asyncio.sleep(0.05)  # anything already on the wire arrives
    count = len(updates)
    await asyncio.sleep(0.2)  # ten market steps
    assert len(updates) == count


async def test_forex_quotes_have_no_trades(ib: IB) -> None:
    [eur] = await qualified(ib, Forex("EURUSD"))
    ticker = ib.reqMktData(eur)
    assert await wait_until(lambda: ticker.bid > 0 and ticker.ask > 0)
    assert on_grid(ticker.bid, 0.00005) and ticker.bid < ticker.ask
    await asyncio.sleep(0.1)
    assert math.isnan(ticker.last) and math.isnan(ticker.volume)


async def test_snapshot_ends_with_tick_snapshot_end(ib: IB, simulator: TwsSimulator) -> None:
    contracts = await qualified(ib, Stock("MSFT", "SMART", "USD"), Forex("EURUSD"))
    tickers = await asyncio.wait_for(ib.reqTickersAsync(*contracts), 5)
    assert [contract_of(t).conId for t in tickers] == [c.conId for c in contracts]
    assert all(t.bid > 0 and t.ask > t.bid for t in tickers)
    assert tickers[0].last > 0 and tickers[0].close > 0
    assert simulator.market_data.lines_in_use == 0  # a snapshot holds no line


async def test_snapshot_on_the_wire(simulator: TwsSimulator) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=2)
    try:
        await raw.send(
            1,
            11,
            5,
            272093,
            "MSFT",
            "STK",
            "",
            0.0,
            "",
            "",
            "SMART",
            "",
            "USD",
            "",
            "",
            0,
            "",
            1,
            0,
            "",
        )
        params = await raw.expect("81")
        assert params == ["81", "5", "0.01", "9c0001", "3"]
        end = await raw.expect("57")
        assert end == ["57", "1", "5"]
        received = raw.pending
        tick_types = {int(f[3]) for f in received if f[0] in ("1", "2")}
        assert {1, 2, 4, 6, 7, 8, 9, 14} <= tick_types
        prices = {int(f[3]): f for f in received if f[0] == "1"}
        assert prices[1][1] == "6" and len(prices[1]) == 7  # tickPrice v6: ..., size, attrMask
    finally:
        await raw.close()


async def test_snapshot_with_generic_ticks_is_refused(ib: IB) -> None:
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    ib.reqMktData(aapl, "233", snapshot=True)
    assert await wait_until(lambda: errors)
    assert errors == [321]


async def test_generic_ticks_rt_volume_and_shortable(ib: IB) -> None:
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    seen: set[int] = set()
    ticker = ib.reqMktData(aapl, "233,236")
    ticker.updateEvent += lambda t: seen.update(tick.tickType for tick in t.ticks)
    assert await wait_until(lambda: ticker.rtVolume > 0 and ticker.shortableShares > 0)
    assert ticker.vwap > 0 and ticker.rtTime is not None
    assert 46 in seen  # the shortable indicator (3.0: easy to borrow)


async def test_unknown_contract_for_market_data_gets_200(ib: IB) -> None:
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    ticker = ib.reqMktData(Stock("NOPE", "SMART", "USD"))
    assert await wait_until(lambda: errors)
    assert errors[0][1] == 200
    assert math.isnan(ticker.bid)


async def test_live_permission_makes_tws_ignore_a_delayed_request(ib: IB) -> None:
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(aapl)
    assert await wait_until(lambda: ticker.bid > 0)
    assert ticker.marketDataType == 1


@pytest.mark.sim_config(live_market_data=False)
async def test_delayed_data_without_live_permission(ib: IB) -> None:
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    ib.reqMktData(aapl)  # live, but no subscription: 354
    assert await wait_until(lambda: 354 in errors)

    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(aapl)
    assert await wait_until(lambda: ticker.bid > 0 and ticker.last > 0)
    assert 10167 in errors
    assert ticker.marketDataType == 3
    seen: set[int] = set()
    ticker.updateEvent += lambda t: seen.update(tick.tickType for tick in t.ticks)
    assert await wait_until(lambda: {66, 67, 68} <= seen)  # delayed bid, ask, last
    assert not seen & {1, 2, 4}  # never their live counterparts


async def test_frozen_data_is_one_set_of_values(ib: IB) -> None:
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    ib.reqMarketDataType(2)
    ticker = ib.reqMktData(aapl)
    assert await wait_until(lambda: ticker.bid > 0)
    assert ticker.marketDataType == 2
    updates: list[Ticker] = []
    ticker.updateEvent += updates.append
    await asyncio.sleep(0.2)
    assert updates == []


@pytest.mark.sim_config(line_limit=2)
async def test_line_limit_answers_with_max_tickers(
    ib: IB, connect: Connect, simulator: TwsSimulator
) -> None:
    aapl, msft, tsla = await qualified(
        ib, *(Stock(s, "SMART", "USD") for s in ("AAPL", "MSFT", "TSLA"))
    )
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
    ib.reqMktData(aapl)
    other = await connect(client_id=2)  # the limit is for the whole account
    other.reqMktData(msft)
    assert await wait_until(lambda: simulator.market_data.lines_in_use == 2)
    third = ib.reqMktData(tsla)
    assert await wait_until(lambda: errors)
    assert errors[0][1:] == (101, "Max number of tickers has been reached")
    assert math.isnan(third.bid)
    # Freeing a line makes room again.
    ib.cancelMktData(aapl)
    ib.cancelMktData(tsla)
    assert await wait_until(lambda: simulator.market_data.lines_in_use == 1)
    again = ib.reqMktData(tsla)
    assert await wait_until(lambda: again.bid > 0)


async def test_disconnecting_frees_its_lines(connect: Connect, simulator: TwsSimulator) -> None:
    ib = await connect(client_id=6)
    [aapl] = await qualified(ib, Stock("AAPL", "SMART", "USD"))
    ib.reqMktData(aapl)
    assert await wait_until(lambda: simulator.market_data.lines_in_use == 1)
    ib.disconnect()
    assert await wait_until(lambda: simulator.market_data.lines_in_use == 0)


async def test_several_clients_get_the_same_ticks(connect: Connect) -> None:
    one, two = await connect(client_id=1), await connect(client_id=2)
    [spy] = await qualified(one, Stock("SPY", "SMART", "USD"))
    t1, t2 = one.reqMktData(spy), two.reqMktData(spy)
    assert await wait_until(lambda: t1.bid > 0 and t2.bid > 0)
    await asyncio.sleep(0.1)
    before = t1.bid, t1.ask
    assert await wait_until(lambda: (t1.bid, t1.ask) != before)
    assert await wait_until(
        lambda: (t1.bid, t1.ask, t1.volume) == (t2.bid, t2.ask, t2.volume), within=2
    )


async def test_tick_by_tick_bid_ask(ib: IB) -> None:
    [eur] = await qualified(ib, Forex("EURUSD"))
    ticks: list = []
    ticker = ib.reqTickByTickData(eur, "BidAsk")
    ticker.updateEvent += lambda t: ticks.extend(t.tickByTicks)
    assert await wait_until(lambda: len(ticks) >= 3)
    assert all(t.bidPrice < t.askPrice and t.bidSize > 0 for t in ticks)
    ib.cancelTickByTickData(eur, "BidAsk")


async def test_a_client_that_does_not_keep_up_gets_the_latest_not_every_tick(
    ib: IB, simulator: TwsSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a client's socket is congested its ticks are skipped; once it drains, one
    catch-up diff brings every field to the newest quote (a high set while skipping too)."""
    [msft] = await qualified(ib, Stock("MSFT", "SMART", "USD"))
    simulator.market.paused = True  # only the moves below change the market
    ticker = ib.reqMktData(msft)
    assert await wait_until(lambda: ticker.bid > 0 and ticker.high > 0)
    start = simulator.market.quote(msft.conId).bid
    monkeypatch.setattr(market_data, "CONGESTED_BYTES", -1)  # every client is congested
    simulator.market.move_to(msft.conId, start * 2)  # a new high, never sent
    simulator.market.move_to(msft.conId, start * 1.5)
    await asyncio.sleep(0.2)
    assert ticker.bid < start * 1.2  # nothing was sent
    monkeypatch.setattr(market_data, "CONGESTED_BYTES", 256 * 1024)
    newest = simulator.market.move_to(msft.conId, start * 1.2)
    assert await wait_until(lambda: ticker.bid == newest.bid)
    assert ticker.high == newest.high >= start * 1.99  # from the catch-up diff
    ib.cancelMktData(msft)
