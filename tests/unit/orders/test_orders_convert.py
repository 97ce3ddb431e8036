"""Order validation, PlaceOrderRequest → IB Order, and Trade → proto Order (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.api import order_requests
from ibgateway_server.api.request_rules import request_violations
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import (
    UNSET_DOUBLE,
    CommissionReport,
    Contract,
    Execution,
    Fill,
    Order,
    OrderStatus,
    Trade,
    TradeLogEntry,
)
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders import ib_orders, ib_terms
from ibgateway_server.orders.intent import intent_differences

D = common_pb2.Decimal


def request(**overrides: Any) -> orders_pb2.PlaceOrderRequest:
    """A valid LMT buy of 10 AAPL at 150.1, with overrides."""
    values: dict[str, Any] = {
        "client_order_id": "ord-1",
        "contract": common_pb2.Contract(symbol="AAPL"),
        "side": orders_pb2.ORDER_SIDE_BUY,
        "order_type": orders_pb2.ORDER_TYPE_LIMIT,
        "quantity": D(value="10"),
        "limit_price": D(value="150.1"),
    }
    values.update(overrides)
    return orders_pb2.PlaceOrderRequest(**{k: v for k, v in values.items() if v is not None})


def violations(req: orders_pb2.PlaceOrderRequest) -> dict[str, str]:
    with pytest.raises(GatewayError) as caught:
        order_requests.validate_place_order(req)
    err = caught.value
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_ARGUMENT"
    return dict(err.field_violations)


# ------------------------------------------------------------------ validation


def test_valid_limit_order() -> None:
    intent = order_requests.validate_place_order(request())
    assert intent.action == "BUY"
    assert intent.order_type == "LMT"
    assert intent.quantity == Decimal("10")
    assert intent.limit_price == Decimal("150.1")
    assert intent.tif == "DAY"
    assert intent.stop_price is None


@pytest.mark.parametrize("key", ["a", "A" * 40, "2024-06-11:strategy_7.leg-1", "x:y.z_w-0"])
def test_client_order_id_accepted(key: str) -> None:
    assert order_requests.validate_place_order(request(client_order_id=key)).client_order_id == key


@pytest.mark.parametrize("key", ["A" * 41, "has space", "semi;colon", "ü", "a/b", "a\n"])
def test_client_order_id_rejected(key: str) -> None:
    assert "client_order_id" in violations(request(client_order_id=key))


def test_client_order_id_required() -> None:
    assert violations(request(client_order_id=""))["client_order_id"].startswith("required")


def test_contract_required() -> None:
    assert "contract.symbol" in violations(request(contract=None))
    assert "contract.symbol" in violations(request(contract=common_pb2.Contract(exchange="SMART")))


def test_con_id_alone_is_enough() -> None:
    intent = order_requests.validate_place_order(
        request(contract=common_pb2.Contract(con_id=265598))
    )
    assert intent.contract.con_id == 265598


def test_unspecified_enums() -> None:
    # Unknown enum numbers are the request rules' (tests/unit/api/test_request_rules.py).
    found = violations(request(side=orders_pb2.ORDER_SIDE_UNSPECIFIED, order_type=0))
    assert "side" in found and "order_type" in found


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("0", "greater than 0"), ("-5", "greater than 0"), ("1e3", "plain decimal"),
     ("1,000", "plain decimal"), ("ten", "plain decimal"), ("", "required")],
)  # fmt: skip
def test_quantity(text: str, fragment: str) -> None:
    assert fragment in violations(request(quantity=D(value=text)))["quantity"]


def test_quantity_missing() -> None:
    assert violations(request(quantity=None))["quantity"] == "required"


def test_limit_needs_limit_price() -> None:
    assert "required" in violations(request(limit_price=None))["limit_price"]


@pytest.mark.parametrize("price", ["0", "-1.5", "abc", "1e2"])
def test_prices_must_be_positive_decimals(price: str) -> None:
    assert "limit_price" in violations(request(limit_price=D(value=price)))


def test_stop_needs_stop_price() -> None:
    found = violations(request(order_type=orders_pb2.ORDER_TYPE_STOP, limit_price=None))
    assert found == {"stop_price": "required for STOP orders"}


def test_stop_limit_needs_both() -> None:
    found = violations(request(order_type=orders_pb2.ORDER_TYPE_STOP_LIMIT, limit_price=None))
    assert set(found) == {"limit_price", "stop_price"}
    ok = order_requests.validate_place_order(
        request(order_type=orders_pb2.ORDER_TYPE_STOP_LIMIT, stop_price=D(value="151"))
    )
    assert (ok.limit_price, ok.stop_price) == (Decimal("150.1"), Decimal("151"))


def test_trail_needs_exactly_one_offset() -> None:
    trail = {"order_type": orders_pb2.ORDER_TYPE_TRAILING_STOP, "limit_price": None}
    assert "trailing_amount" in violations(request(**trail))
    both = violations(request(**trail, trailing_amount=D(value="1"), trailing_percent=D(value="2")))
    assert "not both" in both["trailing_percent"]
    assert order_requests.validate_place_order(request(**trail, trailing_amount=D(value="1.5")))
    assert order_requests.validate_place_order(request(**trail, trailing_percent=D(value="0.5")))


def test_trail_percent_range() -> None:
    # The range is declared once, in the request rules the interceptor applies first.
    trail = {"order_type": orders_pb2.ORDER_TYPE_TRAILING_STOP, "limit_price": None}
    found = dict(request_violations(request(**trail, trailing_percent=D(value="100"))))
    assert "must be within (0, 100)" in found["trailing_percent"]


def test_fields_that_do_not_belong_to_the_type() -> None:
    found = violations(
        request(
            order_type=orders_pb2.ORDER_TYPE_MARKET,
            stop_price=D(value="1"),
            trailing_amount=D(value="1"),
            trailing_percent=D(value="1"),
        )
    )
    assert set(found) == {"limit_price", "stop_price", "trailing_amount", "trailing_percent"}
    assert "not used by MARKET" in found["limit_price"]


def test_empty_decimal_means_not_set() -> None:
    # A Decimal message with an empty value is "not available", not a price.
    intent = order_requests.validate_place_order(
        request(order_type=orders_pb2.ORDER_TYPE_MARKET, limit_price=D(value=""))
    )
    assert intent.limit_price is None


def test_every_violation_is_reported_at_once() -> None:
    found = violations(
        orders_pb2.PlaceOrderRequest(quantity=D(value="-1"), order_type=orders_pb2.ORDER_TYPE_LIMIT)
    )
    assert set(found) == {"client_order_id", "contract.symbol", "side", "quantity", "limit_price"}


def test_order_key() -> None:
    assert (
        order_requests.validate_order_key(orders_pb2.OrderKey(client_order_id="k1"), "order")
        == "k1"
    )
    assert order_requests.validate_order_key(orders_pb2.OrderKey(order_id=7), "order") == 7
    for key, field in [
        (orders_pb2.OrderKey(), "order"),
        (orders_pb2.OrderKey(order_id=0), "order.order_id"),
        (orders_pb2.OrderKey(order_id=-3), "order.order_id"),
        (orders_pb2.OrderKey(client_order_id="bad key"), "order.client_order_id"),
    ]:
        with pytest.raises(GatewayError) as caught:
            order_requests.validate_order_key(key, "order")
        assert [f for f, _ in caught.value.field_violations] == [field]


# ------------------------------------------------------------------ request → IB


def build(**overrides: Any) -> Order:
    intent = order_requests.validate_place_order(request(**overrides))
    return ib_orders.build_ib_order(intent, "DU1234567")


def test_build_limit_order() -> None:
    order = build(time_in_force=orders_pb2.TIME_IN_FORCE_GTC, outside_rth=True)
    assert (order.action, order.orderType, order.totalQuantity, order.lmtPrice) == (
        "BUY", "LMT", 10.0, 150.1
    )  # fmt: skip
    assert (order.tif, order.outsideRth, order.account, order.orderRef) == (
        "GTC", True, "DU1234567", "ord-1"
    )  # fmt: skip
    assert order.auxPrice == UNSET_DOUBLE


def test_build_market_sell_ioc() -> None:
    order = build(
        side=orders_pb2.ORDER_SIDE_SELL,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        limit_price=None,
        time_in_force=orders_pb2.TIME_IN_FORCE_IOC,
    )
    assert (order.action, order.orderType, order.tif) == ("SELL", "MKT", "IOC")
    assert order.lmtPrice == UNSET_DOUBLE


def test_build_stop_and_stop_limit() -> None:
    stop = build(
        order_type=orders_pb2.ORDER_TYPE_STOP, limit_price=None, stop_price=D(value="99.5")
    )
    assert (stop.orderType, stop.auxPrice, stop.lmtPrice) == ("STP", 99.5, UNSET_DOUBLE)
    stop_limit = build(order_type=orders_pb2.ORDER_TYPE_STOP_LIMIT, stop_price=D(value="151"))
    assert (stop_limit.orderType, stop_limit.auxPrice, stop_limit.lmtPrice) == (
        "STP LMT", 151.0, 150.1
    )  # fmt: skip


def test_build_trailing_stops() -> None:
    trail = {"order_type": orders_pb2.ORDER_TYPE_TRAILING_STOP, "limit_price": None}
    by_amount = build(**trail, trailing_amount=D(value="0.25"), stop_price=D(value="149"))
    assert (by_amount.orderType, by_amount.auxPrice, by_amount.trailingPercent) == (
        "TRAIL", 0.25, UNSET_DOUBLE
    )  # fmt: skip
    assert by_amount.trailStopPrice == 149.0
    by_percent = build(**trail, trailing_percent=D(value="1.5"))
    assert (by_percent.auxPrice, by_percent.trailingPercent) == (UNSET_DOUBLE, 1.5)


# ------------------------------------------------------- retry: same order or not?


def placed_trade(order: Order, **contract: Any) -> Trade:
    """The trade TWS reports for ``order`` (qualified contract, floats from the wire)."""
    values: dict[str, Any] = {
        "conId": 265598, "symbol": "AAPL", "secType": "STK", "exchange": "SMART", "currency": "USD"
    }  # fmt: skip
    values.update(contract)
    return Trade(contract=Contract(**values), order=order, orderStatus=OrderStatus())


def test_same_request_has_no_differences() -> None:
    intent = order_requests.validate_place_order(request())
    assert intent_differences(intent, placed_trade(ib_orders.build_ib_order(intent, "DU1"))) == []


def test_differences_are_named() -> None:
    first = order_requests.validate_place_order(request())
    trade = placed_trade(ib_orders.build_ib_order(first, "DU1"))
    retry = order_requests.validate_place_order(
        request(
            quantity=D(value="11"),
            limit_price=D(value="150.10"),  # same number, other spelling: no difference
            side=orders_pb2.ORDER_SIDE_SELL,
            contract=common_pb2.Contract(symbol="MSFT"),
            account_id="DU2",
        )
    )
    assert intent_differences(retry, trade) == ["contract.symbol", "side", "quantity",
                                                   "account_id"]  # fmt: skip


def test_omitted_account_matches_the_default() -> None:
    intent = order_requests.validate_place_order(request())
    trade = placed_trade(ib_orders.build_ib_order(intent, "DU1234567"))
    assert intent_differences(intent, trade) == []


def test_trailing_offset_kind_is_compared() -> None:
    trail = {"order_type": orders_pb2.ORDER_TYPE_TRAILING_STOP, "limit_price": None}
    by_amount = order_requests.validate_place_order(request(**trail, trailing_amount=D(value="1")))
    by_percent = order_requests.validate_place_order(
        request(**trail, trailing_percent=D(value="1"))
    )
    trade = placed_trade(ib_orders.build_ib_order(by_amount, "DU1"))
    trade.order.trailStopPrice = 148.37  # the moving stop is not part of the request
    assert intent_differences(by_amount, trade) == []
    assert intent_differences(by_percent, trade) == ["trailing_amount", "trailing_percent"]


# ------------------------------------------------------------------- IB → proto


T0 = datetime(2024, 6, 11, 14, 30, tzinfo=UTC)


def fill(exec_id: str, shares: float, price: float, seconds: int, commission: float | None,
         realized: float = 0.0) -> Fill:  # fmt: skip
    execution = Execution(
        execId=exec_id, time=T0 + timedelta(seconds=seconds), acctNumber="DU1234567",
        exchange="ISLAND", side="BOT", shares=shares, price=price, permId=1001,
        orderId=7, orderRef="ord-1",
    )  # fmt: skip
    report = CommissionReport()
    if commission is not None:
        report = CommissionReport(
            execId=exec_id, commission=commission, currency="USD", realizedPNL=realized
        )
    return Fill(Contract(conId=265598, symbol="AAPL"), execution, report, T0)


def trade(status: str = "Submitted", **order_fields: Any) -> Trade:
    values: dict[str, Any] = {
        "orderId": 7, "clientId": 1, "permId": 1001, "action": "BUY", "totalQuantity": 300.0,
        "orderType": "LMT", "lmtPrice": 150.1, "auxPrice": 0.0, "tif": "DAY",
        "account": "DU1234567", "orderRef": "ord-1",
    }  # fmt: skip
    values.update(order_fields)
    contract = Contract(conId=265598, symbol="AAPL", secType="STK", exchange="SMART",
                        currency="USD", localSymbol="AAPL", tradingClass="NMS")  # fmt: skip
    return Trade(
        contract=contract,
        order=Order(**values),
        orderStatus=OrderStatus(orderId=7, status=status, permId=1001),
        fills=[],
        log=[TradeLogEntry(T0, "PendingSubmit", "")],
    )


def test_open_order_to_proto() -> None:
    msg = oc.trade_to_proto(trade())
    assert msg.client_order_id == "ord-1"
    assert (msg.order_id, msg.perm_id, msg.account_id) == (7, 1001, "DU1234567")
    assert msg.contract.con_id == 265598 and msg.contract.symbol == "AAPL"
    assert msg.side == orders_pb2.ORDER_SIDE_BUY
    assert msg.order_type == orders_pb2.ORDER_TYPE_LIMIT
    assert msg.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert msg.quantity.value == "300"
    assert msg.limit_price.value == "150.1"
    assert msg.stop_price.value == ""  # a LMT's auxPrice 0.0 is not a stop
    assert msg.filled_quantity.value == "0"
    assert msg.remaining_quantity.value == "300"
    assert msg.average_fill_price.value == ""
    assert msg.total_commission.value == ""
    assert msg.time_in_force == orders_pb2.TIME_IN_FORCE_DAY
    assert msg.create_time.ToDatetime(tzinfo=UTC) == T0


def test_partially_filled_order_with_commissions() -> None:
    t = trade()
    t.orderStatus = OrderStatus(orderId=7, status="Submitted", filled=200.0, remaining=100.0,
                                avgFillPrice=150.05, permId=1001)  # fmt: skip
    t.fills = [fill("e2", 100, 150.1, 2, None), fill("e1", 100, 150.0, 1, 0.5)]
    msg = oc.trade_to_proto(t)
    assert msg.filled_quantity.value == "200"
    assert msg.remaining_quantity.value == "100"
    assert msg.average_fill_price.value == "150.05"
    assert [f.execution_id for f in msg.fills] == ["e1", "e2"]  # oldest first
    first, second = msg.fills
    assert (first.quantity.value, first.price.value, first.exchange) == ("100", "150", "ISLAND")
    assert (first.commission.value, first.commission_currency) == ("0.5", "USD")
    assert second.commission.value == ""  # its commission report has not arrived yet
    assert first.execution_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=1)
    assert msg.total_commission.value == "0.5"
    assert msg.update_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=2)


def test_exact_decimals_never_show_float_artefacts() -> None:
    t = trade("Filled", totalQuantity=3.0, lmtPrice=0.1 + 0.2)
    t.fills = [fill("a", 1, 150.1, 1, 0.35), fill("b", 2, 150.2, 2, 0.7)]
    msg = oc.trade_to_proto(t)
    assert msg.limit_price.value == "0.30000000000000004"  # the float IB holds, exactly
    assert [f.price.value for f in msg.fills] == ["150.1", "150.2"]
    assert msg.total_commission.value == "1.05"  # not 1.0499999999999998
    # no avgFillPrice from IB (e.g. a completed order after a restart): exact mean
    assert msg.average_fill_price.value == "150.1666666667"
    assert msg.filled_quantity.value == "3"
    assert msg.remaining_quantity.value == "0"


def test_realized_pnl_only_when_a_position_closed() -> None:
    t = trade("Filled", totalQuantity=2.0)
    t.fills = [fill("a", 1, 150.0, 1, 1.0, realized=12.5), fill("b", 1, 150.0, 2, 1.0)]
    first, second = oc.trade_to_proto(t).fills
    assert first.realized_pnl.value == "12.5"
    assert second.realized_pnl.value == ""


def test_completed_order_without_status_counts_its_fills() -> None:
    t = trade("Cancelled", totalQuantity=300.0)
    t.orderStatus = OrderStatus(status="Cancelled")  # as reqCompletedOrders builds it
    t.fills = [fill("a", 40, 150.0, 1, 1.0)]
    msg = oc.trade_to_proto(t)
    assert msg.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert msg.filled_quantity.value == "40"
    assert msg.remaining_quantity.value == "0"  # nothing is working any more
    assert msg.perm_id == 1001


@pytest.mark.parametrize(
    ("ib_type", "fields", "expected"),
    [
        ("MKT", {"lmtPrice": 0.0, "auxPrice": 0.0}, ("", "", "", "")),
        ("STP", {"auxPrice": 99.5}, ("", "99.5", "", "")),
        ("STP LMT", {"lmtPrice": 100.0, "auxPrice": 99.5}, ("100", "99.5", "", "")),
        ("TRAIL", {"auxPrice": 0.25, "trailStopPrice": 149.75}, ("", "149.75", "0.25", "")),
        ("TRAIL", {"auxPrice": UNSET_DOUBLE, "trailingPercent": 1.5, "trailStopPrice": 148.0},
         ("", "148", "", "1.5")),
    ],
)  # fmt: skip
def test_prices_by_order_type(
    ib_type: str, fields: dict[str, float], expected: tuple[str, str, str, str]
) -> None:
    base: dict[str, Any] = {"lmtPrice": UNSET_DOUBLE, "auxPrice": UNSET_DOUBLE}
    msg = oc.trade_to_proto(trade(orderType=ib_type, **{**base, **fields}))
    assert msg.order_type == ib_terms.TYPE_FROM_IB[ib_type]
    got = (msg.limit_price.value, msg.stop_price.value, msg.trailing_amount.value,
           msg.trailing_percent.value)  # fmt: skip
    assert got == expected


@pytest.mark.parametrize(
    ("ib", "proto"),
    [
        ("PendingSubmit", orders_pb2.ORDER_STATUS_PENDING_SUBMIT),
        ("ApiPending", orders_pb2.ORDER_STATUS_PENDING_SUBMIT),
        ("PreSubmitted", orders_pb2.ORDER_STATUS_PRE_SUBMITTED),
        ("Submitted", orders_pb2.ORDER_STATUS_SUBMITTED),
        ("PendingCancel", orders_pb2.ORDER_STATUS_PENDING_CANCEL),
        ("Cancelled", orders_pb2.ORDER_STATUS_CANCELLED),
        ("ApiCancelled", orders_pb2.ORDER_STATUS_CANCELLED),
        ("Filled", orders_pb2.ORDER_STATUS_FILLED),
        ("Inactive", orders_pb2.ORDER_STATUS_INACTIVE),
        ("", orders_pb2.ORDER_STATUS_UNSPECIFIED),
        ("SomethingNew", orders_pb2.ORDER_STATUS_UNSPECIFIED),
    ],
)
def test_status_mapping(ib: str, proto: int) -> None:
    assert ib_terms.status_from_ib(ib) == proto


def test_status_message_from_the_log_or_given() -> None:
    t = trade("Cancelled", permId=0)
    t.log.append(
        TradeLogEntry(T0, "Cancelled", "Error 201, reqId 7: Order rejected - reason:NO", 201)
    )
    msg = oc.trade_to_proto(t)
    assert (msg.ib_code, msg.status_message) == (201, "Order rejected - reason:NO")
    given = oc.trade_to_proto(t, message=(202, "Order Canceled - reason:"))
    assert (given.ib_code, given.status_message) == (202, "Order Canceled - reason:")


def test_sell_short_is_a_sell() -> None:
    assert oc.trade_to_proto(trade(action="SSHORT")).side == orders_pb2.ORDER_SIDE_SELL
