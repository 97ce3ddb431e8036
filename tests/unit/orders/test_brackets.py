"""Brackets and the new order terms, without a network: validation into intents, the IB
orders built from them, and the bracket fields of the proto Order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.api import order_requests
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import Contract, Order, OrderStatus, Trade
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders.brackets import build_bracket_orders
from ibgateway_server.orders.ib_orders import build_ib_order
from ibgateway_server.orders.ib_terms import bracket_of, good_till_text, good_till_time


def dec(text: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=text)


def bracket(**overrides: object) -> orders_pb2.PlaceBracketOrderRequest:
    req = orders_pb2.PlaceBracketOrderRequest(
        client_order_id="b-1",
        contract=common_pb2.Contract(symbol="AAPL"),
        side=orders_pb2.ORDER_SIDE_SELL,
        quantity=dec("5"),
        entry=orders_pb2.BracketLeg(
            order_type=orders_pb2.ORDER_TYPE_LIMIT,
            limit_price=dec("190"),
            time_in_force=orders_pb2.TIME_IN_FORCE_GTC,
        ),
        take_profit=orders_pb2.BracketLeg(limit_price=dec("180")),
        stop_loss=orders_pb2.BracketLeg(
            order_type=orders_pb2.ORDER_TYPE_TRAILING_STOP, trailing_percent=dec("2")
        ),
    )
    for name, value in overrides.items():
        setattr(req, name, value)
    return req


def test_bracket_of_names_the_bracket_and_the_role() -> None:
    assert bracket_of("k") == ("k", orders_pb2.BRACKET_ROLE_ENTRY)
    assert bracket_of("k:tp") == ("k", orders_pb2.BRACKET_ROLE_TAKE_PROFIT)
    assert bracket_of("a:b:sl") == ("a:b", orders_pb2.BRACKET_ROLE_STOP_LOSS)
    assert bracket_of(":tp") == (":tp", orders_pb2.BRACKET_ROLE_ENTRY)  # no key before it


def test_good_till_round_trip() -> None:
    when = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    assert good_till_text(when) == "20261130-21:00:00"
    assert good_till_time("20261130-21:00:00") == when
    assert good_till_time("20261130 16:00:00 US/Eastern") == when
    assert good_till_time("20261130 16:00:00") == when  # exchange time by default
    assert good_till_time("") is None and good_till_time("soon") is None


def test_a_bracket_becomes_three_intents_with_derived_keys() -> None:
    intent = order_requests.validate_place_bracket(bracket())
    entry, take, stop = intent.legs
    assert [leg.client_order_id for leg in intent.legs] == ["b-1", "b-1:tp", "b-1:sl"]
    assert (entry.action, take.action, stop.action) == ("SELL", "BUY", "BUY")
    assert (take.order_type, stop.order_type) == ("LMT", "TRAIL")
    assert take.tif == stop.tif == "GTC"  # the exits take the entry's TIF
    assert take.oca_group == stop.oca_group == "b-1:oca" and take.oca_type == 2
    assert not entry.oca_group
    assert stop.trailing_percent == Decimal(2)


def test_without_a_take_profit_the_stop_loss_transmits() -> None:
    req = bracket()
    req.ClearField("take_profit")
    orders = build_bracket_orders(order_requests.validate_place_bracket(req), "DU1")
    assert [o.transmit for o in orders] == [False, True]
    assert [o.orderRef for o in orders] == ["b-1", "b-1:sl"]
    assert (orders[1].ocaGroup, orders[1].ocaType) == ("b-1:oca", 2)
    assert orders[1].trailingPercent == 2.0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"client_order_id": "x" * 38}, "client_order_id"),
        ({"client_order_id": "b:sl"}, "client_order_id"),
        ({"quantity": dec("0")}, "quantity"),
        ({"side": orders_pb2.ORDER_SIDE_UNSPECIFIED}, "side"),
    ],
)
def test_bracket_violations(change: dict[str, object], field: str) -> None:
    req = bracket()
    for name, value in change.items():
        if isinstance(value, common_pb2.Decimal):
            getattr(req, name).CopyFrom(value)
        else:
            setattr(req, name, value)
    with pytest.raises(GatewayError) as err:
        order_requests.validate_place_bracket(req)
    assert field in dict(err.value.field_violations)


def test_leg_violations_carry_the_leg_prefix() -> None:
    req = bracket()
    req.take_profit.order_type = orders_pb2.ORDER_TYPE_MARKET
    req.stop_loss.ClearField("trailing_percent")
    req.entry.good_till_time.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(GatewayError) as err:
        order_requests.validate_place_bracket(req)
    fields = dict(err.value.field_violations)
    assert {"take_profit.order_type", "stop_loss.trailing_amount", "entry.good_till_time"} <= set(
        fields
    )


def test_new_terms_reach_the_ib_order() -> None:
    req = orders_pb2.PlaceOrderRequest(
        client_order_id="t-1",
        contract=common_pb2.Contract(symbol="AAPL"),
        side=orders_pb2.ORDER_SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_TRAILING_STOP_LIMIT,
        quantity=dec("3"),
        trailing_amount=dec("1.5"),
        limit_offset=dec("0.05"),
        time_in_force=orders_pb2.TIME_IN_FORCE_GTD,
        oca_group="grp",
        oca_type=orders_pb2.OCA_TYPE_CANCEL_WITH_BLOCK,
    )
    req.good_till_time.FromDatetime(datetime(2030, 1, 2, 15, 30, tzinfo=UTC))
    order = build_ib_order(order_requests.validate_place_order(req), "DU1")
    assert (order.orderType, order.auxPrice, order.lmtPriceOffset) == ("TRAIL LIMIT", 1.5, 0.05)
    assert (order.tif, order.goodTillDate) == ("GTD", "20300102-15:30:00")
    assert (order.ocaGroup, order.ocaType) == ("grp", 1)
    rel = req.__class__(
        client_order_id="r-1",
        contract=req.contract,
        side=orders_pb2.ORDER_SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_RELATIVE,
        quantity=dec("3"),
        peg_offset=dec("0.02"),
        limit_price=dec("150"),
    )
    order = build_ib_order(order_requests.validate_place_order(rel), "DU1")
    assert (order.orderType, order.auxPrice, order.lmtPrice) == ("REL", 0.02, 150.0)


def test_an_exit_shows_its_bracket() -> None:
    exit_order = Order(
        orderId=6,
        clientId=1,
        action="SELL",
        totalQuantity=10,
        orderType="STP",
        auxPrice=185.0,
        orderRef="b-9:sl",
        parentId=4,
        ocaGroup="b-9:oca",
        ocaType=2,
        tif="GTD",
        goodTillDate="20300101-00:00:00",
    )
    trade = Trade(Contract(conId=1, symbol="AAPL"), exit_order, OrderStatus(status="PreSubmitted"))
    msg = oc.trade_to_proto(trade)
    assert (msg.bracket_client_order_id, msg.bracket_role) == (
        "b-9",
        orders_pb2.BRACKET_ROLE_STOP_LOSS,
    )
    assert (msg.parent_order_id, msg.oca_group) == (4, "b-9:oca")
    assert msg.oca_type == orders_pb2.OCA_TYPE_REDUCE_WITH_BLOCK
    assert msg.good_till_time.ToDatetime(UTC) == datetime(2030, 1, 1, tzinfo=UTC)
    # A plain order whose key has no exits is no bracket's entry.
    plain = Trade(Contract(conId=1), Order(orderId=7, orderRef="b-9", orderType="LMT"))
    assert not oc.trade_to_proto(plain).bracket_client_order_id
    entry = oc.trade_to_proto(plain, children=[trade])
    assert (entry.bracket_role, list(entry.child_order_ids)) == (
        orders_pb2.BRACKET_ROLE_ENTRY,
        [6],
    )


@pytest.mark.parametrize(
    ("tif", "field"),
    [
        (orders_pb2.TIME_IN_FORCE_GTD, "good_till_time"),  # GTD needs its expiry
        (orders_pb2.TIME_IN_FORCE_OPG, "time_in_force"),
        (orders_pb2.TIME_IN_FORCE_FOK, "time_in_force"),
    ],
)
def test_modify_cannot_switch_to_a_new_order_tif(tif: int, field: str) -> None:
    req = orders_pb2.ModifyOrderRequest(
        order=orders_pb2.OrderKey(client_order_id="m-1"),
        time_in_force=tif,  # type: ignore[arg-type]
    )
    with pytest.raises(GatewayError) as err:
        order_requests.validate_modify_order(req)
    assert field in dict(err.value.field_violations)
