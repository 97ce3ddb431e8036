"""Validation of OrderService requests: every problem of a request is collected as a
BadRequest field violation; a valid request becomes an ``OrderIntent`` or a
``Modification`` (orders/intent.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.api.validation import Violations, check_contract, parse_decimal
from ibgateway_server.orders.brackets import EXIT_OCA_SUFFIX, EXIT_OCA_TYPE, BracketIntent
from ibgateway_server.orders.ib_terms import (
    CAPPED_TYPES,
    CLOSE_TYPES,
    LIMIT_TYPES,
    OCA_TYPE_TO_IB,
    SIDE_TO_IB,
    STOP_LOSS_SUFFIX,
    STOP_TYPES,
    TAKE_PROFIT_SUFFIX,
    TIF_TO_IB,
    TRAILING_TYPES,
    TRIGGERED_TYPES,
    TYPE_TO_IB,
    bracket_of,
    type_name,
)
from ibgateway_server.orders.intent import Modification, OrderIntent

# The idempotency key: short, and safe to store in IB's orderRef and to show in logs.
CLIENT_ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,40}")

CLIENT_ORDER_ID_RULE = "1-40 characters from A-Z a-z 0-9 . _ : -"


def check_client_order_id(value: str, field: str, violations: Violations) -> bool:
    """The idempotency key's format (required)."""
    if not value:
        violations.add(field, f"required: {CLIENT_ORDER_ID_RULE}")
        return False
    if not CLIENT_ORDER_ID_PATTERN.fullmatch(value):
        violations.add(field, f"invalid {value[:60]!r}: must be {CLIENT_ORDER_ID_RULE}")
        return False
    return True


# The fields PlaceOrderRequest, PreviewOrderRequest and BracketLeg share.
Terms = orders_pb2.PlaceOrderRequest | orders_pb2.PreviewOrderRequest | orders_pb2.BracketLeg

_PRICE_FIELDS = (
    "limit_price",
    "stop_price",
    "trailing_amount",
    "trailing_percent",
    "limit_offset",
    "peg_offset",
)


def _given(request: Terms, name: str) -> bool:
    """Whether a Decimal field carries a value ("" means not set, as in common.proto)."""
    return request.HasField(name) and bool(getattr(request, name).value.strip())  # type: ignore[arg-type]


@dataclass(frozen=True)
class OrderTerms:
    """The validated type, prices and time in force of one order (or bracket leg)."""

    order_type: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    trailing_amount: Decimal | None
    trailing_percent: Decimal | None
    limit_offset: Decimal | None
    peg_offset: Decimal | None
    tif: str
    good_till: datetime | None
    outside_rth: bool


def check_terms(
    request: Terms,
    v: Violations,
    prefix: str = "",
    *,
    default_type: int = orders_pb2.ORDER_TYPE_UNSPECIFIED,
    default_tif: str = "DAY",
    now: datetime | None = None,
) -> OrderTerms:
    """Order type, prices, time in force and GTD expiry, each checked against the type
    (IB's rules: which prices a type needs or ignores, which TIFs it allows).

    Unknown enum numbers, an out-of-range trailing_percent and an invalid timestamp never
    get here: the request interceptor refuses them first (api/request_rules.py).
    """
    kind = orders_pb2.OrderType.ValueType(request.order_type or default_type)
    order_type = TYPE_TO_IB.get(kind, "")
    if kind == orders_pb2.ORDER_TYPE_UNSPECIFIED:
        v.add(
            f"{prefix}order_type",
            "required: one of " + ", ".join(_enum_names(orders_pb2.OrderType)),
        )
    tif = default_tif
    if request.time_in_force != orders_pb2.TIME_IN_FORCE_UNSPECIFIED:
        tif = TIF_TO_IB[request.time_in_force]
    prices = {
        name: parse_decimal(getattr(request, name), f"{prefix}{name}", v, positive=True)
        for name in _PRICE_FIELDS
        if name != "peg_offset"
    }
    prices["peg_offset"] = parse_decimal(
        request.peg_offset, f"{prefix}peg_offset", v, non_negative=True
    )
    good_till = _check_good_till(request, tif, v, prefix, now or datetime.now(UTC))
    if order_type:
        _check_prices_for_type(request, order_type, v, prefix)
        _check_tif_for_type(order_type, tif, v, prefix)
    return OrderTerms(
        order_type=order_type,
        limit_price=prices["limit_price"],
        stop_price=prices["stop_price"],
        trailing_amount=prices["trailing_amount"],
        trailing_percent=prices["trailing_percent"],
        limit_offset=prices["limit_offset"],
        peg_offset=prices["peg_offset"],
        tif=tif,
        good_till=good_till,
        outside_rth=request.outside_rth,
    )


def _check_good_till(
    request: Terms | orders_pb2.ModifyOrderRequest,
    tif: str,
    v: Violations,
    prefix: str,
    now: datetime,
) -> datetime | None:
    if not request.HasField("good_till_time"):
        if tif == "GTD":
            v.add(f"{prefix}good_till_time", "required for TIME_IN_FORCE_GTD")
        return None
    if tif != "GTD":
        v.add(f"{prefix}good_till_time", "only used with TIME_IN_FORCE_GTD")
        return None
    when = request.good_till_time.ToDatetime(UTC)  # bounded by the request rules
    if when <= now:
        v.add(f"{prefix}good_till_time", f"must be in the future (got {when:%Y-%m-%dT%H:%M:%SZ})")
        return None
    return when.replace(microsecond=0)


def _check_prices_for_type(request: Terms, order_type: str, v: Violations, prefix: str) -> None:
    """Required prices present, and no price that the order type would silently ignore."""
    has = {name: _given(request, name) for name in _PRICE_FIELDS}
    name_of = type_name(order_type)
    needs_limit = order_type in LIMIT_TYPES
    may_limit = needs_limit or order_type in CAPPED_TYPES
    needs_stop = order_type in STOP_TYPES
    trail = order_type in TRAILING_TYPES
    if needs_limit and not has["limit_price"]:
        v.add(f"{prefix}limit_price", f"required for {name_of} orders")
    if needs_stop and not has["stop_price"]:
        v.add(f"{prefix}stop_price", f"required for {name_of} orders")
    if trail:
        if has["trailing_amount"] and has["trailing_percent"]:
            v.add(f"{prefix}trailing_percent", "give trailing_amount or trailing_percent, not both")
        elif not has["trailing_amount"] and not has["trailing_percent"]:
            v.add(
                f"{prefix}trailing_amount", f"required for {name_of} orders (or trailing_percent)"
            )
    if order_type == "TRAIL LIMIT" and not has["limit_offset"]:
        v.add(f"{prefix}limit_offset", f"required for {name_of} orders")
    if has["limit_price"] and not may_limit:
        v.add(f"{prefix}limit_price", f"not used by {name_of} orders")
    # Trailing types accept stop_price as their initial stop (IB's trailStopPrice).
    if has["stop_price"] and not (needs_stop or trail):
        v.add(f"{prefix}stop_price", f"not used by {name_of} orders")
    for name in ("trailing_amount", "trailing_percent"):
        if has[name] and not trail:
            v.add(f"{prefix}{name}", f"only used by trailing orders, not {name_of}")
    if has["limit_offset"] and order_type != "TRAIL LIMIT":
        v.add(f"{prefix}limit_offset", f"only used by TRAILING_STOP_LIMIT orders, not {name_of}")
    if has["peg_offset"] and order_type != "REL":
        v.add(f"{prefix}peg_offset", f"only used by RELATIVE orders, not {name_of}")


def _check_tif_for_type(order_type: str, tif: str, v: Violations, prefix: str) -> None:
    """IB's time-in-force rules per order type (TWS refuses the rest with code 111)."""
    name_of = type_name(order_type)
    field = f"{prefix}time_in_force"
    if order_type in CLOSE_TYPES and tif != "DAY":
        v.add(field, f"{name_of} orders are DAY orders (the closing auction)")
    elif tif == "OPG" and order_type not in ("MKT", "LMT"):
        v.add(field, "TIME_IN_FORCE_OPG is for MARKET and LIMIT orders only")
    elif tif in ("IOC", "FOK") and (order_type in TRIGGERED_TYPES or order_type in CLOSE_TYPES):
        v.add(field, f"{tif} does not apply to {name_of} orders, which wait for a trigger")


def check_oca(group: str, oca_type: int, v: Violations, prefix: str = "") -> tuple[str, int]:
    """An OCA group name and type (IB's 1-3; 0 when unspecified)."""
    if group and not CLIENT_ORDER_ID_PATTERN.fullmatch(group):
        v.add(f"{prefix}oca_group", f"invalid {group[:60]!r}: must be {CLIENT_ORDER_ID_RULE}")
    if oca_type != orders_pb2.OCA_TYPE_UNSPECIFIED and not group:
        v.add(f"{prefix}oca_type", "only used with oca_group")
    return group, OCA_TYPE_TO_IB.get(orders_pb2.OcaType.ValueType(oca_type), 0)


def validate_place_order(request: orders_pb2.PlaceOrderRequest) -> OrderIntent:
    """The request as an OrderIntent; INVALID_ARGUMENT listing every violation otherwise."""
    v = Violations()
    if check_client_order_id(request.client_order_id, "client_order_id", v):
        if bracket_of(request.client_order_id)[1] != orders_pb2.BRACKET_ROLE_ENTRY:
            v.add(
                "client_order_id",
                f"keys ending in {TAKE_PROFIT_SUFFIX!r} or {STOP_LOSS_SUFFIX!r} are reserved "
                "for the exits of brackets (PlaceBracketOrder)",
            )
    check_contract(request.contract if request.HasField("contract") else None, "contract", v)
    _check_side(request.side, v)
    quantity = parse_decimal(request.quantity, "quantity", v, required=True, positive=True)
    terms = check_terms(request, v)
    oca_group, oca_type = check_oca(request.oca_group, request.oca_type, v)
    v.raise_if_any()
    assert quantity is not None
    return _intent(
        request.client_order_id,
        request.contract,
        SIDE_TO_IB[request.side],
        quantity,
        terms,
        account=request.account_id.strip(),
        oca_group=oca_group,
        oca_type=oca_type,
    )


def _check_side(side: int, v: Violations, field: str = "side") -> None:
    if side == orders_pb2.ORDER_SIDE_UNSPECIFIED:
        v.add(field, "required: ORDER_SIDE_BUY or ORDER_SIDE_SELL")


def _intent(
    key: str,
    contract: common_pb2.Contract,
    action: str,
    quantity: Decimal,
    terms: OrderTerms,
    *,
    account: str,
    oca_group: str = "",
    oca_type: int = 0,
) -> OrderIntent:
    return OrderIntent(
        client_order_id=key,
        contract=contract,
        action=action,
        order_type=terms.order_type,
        quantity=quantity,
        limit_price=terms.limit_price,
        stop_price=terms.stop_price,
        trailing_amount=terms.trailing_amount,
        trailing_percent=terms.trailing_percent,
        tif=terms.tif,
        outside_rth=terms.outside_rth,
        account=account,
        good_till=terms.good_till,
        limit_offset=terms.limit_offset,
        peg_offset=terms.peg_offset,
        oca_group=oca_group,
        oca_type=oca_type,
    )


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


def _parse_prices(
    request: orders_pb2.PlaceOrderRequest | orders_pb2.ModifyOrderRequest, v: Violations
) -> tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None]:
    """Limit, stop, trailing amount and trailing percent, each positive when given."""
    limit = parse_decimal(request.limit_price, "limit_price", v, positive=True)
    stop = parse_decimal(request.stop_price, "stop_price", v, positive=True)
    amount = parse_decimal(request.trailing_amount, "trailing_amount", v, positive=True)
    percent = parse_decimal(request.trailing_percent, "trailing_percent", v, positive=True)
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
    if request.time_in_force != orders_pb2.TIME_IN_FORCE_UNSPECIFIED:
        tif = TIF_TO_IB[request.time_in_force]
        if tif in ("OPG", "FOK"):
            # Only meaningful for a new order: cancel and place a new one instead.
            v.add("time_in_force", f"cannot change a working order to {tif}")
        elif tif == "GTD" and not request.HasField("good_till_time"):
            v.add("good_till_time", "required to change an order to TIME_IN_FORCE_GTD")
    outside_rth = request.outside_rth if request.HasField("outside_rth") else None
    limit_offset = parse_decimal(request.limit_offset, "limit_offset", v, positive=True)
    peg_offset = parse_decimal(request.peg_offset, "peg_offset", v, non_negative=True)
    good_till = (
        _check_good_till(request, "GTD", v, "", datetime.now(UTC))
        if request.HasField("good_till_time")
        else None
    )
    changes = (
        quantity,
        limit,
        stop,
        amount,
        percent,
        tif,
        outside_rth,
        limit_offset,
        peg_offset,
        good_till,
    )
    if key != "" and all(c is None for c in changes):
        v.add("quantity", "nothing to change: set at least one field besides order")
    v.raise_if_any()
    return Modification(
        key,
        quantity,
        limit,
        stop,
        amount,
        percent,
        tif,
        outside_rth,
        limit_offset=limit_offset,
        peg_offset=peg_offset,
        good_till=good_till,
    )


def validate_preview_order(request: orders_pb2.PreviewOrderRequest) -> OrderIntent:
    """PlaceOrder's validation, minus the idempotency key (a preview places nothing)."""
    v = Violations()
    check_contract(request.contract if request.HasField("contract") else None, "contract", v)
    _check_side(request.side, v)
    quantity = parse_decimal(request.quantity, "quantity", v, required=True, positive=True)
    terms = check_terms(request, v)
    # A bracket's exits are checked as PlaceBracketOrder checks them; the what-if is the
    # entry's (the exits only close what it opens).
    exit_tif = terms.tif if terms.tif not in ("IOC", "FOK", "OPG") else "GTC"
    if request.HasField("take_profit"):
        _check_take_profit(request.take_profit, v, exit_tif)
    if request.HasField("stop_loss"):
        _check_stop_loss(request.stop_loss, v, exit_tif)
    v.raise_if_any()
    assert quantity is not None
    return _intent(
        "",
        request.contract,
        SIDE_TO_IB[request.side],
        quantity,
        terms,
        account=request.account_id.strip(),
    )


# --------------------------------------------------------------------------- brackets

# The bracket's key leaves room for the exits' suffixes within the 40 characters.
BRACKET_KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,37}")

# Order types an exit may have (IB's usual bracket exits).
_STOP_LOSS_TYPES = frozenset({"STP", "STP LMT", "TRAIL", "TRAIL LIMIT"})


def _exit(
    key: str,
    terms: OrderTerms | None,
    request: orders_pb2.PlaceBracketOrderRequest,
    action: str,
    quantity: Decimal,
    account: str,
) -> OrderIntent | None:
    """An exit of a bracket: in the bracket's OCA group (see orders/brackets.py)."""
    if terms is None:
        return None
    group = bracket_of(key)[0] + EXIT_OCA_SUFFIX
    return _intent(
        key,
        request.contract,
        action,
        quantity,
        terms,
        account=account,
        oca_group=group,
        oca_type=EXIT_OCA_TYPE,
    )


def _check_take_profit(leg: orders_pb2.BracketLeg, v: Violations, tif: str) -> OrderTerms:
    terms = check_terms(
        leg, v, "take_profit.", default_type=orders_pb2.ORDER_TYPE_LIMIT, default_tif=tif
    )
    if terms.order_type and terms.order_type != "LMT":
        v.add("take_profit.order_type", "a take-profit is a LIMIT order")
    return terms


def _check_stop_loss(leg: orders_pb2.BracketLeg, v: Violations, tif: str) -> OrderTerms:
    terms = check_terms(
        leg, v, "stop_loss.", default_type=orders_pb2.ORDER_TYPE_STOP, default_tif=tif
    )
    if terms.order_type and terms.order_type not in _STOP_LOSS_TYPES:
        v.add(
            "stop_loss.order_type",
            "a stop-loss is a STOP, STOP_LIMIT, TRAILING_STOP or TRAILING_STOP_LIMIT order",
        )
    return terms


def validate_place_bracket(request: orders_pb2.PlaceBracketOrderRequest) -> BracketIntent:
    """The request as a BracketIntent; INVALID_ARGUMENT listing every violation otherwise."""
    v = Violations()
    key = request.client_order_id
    if not key:
        v.add("client_order_id", "required: 1-37 characters from A-Z a-z 0-9 . _ : -")
    elif not BRACKET_KEY_PATTERN.fullmatch(key):
        v.add(
            "client_order_id",
            f"invalid {key[:60]!r}: must be 1-37 characters from A-Z a-z 0-9 . _ : - "
            "(the exits add a 3-character suffix)",
        )
    elif bracket_of(key)[1] != orders_pb2.BRACKET_ROLE_ENTRY:
        v.add("client_order_id", "must not end in ':tp' or ':sl' (the exits' suffixes)")
    check_contract(request.contract if request.HasField("contract") else None, "contract", v)
    _check_side(request.side, v)
    quantity = parse_decimal(request.quantity, "quantity", v, required=True, positive=True)
    account = request.account_id.strip()
    if not request.HasField("entry"):
        v.add("entry", "required: the entry order's terms")
    entry = check_terms(request.entry, v, "entry.")
    exit_tif = entry.tif if entry.tif not in ("IOC", "FOK", "OPG") else "GTC"
    take = (
        _check_take_profit(request.take_profit, v, exit_tif)
        if request.HasField("take_profit")
        else None
    )
    stop = (
        _check_stop_loss(request.stop_loss, v, exit_tif) if request.HasField("stop_loss") else None
    )
    v.raise_if_any()
    assert quantity is not None
    side = SIDE_TO_IB[request.side]
    other = "SELL" if side == "BUY" else "BUY"
    return BracketIntent(
        client_order_id=key,
        entry=_intent(key, request.contract, side, quantity, entry, account=account),
        take_profit=_exit(key + TAKE_PROFIT_SUFFIX, take, request, other, quantity, account),
        stop_loss=_exit(key + STOP_LOSS_SUFFIX, stop, request, other, quantity, account),
    )
