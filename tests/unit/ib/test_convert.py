"""Exact decimals, contracts, timestamps and positions."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ibgateway.v1 import common_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import UNSET_DOUBLE, UNSET_INTEGER, Contract, PortfolioItem, Stock
from ibgateway_server.portfolio import convert as portfolio_convert


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (150.1, "150.1"),
        (150.25, "150.25"),
        (0.1 + 0.2, "0.30000000000000004"),  # the float IB sent, exactly
        (1e-05, "0.00001"),
        (1e22, "10000000000000000000000"),
        (-3.0, "-3"),
        (-0.0, "0"),
        (100, "100"),
        (Decimal("1.2300"), "1.23"),
        ("1000000.00", "1000000"),
        ("", ""),
        ("n/a", ""),
        (None, ""),
        (math.nan, ""),
        (math.inf, ""),
        (UNSET_DOUBLE, ""),
        (UNSET_INTEGER, ""),
    ],
)
def test_decimal_text(value: convert.Number, text: str) -> None:
    assert convert.decimal_text(value) == text


def test_timestamp() -> None:
    assert convert.timestamp(None) is None
    ts = convert.timestamp(datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC))
    assert ts is not None and (ts.seconds, ts.nanos) == (1704164645, 600000000)
    naive = convert.timestamp(datetime(2024, 1, 2, 3, 4, 5))
    assert naive is not None and naive.seconds == 1704164645
    epoch = convert.timestamp(1.5)
    assert epoch is not None and (epoch.seconds, epoch.nanos) == (1, 500000000)


def test_symbol_alone_means_a_us_stock_on_smart() -> None:
    c = convert.contract_from_proto(common_pb2.Contract(symbol=" aapl "))
    assert (c.symbol, c.secType, c.exchange, c.currency) == ("AAPL", "STK", "SMART", "USD")


def test_forex_defaults_to_idealpro_and_con_id_alone_is_enough() -> None:
    fx = convert.contract_from_proto(
        common_pb2.Contract(symbol="EUR", sec_type=common_pb2.SECURITY_TYPE_FOREX)
    )
    assert (fx.secType, fx.exchange, fx.currency) == ("CASH", "IDEALPRO", "USD")
    by_id = convert.contract_from_proto(common_pb2.Contract(con_id=265598))
    assert (by_id.conId, by_id.symbol, by_id.secType) == (265598, "", "")


def test_option_round_trip() -> None:
    spec = common_pb2.Contract(
        symbol="AAPL",
        sec_type=common_pb2.SECURITY_TYPE_OPTION,
        last_trade_date_or_contract_month="20250117",
        strike=common_pb2.Decimal(value="150.5"),
        right=common_pb2.OPTION_RIGHT_PUT,
        multiplier="100",
    )
    ib = convert.contract_from_proto(spec)
    assert (ib.secType, ib.strike, ib.right) == ("OPT", 150.5, "P")
    back = convert.contract_to_proto(ib)
    assert back.strike.value == "150.5"
    assert back.right == common_pb2.OPTION_RIGHT_PUT
    assert back.sec_type == common_pb2.SECURITY_TYPE_OPTION


def test_stock_has_no_strike() -> None:
    msg = convert.contract_to_proto(Stock("AAPL", "SMART", "USD"))
    assert not msg.HasField("strike")
    assert msg.sec_type == common_pb2.SECURITY_TYPE_STOCK


def test_position_with_pnl_percent() -> None:
    item = PortfolioItem(
        contract=Contract(conId=1, symbol="AAPL", secType="STK", currency="USD"),
        position=-20.0,
        marketPrice=90.0,
        marketValue=-1800.0,
        averageCost=100.0,
        unrealizedPNL=200.0,
        realizedPNL=0.0,
        account="DU1",
    )
    pos = portfolio_convert.position_to_proto(item)
    assert pos.quantity.value == "-20"
    assert pos.unrealized_pnl_percent.value == "10"  # 200 on a 2000 cost basis
    unvalued = item._replace(unrealizedPNL=math.nan, marketPrice=math.nan)
    pos = portfolio_convert.position_to_proto(unvalued)
    assert pos.unrealized_pnl_percent.value == "" and pos.market_price.value == ""


def test_paper_accounts() -> None:
    assert portfolio_convert.is_paper_account("DU1234567")
    assert portfolio_convert.is_paper_account("DF99")
    assert not portfolio_convert.is_paper_account("U1234567")
