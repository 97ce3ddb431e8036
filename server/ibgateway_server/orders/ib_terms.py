"""IB's order vocabulary and the proto enums it maps to: sides, types, time in force,
statuses, and which IB message codes about an order are information rather than refusal.

Pure: nothing here touches the network or the clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from ibgateway.v1 import orders_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import Order

SIDE_TO_IB: dict[orders_pb2.OrderSide.ValueType, str] = {
    orders_pb2.ORDER_SIDE_BUY: "BUY",
    orders_pb2.ORDER_SIDE_SELL: "SELL",
}

# IB also reports "SSHORT" (short sale) for sells.
SIDE_FROM_IB: dict[str, orders_pb2.OrderSide.ValueType] = {
    "BUY": orders_pb2.ORDER_SIDE_BUY,
    "SELL": orders_pb2.ORDER_SIDE_SELL,
    "SSHORT": orders_pb2.ORDER_SIDE_SELL,
}

TYPE_TO_IB: dict[orders_pb2.OrderType.ValueType, str] = {
    orders_pb2.ORDER_TYPE_MARKET: "MKT",
    orders_pb2.ORDER_TYPE_LIMIT: "LMT",
    orders_pb2.ORDER_TYPE_STOP: "STP",
    orders_pb2.ORDER_TYPE_STOP_LIMIT: "STP LMT",
    orders_pb2.ORDER_TYPE_TRAILING_STOP: "TRAIL",
    orders_pb2.ORDER_TYPE_TRAILING_STOP_LIMIT: "TRAIL LIMIT",
    orders_pb2.ORDER_TYPE_MARKET_ON_CLOSE: "MOC",
    orders_pb2.ORDER_TYPE_LIMIT_ON_CLOSE: "LOC",
    orders_pb2.ORDER_TYPE_MARKET_IF_TOUCHED: "MIT",
    orders_pb2.ORDER_TYPE_LIMIT_IF_TOUCHED: "LIT",
    orders_pb2.ORDER_TYPE_MIDPRICE: "MIDPRICE",
    orders_pb2.ORDER_TYPE_RELATIVE: "REL",
}

TYPE_FROM_IB: dict[str, orders_pb2.OrderType.ValueType] = {
    ib: proto for proto, ib in TYPE_TO_IB.items()
}

TIF_TO_IB: dict[orders_pb2.TimeInForce.ValueType, str] = {
    orders_pb2.TIME_IN_FORCE_UNSPECIFIED: "DAY",
    orders_pb2.TIME_IN_FORCE_DAY: "DAY",
    orders_pb2.TIME_IN_FORCE_GTC: "GTC",
    orders_pb2.TIME_IN_FORCE_IOC: "IOC",
    orders_pb2.TIME_IN_FORCE_GTD: "GTD",
    orders_pb2.TIME_IN_FORCE_FOK: "FOK",
    orders_pb2.TIME_IN_FORCE_OPG: "OPG",
}

TIF_FROM_IB: dict[str, orders_pb2.TimeInForce.ValueType] = {
    ib: proto for proto, ib in TIF_TO_IB.items() if proto != orders_pb2.TIME_IN_FORCE_UNSPECIFIED
}

OCA_TYPE_TO_IB: dict[orders_pb2.OcaType.ValueType, int] = {
    orders_pb2.OCA_TYPE_CANCEL_WITH_BLOCK: 1,
    orders_pb2.OCA_TYPE_REDUCE_WITH_BLOCK: 2,
    orders_pb2.OCA_TYPE_REDUCE_NON_BLOCK: 3,
}

OCA_TYPE_FROM_IB: dict[int, orders_pb2.OcaType.ValueType] = {
    ib: proto for proto, ib in OCA_TYPE_TO_IB.items()
}

STATUS_FROM_IB: dict[str, orders_pb2.OrderStatus.ValueType] = {
    "PendingSubmit": orders_pb2.ORDER_STATUS_PENDING_SUBMIT,
    "ApiPending": orders_pb2.ORDER_STATUS_PENDING_SUBMIT,
    "PreSubmitted": orders_pb2.ORDER_STATUS_PRE_SUBMITTED,
    "Submitted": orders_pb2.ORDER_STATUS_SUBMITTED,
    "PendingCancel": orders_pb2.ORDER_STATUS_PENDING_CANCEL,
    "Cancelled": orders_pb2.ORDER_STATUS_CANCELLED,
    "ApiCancelled": orders_pb2.ORDER_STATUS_CANCELLED,
    "Filled": orders_pb2.ORDER_STATUS_FILLED,
    "Inactive": orders_pb2.ORDER_STATUS_INACTIVE,
}

# Finished orders: nothing is working any more (ListOrders' COMPLETED filter).
DONE_STATUSES = frozenset(
    {
        orders_pb2.ORDER_STATUS_CANCELLED,
        orders_pb2.ORDER_STATUS_FILLED,
        orders_pb2.ORDER_STATUS_INACTIVE,
    }
)

# Statuses that mean TWS has not acknowledged the order yet.
UNACKNOWLEDGED_IB_STATUSES = frozenset({"PendingSubmit", "ApiPending", ""})

# IB messages about an order that are information, not a refusal (202: cancelled as asked;
# 399/404/434: warnings; 10167: delayed data; 10349: order TIF changed).
INFORMATIONAL_CODES = frozenset({202, 399, 404, 434, 10167, 10349})

# Types whose limit_price (IB lmtPrice) is required; and those where it is an optional cap.
LIMIT_TYPES = frozenset({"LMT", "STP LMT", "LIT", "LOC"})
CAPPED_TYPES = frozenset({"MIDPRICE", "REL"})

# Types whose stop_price is their trigger (IB auxPrice), required.
STOP_TYPES = frozenset({"STP", "STP LMT", "MIT", "LIT"})

# Trailing types: trailing_amount (IB auxPrice) or trailing_percent; stop_price is the
# optional initial stop (IB trailStopPrice).
TRAILING_TYPES = frozenset({"TRAIL", "TRAIL LIMIT"})

# Types that wait for a trigger: no IOC / FOK.
TRIGGERED_TYPES = STOP_TYPES | TRAILING_TYPES

# Closing-auction types: TIF DAY only.
CLOSE_TYPES = frozenset({"MOC", "LOC"})


# A bracket's legs (PlaceBracketOrder) carry the bracket's key in their orderRef: the
# entry the key itself, the exits the key with these suffixes.
TAKE_PROFIT_SUFFIX = ":tp"
STOP_LOSS_SUFFIX = ":sl"


def bracket_of(order_ref: str) -> tuple[str, orders_pb2.BracketRole.ValueType]:
    """(bracket key, role) an orderRef names: an exit by its suffix; anything else may be
    an entry (the caller knows whether it has children)."""
    for suffix, role in (
        (TAKE_PROFIT_SUFFIX, orders_pb2.BRACKET_ROLE_TAKE_PROFIT),
        (STOP_LOSS_SUFFIX, orders_pb2.BRACKET_ROLE_STOP_LOSS),
    ):
        if order_ref.endswith(suffix) and len(order_ref) > len(suffix):
            return order_ref[: -len(suffix)], role
    return order_ref, orders_pb2.BRACKET_ROLE_ENTRY


def good_till_text(when: datetime) -> str:
    """IB's goodTillDate for an instant: "yyyymmdd-hh:mm:ss", which IB reads as UTC."""
    return f"{when.astimezone(UTC):%Y%m%d-%H:%M:%S}"


def good_till_time(text: str) -> datetime | None:
    """A goodTillDate as TWS reports it ("yyyymmdd-hh:mm:ss" UTC, or "yyyymmdd hh:mm:ss
    [Zone]" in the zone, US/Eastern without one); None when empty or unreadable."""
    text = (text or "").strip()
    try:
        if len(text) >= 17 and text[8] == "-":
            return datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        stamp, _, rest = text.partition(" ")
        clock, _, zone = rest.partition(" ")
        moment = datetime.strptime(f"{stamp} {clock or '00:00:00'}", "%Y%m%d %H:%M:%S")
        return moment.replace(tzinfo=ZoneInfo(zone or "US/Eastern"))
    except (ValueError, KeyError):
        return None


def is_informational(code: int) -> bool:
    """An IB message about an order that does not refuse or end it."""
    return code in INFORMATIONAL_CODES or 2100 <= code < 2200


def status_from_ib(status: str) -> orders_pb2.OrderStatus.ValueType:
    """IB's order status string as the proto enum (unknown → UNSPECIFIED)."""
    return STATUS_FROM_IB.get(status or "", orders_pb2.ORDER_STATUS_UNSPECIFIED)


def type_name(order_type: str) -> str:
    proto = TYPE_FROM_IB.get(order_type)
    return orders_pb2.OrderType.Name(proto).removeprefix("ORDER_TYPE_") if proto else order_type


def ib_number(value: float | Decimal | None) -> Decimal | None:
    """An IB number as an exact Decimal; None for unset / NaN / infinite."""
    text = convert.decimal_text(value)
    return Decimal(text) if text else None


_ERROR_PREFIX = re.compile(r"^(Error|Warning) -?\d+, reqId -?\d+: ")


def strip_error_prefix(text: str) -> str:
    """ib_insync logs "Error 201, reqId 7: <IB's text>"; keep IB's text."""
    return _ERROR_PREFIX.sub("", text or "", count=1)


def trailing_offsets(order: Order) -> tuple[str, str]:
    """(trailing_amount, trailing_percent) of a TRAIL order: exactly one is set."""
    percent = ib_number(order.trailingPercent)
    if percent is not None and percent > 0:
        return "", convert.decimal_text(percent)
    amount = ib_number(order.auxPrice)
    if amount is not None and amount > 0:
        return convert.decimal_text(amount), ""
    return "", ""
