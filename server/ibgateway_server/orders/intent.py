"""What a client asked for, in IB's terms, and whether an order already placed is it.

* :class:`OrderIntent` is a validated PlaceOrderRequest (exact decimals, IB spellings);
  :class:`Modification` a validated ModifyOrderRequest.
* :func:`intent_differences` tells whether a retried request (same client_order_id) asks
  for the same order as the one already placed.
* :func:`terms_of` is what TWS reports back of an order's terms: a change means it was modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ibgateway.v1 import common_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import Order, Trade
from ibgateway_server.orders.ib_terms import (
    CAPPED_TYPES,
    LIMIT_TYPES,
    STOP_TYPES,
    TRAILING_TYPES,
    good_till_text,
    ib_number,
    trailing_offsets,
)


@dataclass(frozen=True)
class OrderIntent:
    """A validated PlaceOrderRequest: what the client asked for, in IB's terms."""

    client_order_id: str
    contract: common_pb2.Contract  # the request's (possibly partial) spec
    action: str  # "BUY" / "SELL"
    order_type: str  # IB's spelling: "MKT", "LMT", "STP", "STP LMT", "TRAIL", "MOC", ...
    quantity: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None  # STP / STP LMT / MIT / LIT trigger; TRAIL: initial stop
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    tif: str = "DAY"
    outside_rth: bool = False
    account: str = ""  # as given; "" lets the gateway pick the default account
    good_till: datetime | None = None  # GTD expiry (aware)
    limit_offset: Decimal | None = None  # TRAIL LIMIT (IB lmtPriceOffset)
    peg_offset: Decimal | None = None  # REL (IB auxPrice)
    oca_group: str = ""
    oca_type: int = 0  # IB's 1-3; 0: TWS's default


@dataclass(frozen=True)
class Modification:
    """A validated ModifyOrderRequest: the order it names and the fields to change
    (None keeps the current value)."""

    key: str | int
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    tif: str | None = None
    outside_rth: bool | None = None
    limit_offset: Decimal | None = None
    peg_offset: Decimal | None = None
    good_till: datetime | None = None


def intent_differences(intent: OrderIntent, trade: Trade) -> list[str]:
    """The request fields in which ``intent`` asks for something else than ``trade`` is.

    Empty means "the same order" (a genuine retry). Contract fields are compared only
    where the request gave them (a partial spec matches its qualified contract); an
    omitted account matches any; a trailing stop's moving stop price is not compared.
    """
    order, contract = trade.order, trade.contract
    diffs: list[str] = []
    spec = intent.contract
    if spec.con_id and spec.con_id != (contract.conId or 0):
        diffs.append("contract.con_id")
    if spec.symbol.strip() and spec.symbol.strip().upper() != (contract.symbol or "").upper():
        diffs.append("contract.symbol")
    if spec.symbol.strip() or spec.sec_type:
        wanted = convert.SEC_TYPE_TO_IB.get(spec.sec_type, "STK")
        if contract.secType and wanted != contract.secType:
            diffs.append("contract.sec_type")
    if spec.currency and contract.currency and spec.currency.upper() != contract.currency:
        diffs.append("contract.currency")
    if (order.action or "").upper() not in _same_side(intent.action):
        diffs.append("side")
    if order.orderType != intent.order_type:
        diffs.append("order_type")
    if not _same_number(intent.quantity, order.totalQuantity):
        diffs.append("quantity")
    if intent.order_type in LIMIT_TYPES and not _same_number(intent.limit_price, order.lmtPrice):
        diffs.append("limit_price")
    if intent.order_type in CAPPED_TYPES and _cap(intent.limit_price) != _cap(order.lmtPrice):
        diffs.append("limit_price")
    if intent.order_type in STOP_TYPES and not _same_number(intent.stop_price, order.auxPrice):
        diffs.append("stop_price")
    if intent.order_type == "REL" and _cap(intent.peg_offset) != _cap(order.auxPrice):
        diffs.append("peg_offset")
    if intent.order_type in TRAILING_TYPES:
        amount, percent = trailing_offsets(order)
        if convert.decimal_text(intent.trailing_amount) != amount:
            diffs.append("trailing_amount")
        if convert.decimal_text(intent.trailing_percent) != percent:
            diffs.append("trailing_percent")
    if intent.tif != (order.tif or "DAY").upper():
        diffs.append("time_in_force")
    if intent.outside_rth != bool(order.outsideRth):
        diffs.append("outside_rth")
    if intent.account and order.account and intent.account != order.account:
        diffs.append("account_id")
    if intent.good_till is not None and good_till_text(intent.good_till) != (
        order.goodTillDate or ""
    ):
        diffs.append("good_till_time")
    if intent.oca_group != (order.ocaGroup or ""):
        diffs.append("oca_group")
    return diffs


def _cap(value: float | Decimal | None) -> Decimal | None:
    """An optional price: unset and zero both mean none."""
    number = ib_number(value)
    return number if number else None


def _same_side(action: str) -> frozenset[str]:
    return frozenset({"SELL", "SSHORT"}) if action == "SELL" else frozenset({action})


def _same_number(wanted: Decimal | None, actual: float | Decimal | None) -> bool:
    return wanted is not None and ib_number(actual) == wanted


def order_terms(trade: Trade) -> tuple[str, ...]:
    """What TWS reports back of an order's terms (type, quantity and the prices its type
    uses), in exact decimal text: a change means the order was modified."""
    return terms_of(trade.order)


def terms_of(order: Order) -> tuple[str, ...]:
    """:func:`order_terms` of a bare Order."""
    order_type = order.orderType or ""
    limit = convert.decimal_text(order.lmtPrice) if order_type in LIMIT_TYPES | CAPPED_TYPES else ""
    aux = (
        convert.decimal_text(order.auxPrice)
        if order_type in STOP_TYPES | TRAILING_TYPES or order_type == "REL"
        else ""
    )
    percent = convert.decimal_text(order.trailingPercent) if order_type in TRAILING_TYPES else ""
    return (order_type, convert.decimal_text(order.totalQuantity), limit, aux, percent)
