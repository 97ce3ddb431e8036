"""Validation of OrderService requests: every problem of a request is collected as a
BadRequest field violation; a valid request becomes an ``OrderIntent`` or a
``Modification`` (orders/intent.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal

from ibgateway.v1 import orders_pb2
from ibgateway_server.api.validation import Violations, check_contract, parse_decimal
from ibgateway_server.orders.ib_terms import (
    LIMIT_TYPES,
    SIDE_TO_IB,
    STOP_TYPES,
    TIF_TO_IB,
    TYPE_TO_IB,
    type_name,
)
from ibgateway_server.orders.intent import Modification, OrderIntent

# The idempotency key: short, and safe to store in IB's orderRef and to show in logs.
CLIENT_ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,40}")

CLIENT_ORDER_ID_RULE = "1-40 characters from A-Z a-z 0-9 . _ : -"

_KNOWN_SIDES = frozenset(orders_pb2.OrderSide.values())

_KNOWN_TYPES = frozenset(orders_pb2.OrderType.values())

_KNOWN_TIFS = frozenset(orders_pb2.TimeInForce.values())

_KNOWN_FILTERS = frozenset(orders_pb2.OrderFilter.values())


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
    needs_limit = order_type in LIMIT_TYPES
    needs_stop = order_type in STOP_TYPES
    trail = order_type == "TRAIL"
    if needs_limit and not has["limit_price"]:
        v.add("limit_price", f"required for {type_name(order_type)} orders")
    if needs_stop and not has["stop_price"]:
        v.add("stop_price", f"required for {type_name(order_type)} orders")
    if trail:
        if has["trailing_amount"] and has["trailing_percent"]:
            v.add("trailing_percent", "give trailing_amount or trailing_percent, not both")
        elif not has["trailing_amount"] and not has["trailing_percent"]:
            v.add("trailing_amount", "required for TRAILING_STOP orders (or trailing_percent)")
    if has["limit_price"] and not needs_limit:
        v.add("limit_price", f"not used by {type_name(order_type)} orders")
    # TRAIL accepts stop_price as its initial stop (IB's trailStopPrice).
    if has["stop_price"] and not (needs_stop or trail):
        v.add("stop_price", f"not used by {type_name(order_type)} orders")
    for name in ("trailing_amount", "trailing_percent"):
        if has[name] and not trail:
            v.add(name, f"only used by TRAILING_STOP orders, not {type_name(order_type)}")


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
