"""Pure conversions of ModifyOrder, PreviewOrder and ListExecutions (orders_convert)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.api import order_requests
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import (
    UNSET_DOUBLE,
    CommissionReport,
    Contract,
    Execution,
    Fill,
    Order,
    OrderState,
)
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders import ib_orders
from ibgateway_server.orders.intent import Modification, terms_of


def dec(value: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=value)


def violations(exc: pytest.ExceptionInfo[GatewayError]) -> set[str]:
    return {field for field, _ in exc.value.field_violations}


def test_modify_validation_collects_every_problem() -> None:
    with pytest.raises(GatewayError) as exc:
        order_requests.validate_modify_order(
            orders_pb2.ModifyOrderRequest(
                quantity=dec("-1"), limit_price=dec("abc"), trailing_percent=dec("0")
            )
        )
    assert violations(exc) == {"order", "quantity", "limit_price", "trailing_percent"}
    with pytest.raises(GatewayError) as exc:
        order_requests.validate_modify_order(
            orders_pb2.ModifyOrderRequest(order=orders_pb2.OrderKey(order_id=3))
        )
    assert violations(exc) == {"quantity"}  # nothing to change


def test_modify_validation_keeps_unset_fields() -> None:
    change = order_requests.validate_modify_order(
        orders_pb2.ModifyOrderRequest(
            order=orders_pb2.OrderKey(client_order_id="k-1"),
            limit_price=dec("101.25"),
            outside_rth=False,
        )
    )
    assert change.key == "k-1"
    assert str(change.limit_price) == "101.25"
    assert change.quantity is None and change.tif is None
    assert change.outside_rth is False  # explicitly set, unlike "unset"


def test_modified_order_is_a_copy_with_type_checks() -> None:
    order = Order(orderType="LMT", totalQuantity=5.0, lmtPrice=100.0, tif="DAY", orderRef="k")
    change = Modification(key="k", quantity=None, limit_price=None)
    new, problems = ib_orders.modified_order(
        order,
        Modification(
            key="k",
            limit_price=Decimal("101.5"),
            stop_price=Decimal("99"),
            tif="GTC",
        ),
    )
    assert problems == [("stop_price", "not used by LIMIT orders")]
    assert new.lmtPrice == 101.5 and new.tif == "GTC" and new.orderRef == "k"
    assert order.lmtPrice == 100.0 and order.tif == "DAY"  # the original is untouched
    assert terms_of(new) == ("LMT", "5", "101.5", "", "")
    trail, problems = ib_orders.modified_order(
        Order(orderType="TRAIL", totalQuantity=1.0, auxPrice=2.0),
        Modification(key="k", trailing_percent=Decimal("1.5")),
    )
    assert not problems and change.key == "k"
    assert trail.trailingPercent == 1.5 and trail.auxPrice == UNSET_DOUBLE


def test_preview_validation_is_place_order_without_a_key() -> None:
    intent = order_requests.validate_preview_order(
        orders_pb2.PreviewOrderRequest(
            contract=common_pb2.Contract(symbol="AAPL"),
            side=orders_pb2.ORDER_SIDE_SELL,
            order_type=orders_pb2.ORDER_TYPE_MARKET,
            quantity=dec("10"),
        )
    )
    assert intent.client_order_id == "" and intent.action == "SELL"
    assert ib_orders.build_ib_order(intent, "DU1").orderRef == ""
    with pytest.raises(GatewayError) as exc:
        order_requests.validate_preview_order(orders_pb2.PreviewOrderRequest())
    assert violations(exc) == {"contract.symbol", "side", "order_type", "quantity"}


def test_preview_figures_are_exact_and_unset_is_empty() -> None:
    state = OrderState(
        initMarginBefore="1000.10",
        initMarginChange="250.5",
        initMarginAfter="1250.60",
        maintMarginBefore="1.7976931348623157E308",
        equityWithLoanBefore="",
        commission=1.0,
        minCommission=UNSET_DOUBLE,
        maxCommission=UNSET_DOUBLE,
        commissionCurrency="USD",
        warningText="careful",
    )
    reply = oc.preview_to_proto(state, common_pb2.Contract(con_id=1), "DU1")
    assert reply.initial_margin.before.value == "1000.1"
    assert reply.initial_margin.change.value == "250.5"
    assert reply.initial_margin.after.value == "1250.6"
    assert reply.maintenance_margin.before.value == ""
    assert reply.equity_with_loan.before.value == ""
    assert reply.commission.value == "1"
    assert reply.min_commission.value == "" and reply.max_commission.value == ""
    assert reply.commission_currency == "USD" and reply.warning_text == "careful"
    assert reply.account_id == "DU1"


def test_execution_to_proto() -> None:
    when = datetime(2026, 1, 2, 15, 30, tzinfo=UTC)
    fill = Fill(
        contract=Contract(conId=265598, symbol="AAPL", secType="STK", currency="USD"),
        execution=Execution(
            execId="e1",
            time=when,
            acctNumber="DU1",
            side="SLD",
            shares=2.0,
            price=189.51,
            permId=77,
            orderId=5,
            orderRef="",
        ),
        commissionReport=CommissionReport(execId="e1", commission=1.0, currency="USD"),
        time=when,
    )
    msg = oc.execution_to_proto(fill, "from-the-order")
    assert msg.client_order_id == "from-the-order"  # the execution did not carry it
    assert msg.side == orders_pb2.ORDER_SIDE_SELL
    assert (msg.order_id, msg.perm_id, msg.account_id) == (5, 77, "DU1")
    assert msg.fill.price.value == "189.51" and msg.fill.commission.value == "1"
    assert msg.contract.con_id == 265598
    assert oc.execution_time(fill) == when
