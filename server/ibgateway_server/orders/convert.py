"""Pure order conversions and validation: orders_pb2 ↔ ib_insync Order / Trade / Fill.

* :func:`validate_place_order` checks a PlaceOrderRequest and collects *every* problem as a
  BadRequest field violation, returning an :class:`OrderIntent` (exact decimals, IB
  spellings) that :func:`build_ib_order` turns into an IB ``Order``.
* :func:`trade_to_proto` renders an ib_insync ``Trade`` (status, fills, commission
  reports) as an ``orders_pb2.Order``; floats from IB go through their shortest repr, so
  prices never show a float artefact.
* :func:`intent_differences` tells whether a retried request (same client_order_id) asks
  for the same order as the one already placed.

Nothing here touches the network or the clock.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.api.validation import Violations, check_contract, parse_decimal
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import UNSET_DOUBLE, Fill, Order, OrderState, Trade

# The idempotency key: short, and safe to store in IB's orderRef and to show in logs.
CLIENT_ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,40}")
CLIENT_ORDER_ID_RULE = "1-40 characters from A-Z a-z 0-9 . _ : -"

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
}
TYPE_FROM_IB: dict[str, orders_pb2.OrderType.ValueType] = {
    ib: proto for proto, ib in TYPE_TO_IB.items()
}
TIF_TO_IB: dict[orders_pb2.TimeInForce.ValueType, str] = {
    orders_pb2.TIME_IN_FORCE_UNSPECIFIED: "DAY",
    orders_pb2.TIME_IN_FORCE_DAY: "DAY",
    orders_pb2.TIME_IN_FORCE_GTC: "GTC",
    orders_pb2.TIME_IN_FORCE_IOC: "IOC",
}
TIF_FROM_IB: dict[str, orders_pb2.TimeInForce.ValueType] = {
    "DAY": orders_pb2.TIME_IN_FORCE_DAY,
    "GTC": orders_pb2.TIME_IN_FORCE_GTC,
    "IOC": orders_pb2.TIME_IN_FORCE_IOC,
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

_LIMIT_TYPES = frozenset({"LMT", "STP LMT"})
_STOP_TYPES = frozenset({"STP", "STP LMT"})
_KNOWN_SIDES = frozenset(orders_pb2.OrderSide.values())
_KNOWN_TYPES = frozenset(orders_pb2.OrderType.values())
_KNOWN_TIFS = frozenset(orders_pb2.TimeInForce.values())
_KNOWN_FILTERS = frozenset(orders_pb2.OrderFilter.values())


@dataclass(frozen=True)
class OrderIntent:
    """A validated PlaceOrderRequest: what the client asked for, in IB's terms."""

    client_order_id: str
    contract: common_pb2.Contract  # the request's (possibly partial) spec
    action: str  # "BUY" / "SELL"
    order_type: str  # "MKT", "LMT", "STP", "STP LMT", "TRAIL"
    quantity: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None  # STP / STP LMT trigger; TRAIL: initial stop (optional)
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    tif: str = "DAY"
    outside_rth: bool = False
    account: str = ""  # as given; "" lets the gateway pick the default account


# ------------------------------------------------------------------------- validation


def check_client_order_id(value: str, field: str, violations: Violations) -> bool:
    """The idempotency key's format (required)."""
    if not value:
        violations.add(field, f"required: {CLIENT_ORDER_ID_RULE}")
        return False
    if not CLIENT_ORDER_ID_PATTERN.fullmatch(value):
        violations.add(field, f"invalid {value[:60]!r}: must be {CLIENT_ORDER_ID_RULE}")
        return False
    return True


def _given(request: orders_pb2.PlaceOrderRequest, name: str) -> bool:
    """Whether a Decimal field carries a value ("" means not set, as in common.proto)."""
    return request.HasField(name) and bool(getattr(request, name).value.strip())  # type: ignore[arg-type]


def validate_place_order(request: orders_pb2.PlaceOrderRequest) -> OrderIntent:
    """The request as an OrderIntent; INVALID_ARGUMENT listing every violation otherwise."""
    v = Violations()
    check_client_order_id(request.client_order_id, "client_order_id", v)
    check_contract(request.contract if request.HasField("contract") else None, "contract", v)

    if request.side == orders_pb2.ORDER_SIDE_UNSPECIFIED:
        v.add("side", "required: ORDER_SIDE_BUY or ORDER_SIDE_SELL")
    elif request.side not in _KNOWN_SIDES:
        v.add("side", f"unknown order side {request.side}")
    order_type = TYPE_TO_IB.get(request.order_type, "")
    if request.order_type == orders_pb2.ORDER_TYPE_UNSPECIFIED:
        v.add("order_type", "required: one of " + ", ".join(_enum_names(orders_pb2.OrderType)))
    elif request.order_type not in _KNOWN_TYPES:
        v.add("order_type", f"unknown order type {request.order_type}")
    if request.time_in_force not in _KNOWN_TIFS:
        v.add("time_in_force", f"unknown time in force {request.time_in_force}")

    quantity = parse_decimal(request.quantity, "quantity", v, required=True, positive=True)
    limit, stop, amount, percent = _parse_prices(request, v)

    if order_type:
        _check_prices_for_type(request, order_type, v)
    v.raise_if_any()
    assert quantity is not None
    return OrderIntent(
        client_order_id=request.client_order_id,
        contract=request.contract,
        action=SIDE_TO_IB[request.side],
        order_type=order_type,
        quantity=quantity,
        limit_price=limit,
        stop_price=stop,
        trailing_amount=amount,
        trailing_percent=percent,
        tif=TIF_TO_IB[request.time_in_force],
        outside_rth=request.outside_rth,
        account=request.account_id.strip(),
    )


def _check_prices_for_type(
    request: orders_pb2.PlaceOrderRequest, order_type: str, v: Violations
) -> None:
    """Required prices present, and no price that the order type would silently ignore."""
    has = {
        name: _given(request, name)
        for name in ("limit_price", "stop_price", "trailing_amount", "trailing_percent")
    }
    needs_limit = order_type in _LIMIT_TYPES
    needs_stop = order_type in _STOP_TYPES
    trail = order_type == "TRAIL"
    if needs_limit and not has["limit_price"]:
        v.add("limit_price", f"required for {_type_name(order_type)} orders")
    if needs_stop and not has["stop_price"]:
        v.add("stop_price", f"required for {_type_name(order_type)} orders")
    if trail:
        if has["trailing_amount"] and has["trailing_percent"]:
            v.add("trailing_percent", "give trailing_amount or trailing_percent, not both")
        elif not has["trailing_amount"] and not has["trailing_percent"]:
            v.add("trailing_amount", "required for TRAILING_STOP orders (or trailing_percent)")
    if has["limit_price"] and not needs_limit:
        v.add("limit_price", f"not used by {_type_name(order_type)} orders")
    # TRAIL accepts stop_price as its initial stop (IB's trailStopPrice).
    if has["stop_price"] and not (needs_stop or trail):
        v.add("stop_price", f"not used by {_type_name(order_type)} orders")
    for name in ("trailing_amount", "trailing_percent"):
        if has[name] and not trail:
            v.add(name, f"only used by TRAILING_STOP orders, not {_type_name(order_type)}")


def _type_name(order_type: str) -> str:
    proto = TYPE_FROM_IB.get(order_type)
    return orders_pb2.OrderType.Name(proto).removeprefix("ORDER_TYPE_") if proto else order_type


def _enum_names(enum: object) -> list[str]:
    names: list[str] = enum.keys()  # type: ignore[attr-defined]
    return [n for n in names if not n.endswith("_UNSPECIFIED")]


def validate_order_key(key: orders_pb2.OrderKey, field: str) -> str | int:
    """The client_order_id (str) or IB order id (int) an OrderKey names."""
    v = Violations()
    result = check_order_key(key, field, v)
    v.raise_if_any()
    return result


def check_order_key(key: orders_pb2.OrderKey, field: str, v: Violations) -> str | int:
    """Like :func:`validate_order_key`, collecting violations into ``v``."""
    which = key.WhichOneof("key")
    result: str | int = ""
    if which == "client_order_id":
        check_client_order_id(key.client_order_id, f"{field}.client_order_id", v)
        result = key.client_order_id
    elif which == "order_id":
        v.check(key.order_id > 0, f"{field}.order_id", "must be a positive IB order id")
        result = key.order_id
    else:
        v.add(field, "required: set order.client_order_id or order.order_id")
    return result


def validate_list_orders(request: orders_pb2.ListOrdersRequest) -> None:
    v = Violations()
    v.check(request.filter in _KNOWN_FILTERS, "filter", f"unknown order filter {request.filter}")
    v.raise_if_any()


# ------------------------------------------------------------------- request → IB


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
    if intent.order_type in _STOP_TYPES and intent.stop_price is not None:
        order.auxPrice = float(intent.stop_price)
    if intent.order_type == "TRAIL":
        if intent.trailing_amount is not None:
            order.auxPrice = float(intent.trailing_amount)
        if intent.trailing_percent is not None:
            order.trailingPercent = float(intent.trailing_percent)
        if intent.stop_price is not None:
            order.trailStopPrice = float(intent.stop_price)
    return order


# ------------------------------------------------------- retry: same order or not?


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
    if intent.order_type in _LIMIT_TYPES and not _same_number(intent.limit_price, order.lmtPrice):
        diffs.append("limit_price")
    if intent.order_type in _STOP_TYPES and not _same_number(intent.stop_price, order.auxPrice):
        diffs.append("stop_price")
    if intent.order_type == "TRAIL":
        amount, percent = _trailing(order)
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
    return diffs


def _same_side(action: str) -> frozenset[str]:
    return frozenset({"SELL", "SSHORT"}) if action == "SELL" else frozenset({action})


def _number(value: float | Decimal | None) -> Decimal | None:
    """An IB number as an exact Decimal; None for unset / NaN / infinite."""
    text = convert.decimal_text(value)
    return Decimal(text) if text else None


def _same_number(wanted: Decimal | None, actual: float | Decimal | None) -> bool:
    return wanted is not None and _number(actual) == wanted


# ------------------------------------------------------------------- IB → proto


def is_informational(code: int) -> bool:
    """An IB message about an order that does not refuse or end it."""
    return code in INFORMATIONAL_CODES or 2100 <= code < 2200


def order_terms(trade: Trade) -> tuple[str, ...]:
    """What TWS reports back of an order's terms (type, quantity and the prices its type
    uses), in exact decimal text: a change means the order was modified."""
    return terms_of(trade.order)


def status_from_ib(status: str) -> orders_pb2.OrderStatus.ValueType:
    """IB's order status string as the proto enum (unknown → UNSPECIFIED)."""
    return STATUS_FROM_IB.get(status or "", orders_pb2.ORDER_STATUS_UNSPECIFIED)


def is_done(trade: Trade) -> bool:
    """Nothing of the order is working any more (filled, cancelled or inactive)."""
    return status_from_ib(trade.orderStatus.status) in DONE_STATUSES


def filled_quantity(trade: Trade) -> Decimal:
    """What executed so far: the best of IB's cumulative figure and the fills seen.

    A live order's orderStatus carries the cumulative quantity; a completed order fetched
    after a restart only has its fills (reqExecutions) or the order's filledQuantity.
    """
    candidates = [
        _number(trade.orderStatus.filled),
        _sum(_number(f.execution.shares) for f in trade.fills),
        _number(getattr(trade.order, "filledQuantity", None)),
    ]
    return max((c for c in candidates if c is not None), default=Decimal(0))


def _sum(values: object) -> Decimal:
    total = Decimal(0)
    for value in values:  # type: ignore[attr-defined]
        if value is not None:
            total += value
    return total


def average_fill_price(trade: Trade) -> str:
    """IB's average fill price, else the exact quantity-weighted mean of the fills."""
    if trade.orderStatus.filled and trade.orderStatus.avgFillPrice:
        text = convert.decimal_text(trade.orderStatus.avgFillPrice)
        if text and text != "0":
            return text
    quantity, value = Decimal(0), Decimal(0)
    for fill in trade.fills:
        shares, price = _number(fill.execution.shares), _number(fill.execution.price)
        if shares and price is not None:
            quantity += shares
            value += shares * price
    if not quantity:
        return ""
    return convert.decimal_text((value / quantity).quantize(Decimal("1e-10")))


def fill_to_proto(fill: Fill) -> orders_pb2.Fill:
    execution = fill.execution
    msg = orders_pb2.Fill(
        execution_id=execution.execId,
        quantity=convert.to_decimal(execution.shares),
        price=convert.to_decimal(execution.price),
        exchange=execution.exchange or "",
    )
    when = _fill_time(fill)
    _stamp(msg.execution_time, when)
    report = fill.commissionReport
    if report is not None and report.execId:
        msg.commission.value = convert.decimal_text(report.commission)
        msg.commission_currency = report.currency or ""
        # ib_insync turns IB's "unset" into 0.0: only a non-zero P&L means a close.
        if report.realizedPNL and report.realizedPNL != UNSET_DOUBLE:
            msg.realized_pnl.value = convert.decimal_text(report.realizedPNL)
    return msg


def _fill_time(fill: Fill) -> datetime | None:
    when = fill.execution.time
    if isinstance(when, datetime):
        return when
    return fill.time if isinstance(fill.time, datetime) else None


def total_commission(fills: Sequence[Fill]) -> str:
    """The sum of the commission reports received so far; "" before the first one."""
    reported = [
        _number(f.commissionReport.commission)
        for f in fills
        if f.commissionReport is not None and f.commissionReport.execId
    ]
    known = [c for c in reported if c is not None]
    return convert.decimal_text(sum(known, Decimal(0))) if known else ""


def _trailing(order: Order) -> tuple[str, str]:
    """(trailing_amount, trailing_percent) of a TRAIL order: exactly one is set."""
    percent = _number(order.trailingPercent)
    if percent is not None and percent > 0:
        return "", convert.decimal_text(percent)
    amount = _number(order.auxPrice)
    if amount is not None and amount > 0:
        return convert.decimal_text(amount), ""
    return "", ""


def trade_to_proto(
    trade: Trade,
    *,
    create_time: datetime | None = None,
    message: tuple[int, str] | None = None,
) -> orders_pb2.Order:
    """The proto Order of an ib_insync Trade.

    ``message`` is the latest (IB code, text) about the order (e.g. 201 and its reason,
    202 cancelled); without it, the newest error recorded in the trade's log is used.
    """
    order, status = trade.order, trade.orderStatus
    order_type = order.orderType or ""
    quantity = _number(order.totalQuantity) or Decimal(0)
    filled = filled_quantity(trade)
    proto_status = status_from_ib(status.status)
    remaining = Decimal(0) if proto_status in DONE_STATUSES else max(Decimal(0), quantity - filled)
    fills = sorted(trade.fills, key=_fill_sort_key)
    msg = orders_pb2.Order(
        client_order_id=order.orderRef or "",
        order_id=order.orderId or status.orderId or 0,
        perm_id=order.permId or status.permId or 0,
        account_id=order.account or next((f.execution.acctNumber for f in fills), "") or "",
        contract=convert.contract_to_proto(trade.contract),
        side=SIDE_FROM_IB.get((order.action or "").upper(), orders_pb2.ORDER_SIDE_UNSPECIFIED),
        order_type=TYPE_FROM_IB.get(order_type, orders_pb2.ORDER_TYPE_UNSPECIFIED),
        quantity=common_pb2.Decimal(value=convert.decimal_text(quantity)),
        time_in_force=TIF_FROM_IB.get(
            (order.tif or "").upper(), orders_pb2.TIME_IN_FORCE_UNSPECIFIED
        ),
        outside_rth=bool(order.outsideRth),
        status=proto_status,
        filled_quantity=common_pb2.Decimal(value=convert.decimal_text(filled)),
        remaining_quantity=common_pb2.Decimal(value=convert.decimal_text(remaining)),
        average_fill_price=common_pb2.Decimal(value=average_fill_price(trade)),
        fills=[fill_to_proto(f) for f in fills],
        total_commission=common_pb2.Decimal(value=total_commission(fills)),
    )
    if order_type in _LIMIT_TYPES:
        msg.limit_price.value = convert.decimal_text(order.lmtPrice)
    if order_type in _STOP_TYPES:
        msg.stop_price.value = convert.decimal_text(order.auxPrice)
    elif order_type == "TRAIL":
        msg.stop_price.value = convert.decimal_text(order.trailStopPrice)
        amount, percent = _trailing(order)
        msg.trailing_amount.value = amount
        msg.trailing_percent.value = percent
    code, text = message if message is not None else _last_logged_error(trade)
    msg.ib_code = code
    msg.status_message = text
    created = create_time or (trade.log[0].time if trade.log else None)
    _stamp(msg.create_time, created)
    _stamp(msg.update_time, last_update_time(trade))
    return msg


def _stamp(target: Timestamp, when: datetime | None) -> None:
    stamp = convert.timestamp(when)
    if stamp is not None:
        target.CopyFrom(stamp)


def _fill_sort_key(fill: Fill) -> tuple[float, str]:
    when = _fill_time(fill)
    return (when.timestamp() if when is not None else 0.0, fill.execution.execId)


def _last_logged_error(trade: Trade) -> tuple[int, str]:
    for entry in reversed(trade.log):
        if entry.errorCode:
            return entry.errorCode, strip_error_prefix(entry.message)
    return 0, ""


_ERROR_PREFIX = re.compile(r"^(Error|Warning) -?\d+, reqId -?\d+: ")


def strip_error_prefix(text: str) -> str:
    """ib_insync logs "Error 201, reqId 7: <IB's text>"; keep IB's text."""
    return _ERROR_PREFIX.sub("", text or "", count=1)


def last_update_time(trade: Trade) -> datetime | None:
    times: list[datetime] = [e.time for e in trade.log if isinstance(e.time, datetime)]
    times += [t for t in (_fill_time(f) for f in trade.fills) if t is not None]
    return max(times, key=lambda t: t.timestamp()) if times else None


# ------------------------------------------------------------------- ModifyOrder


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


def _parse_prices(
    request: orders_pb2.PlaceOrderRequest | orders_pb2.ModifyOrderRequest, v: Violations
) -> tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None]:
    """Limit, stop, trailing amount and trailing percent, each positive when given."""
    limit = parse_decimal(request.limit_price, "limit_price", v, positive=True)
    stop = parse_decimal(request.stop_price, "stop_price", v, positive=True)
    amount = parse_decimal(request.trailing_amount, "trailing_amount", v, positive=True)
    percent = parse_decimal(request.trailing_percent, "trailing_percent", v, positive=True)
    if percent is not None and percent >= 100:
        v.add("trailing_percent", f"must be less than 100 (got {percent})")
    return limit, stop, amount, percent


def validate_modify_order(request: orders_pb2.ModifyOrderRequest) -> Modification:
    """The request as a Modification; INVALID_ARGUMENT listing every violation otherwise."""
    v = Violations()
    key = check_order_key(request.order, "order", v)
    quantity = parse_decimal(request.quantity, "quantity", v, positive=True)
    limit, stop, amount, percent = _parse_prices(request, v)
    if amount is not None and percent is not None:
        v.add("trailing_percent", "give trailing_amount or trailing_percent, not both")
    tif: str | None = None
    if request.time_in_force not in _KNOWN_TIFS:
        v.add("time_in_force", f"unknown time in force {request.time_in_force}")
    elif request.time_in_force != orders_pb2.TIME_IN_FORCE_UNSPECIFIED:
        tif = TIF_TO_IB[request.time_in_force]
    outside_rth = request.outside_rth if request.HasField("outside_rth") else None
    changes = (quantity, limit, stop, amount, percent, tif, outside_rth)
    if key != "" and all(c is None for c in changes):
        v.add("quantity", "nothing to change: set at least one field besides order")
    v.raise_if_any()
    return Modification(key, quantity, limit, stop, amount, percent, tif, outside_rth)


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
        if order_type in _LIMIT_TYPES:
            new.lmtPrice = float(change.limit_price)
        else:
            violations.append(("limit_price", f"not used by {_type_name(order_type)} orders"))
    if change.stop_price is not None:
        if order_type in _STOP_TYPES:
            new.auxPrice = float(change.stop_price)
        elif order_type == "TRAIL":
            new.trailStopPrice = float(change.stop_price)
        else:
            violations.append(("stop_price", f"not used by {_type_name(order_type)} orders"))
    for name, value in (
        ("trailing_amount", change.trailing_amount),
        ("trailing_percent", change.trailing_percent),
    ):
        if value is None:
            continue
        if order_type != "TRAIL":
            violations.append(
                (name, f"only used by TRAILING_STOP orders, not {_type_name(order_type)}")
            )
        elif name == "trailing_amount":
            new.auxPrice, new.trailingPercent = float(value), UNSET_DOUBLE
        else:
            new.auxPrice, new.trailingPercent = UNSET_DOUBLE, float(value)
    if change.tif is not None:
        new.tif = change.tif
    if change.outside_rth is not None:
        new.outsideRth = change.outside_rth
    return new, violations


def terms_of(order: Order) -> tuple[str, ...]:
    """:func:`order_terms` of a bare Order."""
    order_type = order.orderType or ""
    limit = convert.decimal_text(order.lmtPrice) if order_type in _LIMIT_TYPES else ""
    aux = (
        convert.decimal_text(order.auxPrice)
        if order_type in _STOP_TYPES or order_type == "TRAIL"
        else ""
    )
    percent = convert.decimal_text(order.trailingPercent) if order_type == "TRAIL" else ""
    return (order_type, convert.decimal_text(order.totalQuantity), limit, aux, percent)


# ------------------------------------------------------------------- PreviewOrder


def validate_preview_order(request: orders_pb2.PreviewOrderRequest) -> OrderIntent:
    """PlaceOrder's validation, minus the idempotency key (a preview places nothing)."""
    as_place = orders_pb2.PlaceOrderRequest(
        client_order_id="preview",  # a valid placeholder; never sent
        side=request.side,
        order_type=request.order_type,
        time_in_force=request.time_in_force,
        outside_rth=request.outside_rth,
        account_id=request.account_id,
    )
    for name in (
        "contract",
        "quantity",
        "limit_price",
        "stop_price",
        "trailing_amount",
        "trailing_percent",
    ):
        if request.HasField(name):
            getattr(as_place, name).CopyFrom(getattr(request, name))
    return replace(validate_place_order(as_place), client_order_id="")


def ib_amount(value: str | float | None) -> str:
    """One of IB's what-if figures as exact decimal text; IB's "unset" (the largest
    double, as text or float) and empty values become ""."""
    text = convert.decimal_text(value)
    if not text:
        return ""
    if abs(Decimal(text)) >= _IB_UNSET_DECIMAL:
        return ""
    return text


_IB_UNSET_DECIMAL = Decimal(repr(UNSET_DOUBLE))


def preview_to_proto(
    state: OrderState, contract: common_pb2.Contract, account: str
) -> orders_pb2.PreviewOrderResponse:
    """The PreviewOrderResponse of TWS's what-if answer."""

    def impact(before: str, change: str, after: str) -> orders_pb2.MarginImpact:
        return orders_pb2.MarginImpact(
            before=common_pb2.Decimal(value=ib_amount(before)),
            change=common_pb2.Decimal(value=ib_amount(change)),
            after=common_pb2.Decimal(value=ib_amount(after)),
        )

    return orders_pb2.PreviewOrderResponse(
        contract=contract,
        account_id=account,
        initial_margin=impact(
            state.initMarginBefore, state.initMarginChange, state.initMarginAfter
        ),
        maintenance_margin=impact(
            state.maintMarginBefore, state.maintMarginChange, state.maintMarginAfter
        ),
        equity_with_loan=impact(
            state.equityWithLoanBefore, state.equityWithLoanChange, state.equityWithLoanAfter
        ),
        commission=common_pb2.Decimal(value=ib_amount(state.commission)),
        min_commission=common_pb2.Decimal(value=ib_amount(state.minCommission)),
        max_commission=common_pb2.Decimal(value=ib_amount(state.maxCommission)),
        commission_currency=state.commissionCurrency or "",
        warning_text=state.warningText or "",
    )


# ------------------------------------------------------------------- ListExecutions


def execution_to_proto(fill: Fill, order_ref: str = "") -> orders_pb2.Execution:
    """One execution with its order's ids; ``order_ref`` when the fill does not carry it."""
    execution = fill.execution
    return orders_pb2.Execution(
        fill=fill_to_proto(fill),
        client_order_id=execution.orderRef or order_ref,
        order_id=execution.orderId or 0,
        perm_id=execution.permId or 0,
        account_id=execution.acctNumber or "",
        contract=convert.contract_to_proto(fill.contract),
        side=SIDE_FROM_IB.get(_side_of(execution.side), orders_pb2.ORDER_SIDE_UNSPECIFIED),
    )


def _side_of(side: str) -> str:
    """Executions say "BOT" / "SLD"; orders say "BUY" / "SELL"."""
    side = (side or "").upper()
    return {"BOT": "BUY", "SLD": "SELL"}.get(side, side)


def execution_time(fill: Fill) -> datetime | None:
    return _fill_time(fill)
