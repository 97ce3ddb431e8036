"""Options, futures, futures options and indices, as ib_insync sees them from the simulator."""

from __future__ import annotations

import asyncio

import pytest
from ib_insync import IB, ContFuture, Contract, Future, FuturesOption, Index, Option, Stock

from tws_simulator import TwsSimulator
from tws_simulator.clock import eastern


async def test_option_chain_parameters(simulator: TwsSimulator, ib: IB) -> None:
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    chains = await ib.reqSecDefOptParamsAsync("AAPL", "", "STK", aapl.conId)
    exchanges = {c.exchange for c in chains}
    assert {"SMART", "CBOE", "AMEX"} <= exchanges
    [smart] = [c for c in chains if c.exchange == "SMART"]
    assert (smart.tradingClass, smart.multiplier) == ("AAPL", "100")
    assert int(smart.underlyingConId) == 265598  # ib_insync keeps it as text
    listed = [o for o in simulator.universe.options_on(265598)]
    assert sorted(smart.expirations) == sorted({o.last_trade_date for o in listed})
    assert smart.strikes == sorted({o.strike for o in listed})
    # On IB's grid for a stock near 190: 2.5 apart.
    assert all(round(s / 2.5, 6).is_integer() for s in smart.strikes)
    assert min(smart.strikes) < 189.5 < max(smart.strikes)
    # weeklies (Fridays) and monthlies (third Fridays)
    assert len(smart.expirations) >= 5


async def test_index_options_have_two_classes_and_an_unknown_underlying_fails(ib: IB) -> None:
    chains = await ib.reqSecDefOptParamsAsync("SPX", "", "IND", 416904)
    assert {c.tradingClass for c in chains} == {"SPX", "SPXW"}
    assert {c.exchange for c in chains} == {"SMART", "CBOE"}
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    assert await ib.reqSecDefOptParamsAsync("NOPE", "", "STK", 1) == []
    assert 200 in errors


async def test_qualify_option_and_its_details(simulator: TwsSimulator, ib: IB) -> None:
    listed = simulator.universe.options_on(265598)
    wanted = next(o for o in listed if o.right == "C" and o.strike == 190.0)
    [opt] = await ib.qualifyContractsAsync(
        Option("AAPL", wanted.last_trade_date, 190, "C", "SMART")
    )
    assert opt.conId == wanted.con_id
    assert (opt.multiplier, opt.tradingClass) == ("100", "AAPL")
    assert opt.localSymbol == f"AAPL  {wanted.last_trade_date[2:]}C00190000"
    [details] = await ib.reqContractDetailsAsync(Contract(conId=wanted.con_id))
    assert details.underConId == 265598
    assert (details.underSymbol, details.underSecType) == ("AAPL", "STK")
    assert details.contractMonth == wanted.last_trade_date[:6]
    assert details.contract is not None and details.contract.strike == 190.0
    # A month instead of a day lists every expiry of that month: ambiguous for qualify.
    month = await ib.reqContractDetailsAsync(
        Option("AAPL", wanted.last_trade_date[:6], 190, "C", "SMART")
    )
    assert len(month) >= 1
    assert {d.contract.lastTradeDateOrContractMonth[:6] for d in month if d.contract} == {
        wanted.last_trade_date[:6]
    }


async def test_spx_third_friday_is_ambiguous_between_classes(
    simulator: TwsSimulator, ib: IB
) -> None:
    spx = simulator.universe.options_on(416904)
    weekly = {(o.last_trade_date, o.strike) for o in spx if o.trading_class == "SPXW"}
    monthly = next(
        o for o in spx if o.trading_class == "SPX" and (o.last_trade_date, o.strike) in weekly
    )
    spec = Option("SPX", monthly.last_trade_date, monthly.strike, "C", "SMART")
    spec.exchange = "CBOE"
    found = await ib.reqContractDetailsAsync(spec)
    assert sorted(d.contract.tradingClass for d in found if d.contract) == ["SPX", "SPXW"]
    spec.tradingClass = "SPXW"
    [one] = await ib.qualifyContractsAsync(spec)
    assert one.localSymbol.startswith("SPXW ")


async def test_futures_by_month_front_month_and_options(simulator: TwsSimulator, ib: IB) -> None:
    all_es = await ib.reqContractDetailsAsync(Future("ES", exchange="CME"))
    months = sorted(d.contract.lastTradeDateOrContractMonth for d in all_es if d.contract)
    assert len(months) == 4
    [front] = await ib.reqContractDetailsAsync(ContFuture("ES", "CME"))
    assert front.contract is not None
    assert front.contract.secType == "CONTFUT"
    assert front.contract.lastTradeDateOrContractMonth == months[0]
    [by_month] = await ib.qualifyContractsAsync(Future("ES", months[1][:6], "CME"))
    assert by_month.multiplier == "50" and by_month.localSymbol.startswith("ES")
    [index] = await ib.qualifyContractsAsync(Index("SPX", "CBOE"))
    assert index.conId == 416904
    # The future trades above the index by its basis (carry), converging at expiry.
    [fut_t, ind_t] = await ib.reqTickersAsync(by_month, index)
    assert fut_t.bid > ind_t.last
    chains = await ib.reqSecDefOptParamsAsync("ES", "CME", "FUT", front.contract.conId)
    [es_chain] = chains
    assert es_chain.tradingClass == "ES" and es_chain.multiplier == "50"
    [fop] = await ib.qualifyContractsAsync(
        FuturesOption("ES", months[0], es_chain.strikes[3], "P", "CME")
    )
    assert fop.secType == "FOP" and fop.multiplier == "50"
    details = await ib.reqContractDetailsAsync(Contract(conId=fop.conId))
    assert details[0].underConId == front.contract.conId


async def test_index_quotes_have_no_bid_or_ask(ib: IB) -> None:
    [spx] = await ib.qualifyContractsAsync(Index("SPX", "CBOE"))
    ticker = ib.reqMktData(spx)
    await asyncio.sleep(0.3)
    assert ticker.last > 1000 and ticker.close > 1000
    assert ticker.bidSize != ticker.bidSize or not ticker.bidSize  # nan or 0: never sent
    ib.cancelMktData(spx)


async def test_option_quotes_carry_computation_ticks(simulator: TwsSimulator, ib: IB) -> None:
    listed = simulator.universe.options_on(265598)
    expiry = sorted({o.last_trade_date for o in listed})[-1]  # months away: all greeks defined
    [opt] = await ib.qualifyContractsAsync(Option("AAPL", expiry, 190, "C", "SMART"))
    [snap] = await ib.reqTickersAsync(opt)
    model = snap.modelGreeks
    assert model is not None and model.impliedVol is not None
    assert 0.1 < model.impliedVol < 0.6 and 0.3 < (model.delta or 0) < 0.8
    assert (model.gamma or 0) > 0 and (model.vega or 0) > 0 and (model.theta or 0) < 0
    assert abs((model.undPrice or 0) - simulator.market.quote(265598).midpoint) < 5
    assert snap.bidGreeks is not None and snap.askGreeks is not None
    # The bid's volatility is below the ask's: both reprice their own side.
    assert (snap.bidGreeks.impliedVol or 0) < (snap.askGreeks.impliedVol or 1)
    assert snap.bidGreeks.optPrice == snap.bid and snap.askGreeks.optPrice == snap.ask
    ticker = ib.reqMktData(opt)
    seen: list[float] = []
    for _ in range(30):
        await asyncio.sleep(0.05)
        if ticker.modelGreeks is not None and ticker.modelGreeks.undPrice is not None:
            seen.append(ticker.modelGreeks.undPrice)
    assert len(set(seen)) > 1  # the model follows the underlying's walk
    ib.cancelMktData(opt)


async def test_chains_are_listed_from_the_simulated_clock() -> None:
    from datetime import date

    from tws_simulator import SimulatorConfig
    from tws_simulator.clock import eastern

    sim = TwsSimulator(SimulatorConfig(seed=1, clock_start=eastern(2024, 1, 10, 12)))
    listed = sim.universe.options_on(265598)
    assert min(o.last_trade_date for o in listed) == "20240112"  # that week's Friday
    assert sim.universe.today == date(2024, 1, 10)


@pytest.mark.sim_config(clock_start=eastern(2024, 1, 10, 12))
async def test_trading_hours_are_listed_from_the_simulated_clock(ib: IB) -> None:
    [details] = await ib.reqContractDetailsAsync(Contract(conId=265598))
    assert details.tradingHours.startswith("20240110:0400-20240110:2000")
    assert details.liquidHours.startswith("20240110:0930-20240110:1600")
