"""Building the IB ``Order`` that goes to TWS: from an intent, or a modified copy."""

from __future__ import annotations

import copy

from ibgateway_server.ib.insync import UNSET_DOUBLE, Order
from ibgateway_server.orders.ib_terms import (
    CAPPED_TYPES,
    LIMIT_TYPES,
    STOP_TYPES,
    TRAILING_TYPES,
    good_till_text,
    type_name,
)
from ibgateway_server.orders.intent import Modification, OrderIntent


def build_ib_order(intent: OrderIntent, account: str) -> Order:
    """The IB Order for an intent; ``orderRef`` carries the idempotency key."""
    order = Order(
        action=intent.action,
        totalQuantity=float(intent.quantity),
        orderType=intent.order_type,
        tif=intent.tif,
        outsideRth=intent.outside_rth,
        account=account,
        orderRef=intent.client_order_id,
        transmit=True,
    )
    if intent.limit_price is not None:
        order.lmtPrice = float(intent.limit_price)
    if intent.order_type in STOP_TYPES and intent.stop_price is not None:
        order.auxPrice = float(intent.stop_price)
    if intent.order_type in TRAILING_TYPES:
        if intent.trailing_amount is not None:
            order.auxPrice = float(intent.trailing_amount)
        if intent.trailing_percent is not None:
            order.trailingPercent = float(intent.trailing_percent)
        if intent.stop_price is not None:
            order.trailStopPrice = float(intent.stop_price)
    if intent.limit_offset is not None:
        order.lmtPriceOffset = float(intent.limit_offset)
    if intent.order_type == "REL" and intent.peg_offset is not None:
        order.auxPrice = float(intent.peg_offset)
    if intent.good_till is not None:
        order.goodTillDate = good_till_text(intent.good_till)
    if intent.oca_group:
        order.ocaGroup = intent.oca_group
        order.ocaType = intent.oca_type
    return order


def modified_order(order: Order, change: Modification) -> tuple[Order, list[tuple[str, str]]]:
    """A copy of ``order`` with ``change`` applied, and the field violations of fields
    its order type does not use (the copy is what goes to TWS; the Trade's own order is
    only updated once TWS acknowledges)."""
    order_type = order.orderType or ""
    violations: list[tuple[str, str]] = []
    new = copy.copy(order)
    if change.quantity is not None:
        new.totalQuantity = float(change.quantity)
    if change.limit_price is not None:
        if order_type in LIMIT_TYPES | CAPPED_TYPES:
            new.lmtPrice = float(change.limit_price)
        else:
            violations.append(("limit_price", f"not used by {type_name(order_type)} orders"))
    if change.stop_price is not None:
        if order_type in STOP_TYPES:
            new.auxPrice = float(change.stop_price)
        elif order_type in TRAILING_TYPES:
            new.trailStopPrice = float(change.stop_price)
        else:
            violations.append(("stop_price", f"not used by {type_name(order_type)} orders"))
    for name, value in (
        ("trailing_amount", change.trailing_amount),
        ("trailing_percent", change.trailing_percent),
    ):
        if value is None:
            continue
        if order_type not in TRAILING_TYPES:
            violations.append(
                (name, f"only used by TRAILING_STOP orders, not {type_name(order_type)}")
            )
        elif name == "trailing_amount":
            new.auxPrice, new.trailingPercent = float(value), UNSET_DOUBLE
        else:
            new.auxPrice, new.trailingPercent = UNSET_DOUBLE, float(value)
    if change.tif is not None:
        new.tif = change.tif
    if change.outside_rth is not None:
        new.outsideRth = change.outside_rth
    if change.limit_offset is not None:
        if order_type == "TRAIL LIMIT":
            new.lmtPriceOffset = float(change.limit_offset)
        else:
            violations.append(
                (
                    "limit_offset",
                    f"only used by TRAILING_STOP_LIMIT orders, not {type_name(order_type)}",
                )
            )
    if change.peg_offset is not None:
        if order_type == "REL":
            new.auxPrice = float(change.peg_offset)
        else:
            violations.append(
                ("peg_offset", f"only used by RELATIVE orders, not {type_name(order_type)}")
            )
    if change.good_till is not None:
        if (new.tif or "").upper() == "GTD":
            new.goodTillDate = good_till_text(change.good_till)
        else:
            violations.append(("good_till_time", "only used by GTD orders"))
    elif change.tif is not None and change.tif != "GTD":
        new.goodTillDate = ""  # no longer GTD: no expiry
    return new, violations
