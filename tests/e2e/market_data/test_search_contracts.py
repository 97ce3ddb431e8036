"""MarketDataService.SearchContracts end to end: IB's reqMatchingSymbols on the simulator."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import (
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
)
from tests.e2e.conftest import expect_error

AAPL_CON_ID = 265598


@pytest.fixture
def market(channel: grpc.aio.Channel) -> market_data_pb2_grpc.MarketDataServiceAsyncStub:
    return market_data_pb2_grpc.MarketDataServiceStub(channel)


async def search(
    market: market_data_pb2_grpc.MarketDataServiceAsyncStub, pattern: str
) -> list[market_data_pb2.ContractMatch]:
    request = market_data_pb2.SearchContractsRequest(pattern=pattern)
    return list((await market.SearchContracts(request, timeout=10)).matches)


async def test_symbol_prefix_finds_the_stocks_first(
    market: market_data_pb2_grpc.MarketDataServiceAsyncStub,
) -> None:
    matches = await search(market, "A")
    # symbols starting with the pattern first, then names with a word starting with it
    assert [m.contract.symbol for m in matches] == ["AAPL", "AMZN", "GOOGL"]
    aapl = matches[0]
    assert aapl.contract.con_id == AAPL_CON_ID
    assert aapl.contract.sec_type == common_pb2.SECURITY_TYPE_STOCK
    assert aapl.contract.primary_exchange == "NASDAQ"
    assert aapl.contract.currency == "USD"
    assert "OPT" in aapl.derivative_sec_types
    assert aapl.description == "APPLE INC"


async def test_narrower_prefix_and_company_name(
    market: market_data_pb2_grpc.MarketDataServiceAsyncStub,
) -> None:
    assert [m.contract.con_id for m in await search(market, "AA")] == [AAPL_CON_ID]
    assert [m.contract.con_id for m in await search(market, " apple ")] == [AAPL_CON_ID]


async def test_currency_pair(market: market_data_pb2_grpc.MarketDataServiceAsyncStub) -> None:
    matches = await search(market, "EUR")
    assert len(matches) == 1
    eur = matches[0]
    assert eur.contract.symbol == "EUR" and eur.contract.currency == "USD"
    assert eur.contract.sec_type == common_pb2.SECURITY_TYPE_FOREX
    assert list(eur.derivative_sec_types) == []


async def test_no_match_is_an_empty_list(
    market: market_data_pb2_grpc.MarketDataServiceAsyncStub,
) -> None:
    assert await search(market, "ZZZ") == []


@pytest.mark.parametrize(
    ("pattern", "description"), [("", "required"), ("   ", "required"), ("X" * 65, "at most 64")]
)
async def test_pattern_is_validated(
    market: market_data_pb2_grpc.MarketDataServiceAsyncStub, pattern: str, description: str
) -> None:
    err = await expect_error(
        market.SearchContracts(market_data_pb2.SearchContractsRequest(pattern=pattern))
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert description in err.violations["pattern"]


async def test_not_connected_is_unavailable(
    market: market_data_pb2_grpc.MarketDataServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    await connection_pb2_grpc.ConnectionServiceStub(channel).Disconnect(
        connection_pb2.DisconnectRequest()
    )
    err = await expect_error(
        market.SearchContracts(market_data_pb2.SearchContractsRequest(pattern="AAPL"))
    )
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.info is not None and err.info.reason == "NOT_CONNECTED"
