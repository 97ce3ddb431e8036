"""The bounds of every field of every request, declared once, next to the proto names.

The request interceptor (``api/interceptors/request_check.py``) runs :func:`check_request` on every
decoded request before any servicer sees it. It walks the message by its descriptor, so a
field added to a proto is covered by the default of its type at once; :data:`RULES`
tightens single fields, keyed by the field's full proto name.

Defaults by type (what a field gets without a rule):

* string: at most :data:`DEFAULT_MAX_LENGTH` characters, no control characters (TWS's
  wire protocol separates fields with NUL; a newline has no place in a symbol);
* bytes: at most 1024 bytes; repeated: at most :data:`DEFAULT_MAX_ITEMS` items;
* integers: 0 .. 2147483646 (int32) or 0 .. 2^63-2 (int64, uint64); IB's "unset"
  sentinels (2147483647, 2^63-1) are never accepted as input;
* floating point: finite and within +/-1e15 (so never IB's unset 1.7976931348623157E308);
* enums: a value the proto defines (proto3 keeps unknown numbers; they are refused);
* ``Decimal``: empty (not set) or a plain ASCII decimal (``-12.5``; no exponent, no
  thousands separator, no non-ASCII digit), at most 32 characters, at most 10 digits
  after the point, within +/-1e12;
* ``Timestamp``: 1970-01-01 .. 2100-01-01 (UTC), valid nanos;
* ``Duration``: 0 .. 1 day, valid nanos.

Semantic checks that need several fields (a limit price is required for LIMIT orders, a
stream's heartbeat is at least 0.1 s) stay with the request's own validation
(``order_requests``, ``validation``); this pass makes sure that whatever reaches them is
bounded, finite and defined.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ibgateway_server.errors import invalid_argument, quote

DEFAULT_MAX_LENGTH = 64
DEFAULT_MAX_BYTES = 1024
DEFAULT_MAX_ITEMS = 100
MAX_DECIMAL_TEXT = 32
INT32_MAX_INPUT = 2**31 - 2  # 2**31 - 1 is IB's "unset" (Integer.MAX_VALUE)
INT64_MAX_INPUT = 2**63 - 2  # 2**63 - 1 is IB's "unset" (Long.MAX_VALUE)
MAX_FLOAT_INPUT = 1e15
MIN_TIMESTAMP = 0  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z
MAX_DURATION = 86_400

_PLAIN_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

DECIMAL_TYPE = "ibgateway.v1.Decimal"
TIMESTAMP_TYPE = "google.protobuf.Timestamp"
DURATION_TYPE = "google.protobuf.Duration"


@dataclass(frozen=True)
class Rule:
    """Bounds of one field; None means the type's default."""

    max_length: int | None = None  # strings (characters), bytes (bytes)
    max_items: int | None = None  # repeated fields
    minimum: Decimal | None = None  # numbers, Decimals, Timestamps/Durations (seconds)
    maximum: Decimal | None = None
    min_exclusive: bool = False  # e.g. a quantity must be greater than 0
    max_exclusive: bool = False
    max_scale: int | None = None  # Decimals: digits after the point


def _d(text: str) -> Decimal:
    return Decimal(text)


_QUANTITY = Rule(minimum=_d("0"), min_exclusive=True, maximum=_d("1000000000"), max_scale=8)
_PRICE = Rule(minimum=_d("-1000000000"), maximum=_d("1000000000"), max_scale=8)
_PERCENT = Rule(
    minimum=_d("0"), min_exclusive=True, maximum=_d("100"), max_exclusive=True, max_scale=4
)
_ACCOUNT = Rule(max_length=32)
_IB_ID = Rule(minimum=_d("0"), maximum=Decimal(INT32_MAX_INPUT))  # IB ids are Java ints

# Field full name → its rule. A key must name a real field (a unit test checks it).
RULES: dict[str, Rule] = {
    # common.Contract (wherever a request carries one)
    "ibgateway.v1.Contract.con_id": _IB_ID,
    "ibgateway.v1.Contract.symbol": Rule(max_length=32),
    "ibgateway.v1.Contract.exchange": Rule(max_length=32),
    "ibgateway.v1.Contract.primary_exchange": Rule(max_length=32),
    "ibgateway.v1.Contract.currency": Rule(max_length=8),
    "ibgateway.v1.Contract.last_trade_date_or_contract_month": Rule(max_length=24),
    "ibgateway.v1.Contract.strike": Rule(minimum=_d("0"), maximum=_d("10000000"), max_scale=6),
    "ibgateway.v1.Contract.multiplier": Rule(max_length=16),
    "ibgateway.v1.Contract.local_symbol": Rule(max_length=32),
    "ibgateway.v1.Contract.trading_class": Rule(max_length=32),
    # ConnectionService
    "ibgateway.v1.ConnectRequest.host": Rule(max_length=253),
    "ibgateway.v1.ConnectRequest.port": Rule(minimum=_d("0"), maximum=_d("65535")),
    "ibgateway.v1.ConnectRequest.client_id": _IB_ID,
    "ibgateway.v1.TestConnectionRequest.sample_symbol": Rule(max_length=32),
    "ibgateway.v1.WatchConnectionStatusRequest.heartbeat_interval": Rule(maximum=_d("3600")),
    # AccountService, PortfolioService
    "ibgateway.v1.GetAccountSummaryRequest.account_id": _ACCOUNT,
    "ibgateway.v1.GetAccountSummaryRequest.tags": Rule(max_length=64, max_items=64),
    "ibgateway.v1.GetBalanceRequest.account_id": _ACCOUNT,
    "ibgateway.v1.GetPnLRequest.account_id": _ACCOUNT,
    "ibgateway.v1.ListPositionsRequest.account_id": _ACCOUNT,
    # MarketDataService
    "ibgateway.v1.GetQuotesRequest.contracts": Rule(max_items=1000),
    "ibgateway.v1.StreamQuotesRequest.contracts": Rule(max_items=1000),
    "ibgateway.v1.StreamQuotesRequest.heartbeat_interval": Rule(maximum=_d("3600")),
    "ibgateway.v1.SearchContractsRequest.pattern": Rule(max_length=64),
    "ibgateway.v1.StreamDepthRequest.rows": Rule(minimum=_d("0"), maximum=_d("20")),
    "ibgateway.v1.StreamDepthRequest.heartbeat_interval": Rule(maximum=_d("3600")),
    "ibgateway.v1.GetOptionChainRequest.exchange": Rule(max_length=32),
    "ibgateway.v1.GetOptionChainRequest.trading_class": Rule(max_length=32),
    "ibgateway.v1.GetOptionChainRequest.min_expiry": Rule(max_length=8),
    "ibgateway.v1.GetOptionChainRequest.max_expiry": Rule(max_length=8),
    "ibgateway.v1.GetOptionChainRequest.min_strike": Rule(
        minimum=_d("0"), maximum=_d("1000000000"), max_scale=8
    ),
    "ibgateway.v1.GetOptionChainRequest.max_strike": Rule(
        minimum=_d("0"), maximum=_d("1000000000"), max_scale=8
    ),
    "ibgateway.v1.GetOptionChainRequest.strikes_around_price": Rule(
        minimum=_d("0"), maximum=_d("500")
    ),
    # OrderService
    "ibgateway.v1.PlaceOrderRequest.client_order_id": Rule(max_length=40),
    "ibgateway.v1.PlaceOrderRequest.account_id": _ACCOUNT,
    "ibgateway.v1.PlaceOrderRequest.quantity": _QUANTITY,
    "ibgateway.v1.PlaceOrderRequest.limit_price": _PRICE,
    "ibgateway.v1.PlaceOrderRequest.stop_price": _PRICE,
    "ibgateway.v1.PlaceOrderRequest.trailing_amount": _PRICE,
    "ibgateway.v1.PlaceOrderRequest.trailing_percent": _PERCENT,
    "ibgateway.v1.PlaceOrderRequest.limit_offset": _PRICE,
    "ibgateway.v1.PlaceOrderRequest.peg_offset": _PRICE,
    "ibgateway.v1.PlaceOrderRequest.oca_group": Rule(max_length=40),
    "ibgateway.v1.PlaceBracketOrderRequest.client_order_id": Rule(max_length=37),
    "ibgateway.v1.PlaceBracketOrderRequest.account_id": _ACCOUNT,
    "ibgateway.v1.PlaceBracketOrderRequest.quantity": _QUANTITY,
    "ibgateway.v1.BracketLeg.limit_price": _PRICE,
    "ibgateway.v1.BracketLeg.stop_price": _PRICE,
    "ibgateway.v1.BracketLeg.trailing_amount": _PRICE,
    "ibgateway.v1.BracketLeg.trailing_percent": _PERCENT,
    "ibgateway.v1.BracketLeg.limit_offset": _PRICE,
    "ibgateway.v1.BracketLeg.peg_offset": _PRICE,
    "ibgateway.v1.PreviewOrderRequest.limit_offset": _PRICE,
    "ibgateway.v1.PreviewOrderRequest.peg_offset": _PRICE,
    "ibgateway.v1.PreviewOrderRequest.account_id": _ACCOUNT,
    "ibgateway.v1.PreviewOrderRequest.quantity": _QUANTITY,
    "ibgateway.v1.PreviewOrderRequest.limit_price": _PRICE,
    "ibgateway.v1.PreviewOrderRequest.stop_price": _PRICE,
    "ibgateway.v1.PreviewOrderRequest.trailing_amount": _PRICE,
    "ibgateway.v1.PreviewOrderRequest.trailing_percent": _PERCENT,
    "ibgateway.v1.ModifyOrderRequest.quantity": _QUANTITY,
    "ibgateway.v1.ModifyOrderRequest.limit_price": _PRICE,
    "ibgateway.v1.ModifyOrderRequest.stop_price": _PRICE,
    "ibgateway.v1.ModifyOrderRequest.trailing_amount": _PRICE,
    "ibgateway.v1.ModifyOrderRequest.trailing_percent": _PERCENT,
    "ibgateway.v1.ModifyOrderRequest.limit_offset": _PRICE,
    "ibgateway.v1.ModifyOrderRequest.peg_offset": _PRICE,
    "ibgateway.v1.OrderKey.client_order_id": Rule(max_length=40),
    "ibgateway.v1.OrderKey.order_id": _IB_ID,
    "ibgateway.v1.ListOrdersRequest.account_id": _ACCOUNT,
    "ibgateway.v1.CancelAllOrdersRequest.account_id": _ACCOUNT,
    "ibgateway.v1.ListExecutionsRequest.account_id": _ACCOUNT,
    "ibgateway.v1.ListExecutionsRequest.symbol": Rule(max_length=32),
    "ibgateway.v1.StreamOrderEventsRequest.epoch": Rule(max_length=100),
    "ibgateway.v1.StreamOrderEventsRequest.account_id": _ACCOUNT,
    "ibgateway.v1.StreamOrderEventsRequest.heartbeat_interval": Rule(maximum=_d("3600")),
}

_NO_RULE = Rule()
_INT32_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})


def rule_for(field: FieldDescriptor) -> Rule:
    return RULES.get(field.full_name, _NO_RULE)


def check_request(message: Message) -> None:
    """INVALID_ARGUMENT with a field violation per out-of-bounds field, else nothing."""
    violations = list(_walk(message, ""))
    if violations:
        raise invalid_argument(violations)


def request_violations(message: Message) -> list[tuple[str, str]]:
    """Every (field path, description) :func:`check_request` would report."""
    return list(_walk(message, ""))


def _walk(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        rule = rule_for(field)
        if field.is_repeated:
            limit = rule.max_items or DEFAULT_MAX_ITEMS
            if len(value) > limit:
                yield path, f"at most {limit} items (got {len(value)})"
                continue
            if _is_map(field):
                continue  # no request has a map; its size is bounded above
            for index, item in enumerate(value):
                yield from _check_value(field, rule, item, f"{path}[{index}]")
        else:
            yield from _check_value(field, rule, value, path)


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _check_value(
    field: FieldDescriptor, rule: Rule, value: object, path: str
) -> Iterator[tuple[str, str]]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert isinstance(value, Message) and field.message_type is not None
        name = field.message_type.full_name
        if name == DECIMAL_TYPE:
            yield from _check_decimal(rule, value, path)
        elif name == TIMESTAMP_TYPE:
            yield from _check_time(
                rule, value, path, Decimal(MIN_TIMESTAMP), Decimal(MAX_TIMESTAMP), "timestamp"
            )
        elif name == DURATION_TYPE:
            yield from _check_time(rule, value, path, Decimal(0), Decimal(MAX_DURATION), "duration")
        else:
            yield from _walk(value, f"{path}.")
    elif kind == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        yield from _check_text(rule, value, path)
    elif kind == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes)
        limit = rule.max_length or DEFAULT_MAX_BYTES
        if len(value) > limit:
            yield path, f"at most {limit} bytes (got {len(value)})"
    elif kind == FieldDescriptor.TYPE_ENUM:
        assert isinstance(value, int) and field.enum_type is not None
        if field.enum_type.values_by_number.get(value) is None:
            yield path, f"unknown {field.enum_type.name} value {value}"
    elif kind in _INT32_TYPES or kind in _INT64_TYPES:
        assert isinstance(value, int)
        top = INT32_MAX_INPUT if kind in _INT32_TYPES else INT64_MAX_INPUT
        yield from _check_bounds(rule, Decimal(value), path, Decimal(0), Decimal(top), str(value))
    elif kind in _FLOAT_TYPES:
        assert isinstance(value, float)
        if not math.isfinite(value):
            yield path, "must be a finite number"
        else:
            edge = Decimal(MAX_FLOAT_INPUT)
            yield from _check_bounds(rule, Decimal(value), path, -edge, edge, f"{value:g}")


def _check_text(rule: Rule, value: str, path: str) -> Iterator[tuple[str, str]]:
    limit = rule.max_length or DEFAULT_MAX_LENGTH
    if len(value) > limit:
        yield path, f"at most {limit} characters (got {len(value)}, starting {quote(value)})"
    elif _CONTROL.search(value):
        yield path, f"must not contain control characters (got {quote(value)})"


def _check_decimal(rule: Rule, value: Message, path: str) -> Iterator[tuple[str, str]]:
    text: str = value.value  # type: ignore[attr-defined]
    if not text:
        return  # not set
    stripped = text.strip(" ")
    if len(text) > MAX_DECIMAL_TEXT:
        yield path, f"at most {MAX_DECIMAL_TEXT} characters (got {len(text)})"
        return
    if not _PLAIN_DECIMAL.fullmatch(stripped):
        yield path, f'{quote(text)} is not a plain decimal number like "150.25"'
        return
    try:
        number = Decimal(stripped)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        yield path, f"{quote(text)} is not a decimal number"
        return
    scale = rule.max_scale if rule.max_scale is not None else 10
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > scale:
        yield path, f"at most {scale} digits after the decimal point (got {quote(text)})"
        return
    edge = Decimal("1000000000000")
    yield from _check_bounds(rule, number, path, -edge, edge, quote(text))


def _check_time(
    rule: Rule, value: Message, path: str, low: Decimal, high: Decimal, what: str
) -> Iterator[tuple[str, str]]:
    seconds: int = value.seconds  # type: ignore[attr-defined]
    nanos: int = value.nanos  # type: ignore[attr-defined]
    if not 0 <= nanos <= 999_999_999:
        yield path, f"nanos must be 0 to 999999999 (got {nanos})"
        return
    total = Decimal(seconds) + Decimal(nanos) / Decimal(1_000_000_000)
    yield from _check_bounds(rule, total, path, low, high, f"{total:f}s", unit=f"s ({what})")


def _check_bounds(
    rule: Rule,
    number: Decimal,
    path: str,
    low: Decimal,
    high: Decimal,
    shown: str,
    unit: str = "",
) -> Iterator[tuple[str, str]]:
    lo = rule.minimum if rule.minimum is not None else low
    hi = rule.maximum if rule.maximum is not None else high
    lo_ok = number > lo if rule.min_exclusive else number >= lo
    hi_ok = number < hi if rule.max_exclusive else number <= hi
    if lo_ok and hi_ok:
        return
    left = "(" if rule.min_exclusive else "["
    right = ")" if rule.max_exclusive else "]"
    yield path, f"must be within {left}{lo:f}, {hi:f}{right}{unit} (got {shown})"


def request_types(descriptor: Descriptor) -> Iterator[Descriptor]:
    """Every message type reachable from ``descriptor`` (itself included), once."""
    seen: set[str] = set()
    todo = [descriptor]
    while todo:
        current = todo.pop()
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        yield current
        for field in current.fields:
            if field.message_type is not None:
                todo.append(field.message_type)
