"""The account: values, summary, portfolio and positions, consistent with moving prices and
with fills booked through ``Account.apply_fill`` (the entry point of the order side)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from ib_insync import IB, Stock

from tws_simulator import TwsSimulator

from .conftest import Connect
from .helpers import RawClient, wait_until

STARTING = {"AAPL": (100, 150.0), "SPY": (-10, 460.0)}


def values(ib: IB, currency: str = "USD") -> dict[str, float]:
    return {
        v.tag: float(v.value)
        for v in ib.accountValues()
        if v.currency == currency and v.value.replace(".", "").lstrip("-").isdigit()
    }


@pytest.mark.sim_config(cash=250_000.0, positions=STARTING)
async def test_values_positions_and_portfolio_after_connect(
    ib: IB, simulator: TwsSimulator
) -> None:
    account_id = simulator.account.account_id
    positions = {p.contract.symbol: p for p in ib.positions()}
    assert set(positions) == {"AAPL", "SPY"}
    assert positions["AAPL"].position == 100 and positions["AAPL"].avgCost == 150.0
    assert positions["SPY"].position == -10 and positions["SPY"].account == account_id

    portfolio = {item.contract.symbol: item for item in ib.portfolio()}
    aapl = portfolio["AAPL"]
    assert aapl.marketValue == pytest.approx(100 * aapl.marketPrice, abs=0.01)
    assert aapl.unrealizedPNL == pytest.approx(100 * (aapl.marketPrice - 150.0), abs=0.01)
    assert aapl.contract.primaryExchange == "NASDAQ"

    v = values(ib)
    market_value = sum(item.marketValue for item in portfolio.values())
    assert v["TotalCashValue"] == 250_000.0
    assert v["NetLiquidation"] == pytest.approx(250_000.0 + market_value, abs=0.05)
    gross = sum(abs(item.marketValue) for item in portfolio.values())
    assert v["GrossPositionValue"] == pytest.approx(gross, abs=0.05)
    assert v["AvailableFunds"] == pytest.approx(v["NetLiquidation"] - 0.25 * gross, abs=0.05)
    assert v["BuyingPower"] == pytest.approx(4 * v["AvailableFunds"], abs=0.2)
    assert v["ExcessLiquidity"] > 0
    tags = {x.tag for x in ib.accountValues()}
    assert {"AccountType", "Cushion", "RealizedPnL", "UnrealizedPnL", "CashBalance"} <= tags


@pytest.mark.sim_config(positions=STARTING)
async def test_account_summary_with_its_end_marker(ib: IB, simulator: TwsSimulator) -> None:
    summary = await asyncio.wait_for(ib.accountSummaryAsync(), 5)
    by_tag = {v.tag: v for v in summary}
    assert {
        "NetLiquidation",
        "TotalCashValue",
        "BuyingPower",
        "AvailableFunds",
        "ExcessLiquidity",
        "GrossPositionValue",
        "AccountType",
    } <= set(by_tag)
    assert by_tag["NetLiquidation"].currency == "USD"
    assert by_tag["AccountType"].value == "INDIVIDUAL" and by_tag["AccountType"].currency == ""
    assert all(v.account == simulator.account.account_id for v in summary)
    assert float(by_tag["NetLiquidation"].value) == pytest.approx(
        simulator.account.net_liquidation(), rel=1e-3
    )


@pytest.mark.sim_config(positions=STARTING)
async def test_portfolio_follows_the_market(ib: IB, simulator: TwsSimulator) -> None:
    aapl_id = 265598
    simulator.market.move_to(aapl_id, 200.0)
    assert await wait_until(
        lambda: any(
            abs(i.marketPrice - 200.0) < 0.05 for i in ib.portfolio() if i.contract.conId == aapl_id
        )
    )
    [item] = [i for i in ib.portfolio() if i.contract.conId == aapl_id]
    assert item.unrealizedPNL == pytest.approx(100 * (item.marketPrice - 150.0), abs=0.01)
    # Values and portfolio tell the same story: net liquidation = cash + market values.
    cash = simulator.account.cash
    assert await wait_until(
        lambda: (
            values(ib)["NetLiquidation"]
            == pytest.approx(cash + sum(i.marketValue for i in ib.portfolio()), abs=50.0)
        )
    )
    spy = simulator.market.quote(756733).last
    # AAPL's jump to 200 is in it (100 long), as is the SPY short (-10).
    assert values(ib)["NetLiquidation"] == pytest.approx(cash + 100 * 200 - 10 * spy, abs=100)


async def test_fills_update_cash_positions_portfolio_and_values(
    ib: IB, connect: Connect, simulator: TwsSimulator
) -> None:
    other = await connect(client_id=2)
    [msft] = await ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD"))
    inst = simulator.universe.by_con_id(msft.conId)
    assert inst is not None
    cash = simulator.account.cash

    realized = simulator.account.apply_fill(inst, "BOT", Decimal(100), 370.0, 1.0)
    assert realized > 1e300  # opening: nothing realized (UNSET_DOUBLE)
    assert simulator.account.cash == pytest.approx(cash - 37_001.0)

    def holds_msft(client: IB) -> bool:
        return any(p.contract.conId == msft.conId for p in client.positions())

    assert await wait_until(lambda: holds_msft(ib) and holds_msft(other))
    [pos] = [p for p in ib.positions() if p.contract.conId == msft.conId]
    assert pos.position == 100 and pos.avgCost == pytest.approx(370.01)
    assert await wait_until(lambda: values(ib)["TotalCashValue"] == pytest.approx(cash - 37_001.0))
    assert await wait_until(lambda: any(i.contract.conId == msft.conId for i in ib.portfolio()))

    realized = simulator.account.apply_fill(inst, "SLD", Decimal(100), 380.0, 1.0)
    assert realized == pytest.approx(100 * (380.0 - 370.01) - 1.0)
    assert await wait_until(lambda: not any(p.contract.conId == msft.conId for p in ib.positions()))
    assert await wait_until(lambda: not any(i.contract.conId == msft.conId for i in ib.portfolio()))
    assert await wait_until(lambda: values(ib)["RealizedPnL"] == pytest.approx(realized, abs=0.01))


@pytest.mark.sim_config(positions=STARTING)
async def test_multi_account_updates_and_positions(ib: IB, simulator: TwsSimulator) -> None:
    account_id = simulator.account.account_id
    await asyncio.wait_for(ib.reqAccountUpdatesMultiAsync(account_id, "MODEL1"), 5)
    modelled = [v for v in ib.accountValues(account_id) if v.modelCode == "MODEL1"]
    assert "NetLiquidation" in {v.tag for v in modelled}
    positions = await asyncio.wait_for(ib.reqPositionsAsync(), 5)
    assert {p.contract.symbol for p in positions} == {"AAPL", "SPY"}


@pytest.mark.sim_config(positions=STARTING)
async def test_pnl_and_pnl_single(ib: IB, simulator: TwsSimulator) -> None:
    account_id = simulator.account.account_id
    pnl = ib.reqPnL(account_id)
    assert await wait_until(
        lambda: pnl.unrealizedPnL == pnl.unrealizedPnL and pnl.dailyPnL == pnl.dailyPnL
    )
    expected = sum(i.unrealized_pnl for i in simulator.account.portfolio())
    assert pnl.unrealizedPnL == pytest.approx(expected, abs=50)
    single = ib.reqPnLSingle(account_id, "", 265598)
    assert await wait_until(lambda: single.position == 100)
    assert single.value == pytest.approx(100 * simulator.market.quote(265598).last, rel=0.01)
    ib.cancelPnLSingle(account_id, "", 265598)
    ib.cancelPnL(account_id)


async def test_account_summary_ledger_tags(simulator: TwsSimulator) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=3)
    try:
        await raw.send(62, 1, 5, "All", "$LEDGER:USD,NetLiquidation")
        await raw.expect("64")
        rows = [f for f in raw.pending if f[0] == "63"]
        keyed = {(f[4], f[6]) for f in rows}
        assert ("NetLiquidation", "USD") in keyed
        assert ("CashBalance", "USD") in keyed and ("CashBalance", "BASE") not in keyed
        assert not any(f[4] == "BuyingPower" for f in rows)  # only what was asked for
    finally:
        await raw.close()
