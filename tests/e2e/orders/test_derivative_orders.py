"""Orders on options and futures: fills, commissions on IB's fixed plan, and positions
valued with the contract multiplier."""

from __future__ import annotations

from decimal import Decimal

import grpc.aio
import pytest

from ibgateway.v1 import (
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from tests.e2e.orders.test_orders_support import order_request, wait_for_order
from tests.polling import wait_until
from tws_simulator import TwsSimulator

AAPL = 265598


def _call(simulator: TwsSimulator) -> tuple[common_pb2.Contract, int]:
    listed = simulator.universe.options_on(AAPL)
    expiry = sorted({o.last_trade_date for o in listed})[-1]
    [inst] = [
        o for o in listed if o.last_trade_date == expiry and o.strike == 190 and o.right == "C"
    ]
    contract = common_pb2.Contract(
        symbol="AAPL",
        sec_type=common_pb2.SECURITY_TYPE_OPTION,
        last_trade_date_or_contract_month=expiry,
        strike=common_pb2.Decimal(value="190"),
        right=common_pb2.OPTION_RIGHT_CALL,
    )
    return contract, inst.con_id


async def test_option_order_fills_and_the_position_counts_the_multiplier(
    simulator: TwsSimulator, channel: grpc.aio.Channel
) -> None:
    orders = orders_pb2_grpc.OrderServiceStub(channel)
    portfolio = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    contract, con_id = _call(simulator)
    cash_before = simulator.account.cash
    reply = await orders.PlaceOrder(
        order_request("opt-1", orders_pb2.ORDER_TYPE_MARKET, quantity="3", contract=contract),
        timeout=10,
    )
    assert reply.order.contract.con_id == con_id
    done = await wait_for_order(
        orders,
        "opt-1",
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    price = Decimal(done.fills[0].price.value)
    commission = sum((Decimal(f.commission.value) for f in done.fills), Decimal(0))
    assert commission == Decimal("1.95")  # 3 contracts × 0.65 (premium above 0.10)
    # 3 contracts of 100 shares: cash pays 300 × the premium, plus the commission
    paid = Decimal(repr(cash_before)) - Decimal(repr(simulator.account.cash))
    assert paid.quantize(Decimal("0.01")) == (price * 300 + commission).quantize(Decimal("0.01"))

    async def position() -> portfolio_pb2.Position | None:
        listed = await portfolio.ListPositions(portfolio_pb2.ListPositionsRequest(), timeout=10)
        return next((p for p in listed.positions if p.contract.con_id == con_id), None)

    assert await wait_until(lambda: simulator.account.position(con_id) is not None, 5)
    found = None
    for _ in range(50):
        found = await position()
        if found is not None:
            break
    assert found is not None
    assert found.quantity.value == "3" and found.contract.multiplier == "100"
    assert found.contract.sec_type == common_pb2.SECURITY_TYPE_OPTION
    assert found.contract.right == common_pb2.OPTION_RIGHT_CALL
    assert found.contract.strike.value == "190"
    # IB's average cost is per contract: the premium × 100 plus the commission per contract
    assert Decimal(found.average_cost.value) == pytest.approx(
        price * 100 + commission / 3, abs=Decimal("0.01")
    )
    market_price = Decimal(found.market_price.value)
    assert Decimal(found.market_value.value) == pytest.approx(
        market_price * 300, abs=Decimal("0.01")
    )
    assert Decimal(found.unrealized_pnl.value) == pytest.approx(
        Decimal(found.market_value.value) - 3 * Decimal(found.average_cost.value),
        abs=Decimal("0.02"),
    )


async def test_future_order_commission_and_preview(
    simulator: TwsSimulator, channel: grpc.aio.Channel
) -> None:
    orders = orders_pb2_grpc.OrderServiceStub(channel)
    es = common_pb2.Contract(symbol="ES", sec_type=common_pb2.SECURITY_TYPE_FUTURE)
    preview = await orders.PreviewOrder(
        orders_pb2.PreviewOrderRequest(
            contract=es,
            side=orders_pb2.ORDER_SIDE_BUY,
            order_type=orders_pb2.ORDER_TYPE_MARKET,
            quantity=common_pb2.Decimal(value="2"),
        ),
        timeout=10,
    )
    assert preview.commission.value == "4.3"  # 2 × (0.85 + 1.30 CME and NFA fees)
    await orders.PlaceOrder(
        order_request("fut-1", orders_pb2.ORDER_TYPE_MARKET, quantity="2", contract=es),
        timeout=10,
    )
    done = await wait_for_order(
        orders,
        "fut-1",
        lambda o: (
            o.status == orders_pb2.ORDER_STATUS_FILLED and all(f.commission.value for f in o.fills)
        ),
    )
    assert sum(Decimal(f.commission.value) for f in done.fills) == Decimal("4.3")
    front = simulator.universe.front_future("ES")
    assert front is not None and done.contract.con_id == front.con_id
    position = simulator.account.position(front.con_id)
    assert position is not None and position.quantity == 2
    # per contract: the price × 50
    assert position.average_cost == pytest.approx(float(done.fills[0].price.value) * 50 + 2.15)
