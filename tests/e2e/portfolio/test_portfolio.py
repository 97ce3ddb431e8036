"""PortfolioService end to end: positions valued by the simulator's market."""

from __future__ import annotations

from decimal import Decimal

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import (
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from tests.e2e.conftest import expect_error

pytestmark = pytest.mark.sim_config(positions={"AAPL": (100, 150.0), "MSFT": (-20, 400.0)})


@pytest.fixture
def portfolio(channel: grpc.aio.Channel) -> portfolio_pb2_grpc.PortfolioServiceAsyncStub:
    return portfolio_pb2_grpc.PortfolioServiceStub(channel)


async def test_positions_carry_cost_value_and_pnl(
    portfolio: portfolio_pb2_grpc.PortfolioServiceAsyncStub,
) -> None:
    response = await portfolio.ListPositions(portfolio_pb2.ListPositionsRequest())
    by_symbol = {p.contract.symbol: p for p in response.positions}
    assert list(by_symbol) == ["AAPL", "MSFT"]  # ordered by account and symbol

    aapl = by_symbol["AAPL"]
    assert aapl.account_id == "DU1234567"
    assert aapl.contract.con_id > 0
    assert aapl.contract.sec_type == common_pb2.SECURITY_TYPE_STOCK
    assert aapl.contract.currency == "USD"
    assert aapl.quantity.value == "100"
    assert aapl.average_cost.value == "150"
    price = Decimal(aapl.market_price.value)
    assert price > 0
    assert Decimal(aapl.market_value.value) == pytest.approx(price * 100, rel=Decimal("1e-6"))
    pnl = Decimal(aapl.unrealized_pnl.value)
    assert pnl == pytest.approx(Decimal(aapl.market_value.value) - 15000, abs=Decimal("0.01"))
    percent = Decimal(aapl.unrealized_pnl_percent.value)
    assert percent == pytest.approx(pnl / 15000 * 100, abs=Decimal("0.001"))
    assert aapl.realized_pnl.value == "0"

    msft = by_symbol["MSFT"]
    assert msft.quantity.value == "-20"
    assert Decimal(msft.market_value.value) < 0


async def test_positions_of_one_account(
    portfolio: portfolio_pb2_grpc.PortfolioServiceAsyncStub,
) -> None:
    response = await portfolio.ListPositions(
        portfolio_pb2.ListPositionsRequest(account_id="DU1234567")
    )
    assert len(response.positions) == 2
    err = await expect_error(
        portfolio.ListPositions(portfolio_pb2.ListPositionsRequest(account_id="DU0000000"))
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.reason == "UNKNOWN_ACCOUNT"
    assert "account_id" in err.violations


async def test_positions_need_a_connection(
    portfolio: portfolio_pb2_grpc.PortfolioServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    await connection_pb2_grpc.ConnectionServiceStub(channel).Disconnect(
        connection_pb2.DisconnectRequest()
    )
    err = await expect_error(portfolio.ListPositions(portfolio_pb2.ListPositionsRequest()))
    assert err.code == grpc.StatusCode.UNAVAILABLE
