"""Options, futures and indices through the gateway: GetOptionChain, ResolveContract."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from tests.e2e.conftest import expect_error
from tws_simulator import TwsSimulator

AAPL = 265598
SPX = 416904

if TYPE_CHECKING:
    Stub = market_data_pb2_grpc.MarketDataServiceAsyncStub


@pytest.fixture
def market(channel: grpc.aio.Channel) -> Stub:
    return market_data_pb2_grpc.MarketDataServiceStub(channel)


def chain_request(**kw: object) -> market_data_pb2.GetOptionChainRequest:
    return market_data_pb2.GetOptionChainRequest(**kw)  # type: ignore[arg-type]


async def test_option_chain_of_a_stock(simulator: TwsSimulator, market: Stub) -> None:
    reply = await market.GetOptionChain(
        chain_request(underlying=common_pb2.Contract(symbol="AAPL")), timeout=10
    )
    assert reply.underlying.con_id == AAPL and not reply.underlying_price.value
    [chain] = reply.chains  # SMART only by default: the other exchanges repeat it
    assert (chain.exchange, chain.trading_class, chain.multiplier) == ("SMART", "AAPL", "100")
    listed = simulator.universe.options_on(AAPL)
    assert list(chain.expirations) == sorted({o.last_trade_date for o in listed})
    assert [Decimal(s.value) for s in chain.strikes] == sorted(
        {Decimal(repr(o.strike)) for o in listed}
    )
    everywhere = await market.GetOptionChain(
        chain_request(underlying=common_pb2.Contract(con_id=AAPL), exchange="CBOE"), timeout=10
    )
    assert [c.exchange for c in everywhere.chains] == ["CBOE"]


async def test_option_chain_filters(simulator: TwsSimulator, market: Stub) -> None:
    expiries = sorted({o.last_trade_date for o in simulator.universe.options_on(AAPL)})
    reply = await market.GetOptionChain(
        chain_request(
            underlying=common_pb2.Contract(symbol="AAPL"),
            min_expiry=expiries[1],
            max_expiry=expiries[2],
            min_strike=common_pb2.Decimal(value="180"),
            max_strike=common_pb2.Decimal(value="200"),
        ),
        timeout=10,
    )
    [chain] = reply.chains
    assert list(chain.expirations) == expiries[1:3]
    strikes = [Decimal(s.value) for s in chain.strikes]
    assert strikes[0] == 180 and strikes[-1] == 200 and Decimal("182.5") in strikes
    around = await market.GetOptionChain(
        chain_request(underlying=common_pb2.Contract(symbol="AAPL"), strikes_around_price=3),
        timeout=10,
    )
    price = Decimal(around.underlying_price.value)
    near = [Decimal(s.value) for s in around.chains[0].strikes]
    assert len(near) == 6
    assert [s < price for s in near] == [True] * 3 + [False] * 3
    assert abs(price - Decimal(str(simulator.market.quote(AAPL).midpoint))) < 5


async def test_index_options_list_both_classes(market: Stub) -> None:
    spx = common_pb2.Contract(symbol="SPX", sec_type=common_pb2.SECURITY_TYPE_INDEX)
    reply = await market.GetOptionChain(chain_request(underlying=spx), timeout=10)
    assert reply.underlying.con_id == SPX
    assert [c.trading_class for c in reply.chains] == ["SPX", "SPXW"]
    weekly = await market.GetOptionChain(
        chain_request(underlying=spx, trading_class="spxw"), timeout=10
    )
    assert [c.trading_class for c in weekly.chains] == ["SPXW"]


async def test_futures_options_chain_of_the_front_month(
    simulator: TwsSimulator, market: Stub
) -> None:
    es = common_pb2.Contract(symbol="ES", sec_type=common_pb2.SECURITY_TYPE_FUTURE)
    reply = await market.GetOptionChain(chain_request(underlying=es), timeout=10)
    front = simulator.universe.front_future("ES")
    assert front is not None and reply.underlying.con_id == front.con_id
    [chain] = reply.chains
    assert (chain.exchange, chain.multiplier) == ("CME", "50")
    assert list(chain.expirations) == [front.last_trade_date]


async def test_option_chain_errors(market: Stub) -> None:
    err = await expect_error(
        market.GetOptionChain(
            chain_request(
                underlying=common_pb2.Contract(symbol="AAPL"),
                min_expiry="20240101x",
                strikes_around_price=501,
            ),
            timeout=10,
        )
    )
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"min_expiry", "strikes_around_price"}
    err = await expect_error(
        market.GetOptionChain(
            chain_request(
                underlying=common_pb2.Contract(symbol="AAPL"),
                min_expiry="2024-1-1",
                min_strike=common_pb2.Decimal(value="200"),
                max_strike=common_pb2.Decimal(value="100"),
            ),
            timeout=10,
        )
    )
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"min_expiry", "max_strike"}
    err = await expect_error(market.GetOptionChain(chain_request(), timeout=10))
    assert "underlying.symbol" in err.violations
    err = await expect_error(
        market.GetOptionChain(
            chain_request(underlying=common_pb2.Contract(symbol="NOPE")), timeout=10
        )
    )
    assert err.code is grpc.StatusCode.NOT_FOUND and err.info is not None
    assert err.info.metadata["ib_code"] == "200"
    # A stock without listed options: no chains, no error.
    none = await market.GetOptionChain(
        chain_request(
            underlying=common_pb2.Contract(symbol="EUR", sec_type=common_pb2.SECURITY_TYPE_FOREX)
        ),
        timeout=10,
    )
    assert list(none.chains) == []


async def test_resolve_an_option_a_future_and_an_ambiguous_index_option(
    simulator: TwsSimulator, market: Stub
) -> None:
    listed = simulator.universe.options_on(AAPL)
    wanted = next(o for o in listed if o.right == "P" and o.strike == 185.0)
    option = common_pb2.Contract(
        symbol="AAPL",
        sec_type=common_pb2.SECURITY_TYPE_OPTION,
        last_trade_date_or_contract_month=wanted.last_trade_date,
        strike=common_pb2.Decimal(value="185"),
        right=common_pb2.OPTION_RIGHT_PUT,
    )
    reply = await market.ResolveContract(
        market_data_pb2.ResolveContractRequest(contract=option), timeout=10
    )
    c = reply.contract
    assert c.con_id == wanted.con_id and c.multiplier == "100"
    assert c.right == common_pb2.OPTION_RIGHT_PUT and c.strike.value == "185"
    assert reply.details.underlying_con_id == AAPL
    assert reply.details.contract_month == wanted.last_trade_date[:6]

    june = next(f for f in simulator.universe.match(symbol="ES", sec_type="FUT"))
    future = common_pb2.Contract(
        symbol="ES",
        sec_type=common_pb2.SECURITY_TYPE_FUTURE,
        last_trade_date_or_contract_month=june.contract_month,
    )
    reply = await market.ResolveContract(
        market_data_pb2.ResolveContractRequest(contract=future), timeout=10
    )
    assert reply.contract.con_id == june.con_id and reply.contract.multiplier == "50"
    assert reply.contract.sec_type == common_pb2.SECURITY_TYPE_FUTURE
    assert reply.details.underlying_con_id == SPX

    spx = simulator.universe.options_on(SPX)
    weekly = {(o.last_trade_date, o.strike) for o in spx if o.trading_class == "SPXW"}
    both = next(o for o in spx if (o.last_trade_date, o.strike) in weekly and o.right == "C")
    ambiguous = common_pb2.Contract(
        symbol="SPX",
        sec_type=common_pb2.SECURITY_TYPE_OPTION,
        last_trade_date_or_contract_month=both.last_trade_date,
        strike=common_pb2.Decimal(value=str(int(both.strike))),
        right=common_pb2.OPTION_RIGHT_CALL,
    )
    err = await expect_error(
        market.ResolveContract(
            market_data_pb2.ResolveContractRequest(contract=ambiguous), timeout=10
        )
    )
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.reason == "AMBIGUOUS_CONTRACT"
    candidates = err.info.metadata["candidates"]
    assert candidates.count(both.last_trade_date) == 2
    assert "class=SPXW" in candidates and "class=SPX " in candidates + " "
    ambiguous.trading_class = "SPXW"
    reply = await market.ResolveContract(
        market_data_pb2.ResolveContractRequest(contract=ambiguous), timeout=10
    )
    assert reply.contract.trading_class == "SPXW"
    assert reply.contract.local_symbol.startswith("SPXW")


def _far_call(simulator: TwsSimulator) -> common_pb2.Contract:
    listed = simulator.universe.options_on(AAPL)
    expiry = sorted({o.last_trade_date for o in listed})[-1]  # months away: greeks defined
    return common_pb2.Contract(
        symbol="AAPL",
        sec_type=common_pb2.SECURITY_TYPE_OPTION,
        last_trade_date_or_contract_month=expiry,
        strike=common_pb2.Decimal(value="190"),
        right=common_pb2.OPTION_RIGHT_CALL,
    )


async def test_option_snapshot_carries_greeks(simulator: TwsSimulator, market: Stub) -> None:
    reply = await market.GetQuotes(
        market_data_pb2.GetQuotesRequest(contracts=[_far_call(simulator)]), timeout=10
    )
    [quote] = reply.quotes
    model = quote.model_greeks
    assert 0.1 < float(model.implied_volatility.value) < 0.6
    assert 0.3 < float(model.delta.value) < 0.8
    assert float(model.gamma.value) > 0 and float(model.vega.value) > 0
    assert float(model.theta.value) < 0
    underlying = simulator.market.quote(AAPL).midpoint
    assert abs(float(model.underlying_price.value) - underlying) < 5
    assert quote.bid_greeks.option_price.value == quote.bid.value
    assert quote.ask_greeks.option_price.value == quote.ask.value
    assert float(quote.bid_greeks.implied_volatility.value) < float(
        quote.ask_greeks.implied_volatility.value
    )
    assert quote.contract.multiplier == "100"


async def test_option_stream_carries_moving_greeks(simulator: TwsSimulator, market: Stub) -> None:
    call = market.StreamQuotes(
        market_data_pb2.StreamQuotesRequest(contracts=[_far_call(simulator)])
    )
    seen: set[str] = set()
    try:
        async for msg in call:
            for quote in msg.quotes.quotes:
                if quote.HasField("model_greeks"):
                    seen.add(quote.model_greeks.underlying_price.value)
            if len(seen) >= 3:
                break
    finally:
        call.cancel()
    assert len(seen) >= 3  # the model follows the underlying's walk
