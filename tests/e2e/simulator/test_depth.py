"""Market depth from the simulator, as ib_insync keeps it (its own insert/update/delete)."""

from __future__ import annotations

import asyncio

import pytest
from ib_insync import IB, Forex, Index, Stock

from tws_simulator import TwsSimulator


def rows(levels: list) -> list[tuple[float, float]]:
    return [(lv.price, float(lv.size)) for lv in levels]


@pytest.mark.parametrize("smart", [False, True])
async def test_book_follows_the_simulator_through_many_changes(
    simulator: TwsSimulator, ib: IB, smart: bool
) -> None:
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    ticker = ib.reqMktDepth(aapl, numRows=8, isSmartDepth=smart)
    await asyncio.sleep(1.0)  # many quote steps: inserts, updates and deletes
    simulator.market.paused = True
    await asyncio.sleep(0.2)
    [sub] = simulator.depth.subscriptions()
    assert len(ticker.domTicks) > 0
    assert rows(ticker.domBids) == rows(sub.bids) and rows(ticker.domAsks) == rows(sub.asks)
    assert len(ticker.domBids) == len(ticker.domAsks) == 8
    quote = simulator.market.quote(aapl.conId)
    assert ticker.domBids[0].price == quote.bid and ticker.domAsks[0].price == quote.ask
    assert ticker.domBids[0].size == float(quote.bid_size)
    prices = [lv.price for lv in ticker.domBids]
    assert prices == sorted(prices, reverse=True)
    assert all(lv.marketMaker for lv in ticker.domBids) == smart
    ib.cancelMktDepth(aapl, isSmartDepth=smart)
    await asyncio.sleep(0.1)
    assert simulator.depth.subscriptions() == []


@pytest.mark.sim_config(depth_line_limit=2)
async def test_depth_limit_and_unsupported_kinds(simulator: TwsSimulator, ib: IB) -> None:
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    contracts = await ib.qualifyContractsAsync(
        Stock("AAPL", "SMART", "USD"), Stock("MSFT", "SMART", "USD"), Forex("EURUSD")
    )
    for contract in contracts:
        ib.reqMktDepth(contract, numRows=3)
    [spx] = await ib.qualifyContractsAsync(Index("SPX", "CBOE"))
    ib.reqMktDepth(spx)
    await asyncio.sleep(0.3)
    assert [code for _, code in errors] == [309, 10092]
    assert len(simulator.depth.subscriptions()) == 2


@pytest.mark.sim_config(depth_permission=False)
async def test_no_depth_permission(ib: IB) -> None:
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    ib.reqMktDepth(aapl)
    await asyncio.sleep(0.2)
    assert errors == [354]
