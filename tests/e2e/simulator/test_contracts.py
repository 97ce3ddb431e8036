"""Qualifying contracts, contract details, unknown contracts, symbol search, market rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ib_insync import IB, Contract, Forex, Stock

from tws_simulator.instruments import DEFAULT_INSTRUMENTS

from .helpers import contract_of, wait_until

EXPECTED = {
    "AAPL": (265598, "NASDAQ"),
    "MSFT": (272093, "NASDAQ"),
    "TSLA": (76792991, "NASDAQ"),
    "GOOGL": (208813719, "NASDAQ"),
    "AMZN": (3691937, "NASDAQ"),
    "NVDA": (4815747, "NASDAQ"),
    "SPY": (756733, "ARCA"),
    "QQQ": (320227571, "NASDAQ"),
}


async def test_qualify_every_stock_and_forex(ib: IB) -> None:
    contracts = [Stock(symbol, "SMART", "USD") for symbol in EXPECTED] + [Forex("EURUSD")]
    qualified = await ib.qualifyContractsAsync(*contracts)
    assert len(qualified) == len(contracts)
    for contract in qualified[:-1]:
        con_id, primary = EXPECTED[contract.symbol]
        assert contract.conId == con_id
        assert contract.primaryExchange == primary
        assert contract.exchange == "SMART"
        assert contract.localSymbol == contract.symbol
    eur = qualified[-1]
    assert (eur.conId, eur.exchange, eur.localSymbol) == (12087792, "IDEALPRO", "EUR.USD")


async def test_qualify_by_con_id_alone(ib: IB) -> None:
    [contract] = await ib.qualifyContractsAsync(Contract(conId=756733))
    assert (contract.symbol, contract.secType, contract.primaryExchange) == ("SPY", "STK", "ARCA")


async def test_contract_details_carry_what_tws_reports(ib: IB) -> None:
    [details] = await ib.reqContractDetailsAsync(Stock("NVDA", "SMART", "USD"))
    assert details.longName == "NVIDIA CORP"
    assert details.minTick == 0.01
    assert details.timeZoneId == "US/Eastern"
    assert "LMT" in details.orderTypes.split(",") and "TRAIL" in details.orderTypes.split(",")
    assert details.validExchanges.split(",")[0] == "SMART"
    assert details.stockType == "COMMON"
    assert details.secIdList[0].tag == "ISIN"
    sessions = details.tradingSessions()
    assert sessions and all(s.start < s.end for s in sessions)
    liquid = details.liquidSessions()
    assert liquid[0].start.hour == 9 and liquid[0].start.minute == 30
    [fx] = await ib.reqContractDetailsAsync(Forex("EURUSD"))
    assert fx.minTick == 0.00005 and fx.longName == "European Monetary Union Euro"
    assert fx.tradingSessions()


async def test_unknown_contract_gets_error_200(ib: IB) -> None:
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
    assert await ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD")) == []
    assert await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "EUR")) == []
    assert await ib.reqContractDetailsAsync(Contract(conId=1)) == []
    assert [code for _, code in errors] == [200, 200, 200]


async def test_ambiguous_specs_return_every_candidate(ib: IB) -> None:
    details = await ib.reqContractDetailsAsync(Contract(symbol="EUR"))
    assert [contract_of(d).localSymbol for d in details] == ["EUR.USD"]
    everything_in_usd = await ib.reqContractDetailsAsync(Contract(secType="STK", symbol="SPY"))
    assert [contract_of(d).conId for d in everything_in_usd] == [756733]


@pytest.mark.sim_config(
    instruments=(
        *DEFAULT_INSTRUMENTS,
        replace(DEFAULT_INSTRUMENTS[0], con_id=999001, primary_exchange="NYSE", long_name="TWIN"),
    )
)
async def test_a_custom_universe_can_make_a_symbol_ambiguous(ib: IB) -> None:
    errors: list[tuple[int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((code, msg))
    details = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
    assert sorted(contract_of(d).conId for d in details) == [265598, 999001]
    assert await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD")) == []  # ambiguous
    [nyse] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD", primaryExchange="NYSE"))
    assert nyse.conId == 999001
    ib.reqMktData(Stock("AAPL", "SMART", "USD"))
    assert await wait_until(lambda: errors)
    assert errors[0][0] == 200 and "ambiguous" in errors[0][1]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("A", ["AAPL", "AMZN", "GOOGL"]), ("ms", ["MSFT"]), ("EUR", ["EUR"]), ("zz", [])],
)
async def test_matching_symbols_by_prefix(ib: IB, pattern: str, expected: list[str]) -> None:
    found = await ib.reqMatchingSymbolsAsync(pattern)
    assert [contract_of(d).symbol for d in found or []] == expected
    for description in found or []:
        assert contract_of(description).conId > 0
        if contract_of(description).secType == "STK":
            assert "OPT" in description.derivativeSecTypes


async def test_market_rule(ib: IB) -> None:
    increments = await ib.reqMarketRuleAsync(26)
    assert increments is not None
    assert [(i.lowEdge, i.increment) for i in increments] == [(0.0, 0.01)]
