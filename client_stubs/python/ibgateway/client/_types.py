"""Plain typed values with ``decimal.Decimal`` fields, and the conversions to and from the
API's messages. Each value keeps the message it came from in ``.proto`` for anything the
dataclass does not carry."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from ibgateway.v1 import common_pb2, market_data_pb2, orders_pb2, portfolio_pb2

#: a contract: a symbol ("AAPL" = US stock, SMART, USD), a con_id, or a full Contract
ContractLike: TypeAlias = str | int | common_pb2.Contract
#: an exact number; floats are refused (150.1 is not exactly 150.1 as a float)
DecimalLike: TypeAlias = Decimal | int | str


def to_decimal(value: common_pb2.Decimal) -> Decimal | None:
    """An API decimal as ``Decimal``; ``None`` when it is not set (e.g. no bid yet)."""
    return Decimal(value.value) if value.value else None


def decimal_msg(value: DecimalLike | None) -> common_pb2.Decimal | None:
    """``Decimal("150.25")`` → ``Decimal{value: "150.25"}``."""
    if value is None:
        return None
    if isinstance(value, float | bool):
        raise TypeError(
            f"use decimal.Decimal or str for exact prices and quantities, not {type(value)}"
        )
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return common_pb2.Decimal(value=format(number, "f"))


def contract_msg(contract: ContractLike) -> common_pb2.Contract:
    if isinstance(contract, common_pb2.Contract):
        return contract
    if isinstance(contract, int) and not isinstance(contract, bool):
        return common_pb2.Contract(con_id=contract)
    if isinstance(contract, str):
        return common_pb2.Contract(symbol=contract)
    raise TypeError(f"a contract is a symbol, a con_id or a Contract, not {type(contract)}")


def _time(value: object) -> dt.datetime | None:
    seconds = getattr(value, "seconds", 0)
    nanos = getattr(value, "nanos", 0)
    if not seconds and not nanos:
        return None
    return dt.datetime.fromtimestamp(seconds + nanos / 1e9, tz=dt.UTC)


@dataclass(frozen=True)
class Quote:
    """A quote; prices and sizes are exact, ``None`` when IB has not sent them."""

    symbol: str
    con_id: int
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    last_size: Decimal | None
    volume: Decimal | None
    tick_time: dt.datetime | None
    proto: market_data_pb2.Quote

    @classmethod
    def from_proto(cls, q: market_data_pb2.Quote) -> Quote:
        return cls(
            symbol=q.contract.local_symbol or q.contract.symbol,
            con_id=q.contract.con_id,
            bid=to_decimal(q.bid),
            ask=to_decimal(q.ask),
            last=to_decimal(q.last),
            bid_size=to_decimal(q.bid_size),
            ask_size=to_decimal(q.ask_size),
            last_size=to_decimal(q.last_size),
            volume=to_decimal(q.volume),
            tick_time=_time(q.tick_time),
            proto=q,
        )


@dataclass(frozen=True)
class Fill:
    """One execution of an order."""

    execution_id: str
    quantity: Decimal
    price: Decimal
    commission: Decimal | None
    execution_time: dt.datetime | None
    proto: orders_pb2.Fill

    @classmethod
    def from_proto(cls, f: orders_pb2.Fill) -> Fill:
        return cls(
            execution_id=f.execution_id,
            quantity=to_decimal(f.quantity) or Decimal(0),
            price=to_decimal(f.price) or Decimal(0),
            commission=to_decimal(f.commission),
            execution_time=_time(f.execution_time),
            proto=f,
        )


@dataclass(frozen=True)
class Order:
    """An order as the gateway knows it. ``side``, ``order_type`` and ``status`` are the
    enum names without their prefix (``"BUY"``, ``"LIMIT"``, ``"SUBMITTED"``)."""

    client_order_id: str
    order_id: int
    perm_id: int
    account_id: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    status: str
    filled_quantity: Decimal
    remaining_quantity: Decimal
    average_fill_price: Decimal | None
    fills: tuple[Fill, ...]
    proto: orders_pb2.Order
    #: PlaceOrder only: the key was already known, this is the order placed before
    replayed: bool = False

    @property
    def done(self) -> bool:
        """Filled, cancelled or inactive: nothing more will happen to it."""
        return self.status in ("FILLED", "CANCELLED", "INACTIVE")

    @classmethod
    def from_proto(cls, o: orders_pb2.Order, *, replayed: bool = False) -> Order:
        return cls(
            client_order_id=o.client_order_id,
            order_id=o.order_id,
            perm_id=o.perm_id,
            account_id=o.account_id,
            symbol=o.contract.local_symbol or o.contract.symbol,
            side=_enum_name(orders_pb2.OrderSide, o.side, "ORDER_SIDE_"),
            order_type=_enum_name(orders_pb2.OrderType, o.order_type, "ORDER_TYPE_"),
            quantity=to_decimal(o.quantity) or Decimal(0),
            limit_price=to_decimal(o.limit_price),
            stop_price=to_decimal(o.stop_price),
            status=_enum_name(orders_pb2.OrderStatus, o.status, "ORDER_STATUS_"),
            filled_quantity=to_decimal(o.filled_quantity) or Decimal(0),
            remaining_quantity=to_decimal(o.remaining_quantity) or Decimal(0),
            average_fill_price=to_decimal(o.average_fill_price),
            fills=tuple(Fill.from_proto(f) for f in o.fills),
            proto=o,
            replayed=replayed,
        )


@dataclass(frozen=True)
class OrderEvent:
    """One order event; ``type`` without its prefix (``"FILLED"``, ``"STATUS_CHANGED"``)."""

    sequence: int
    epoch: str
    type: str
    order: Order
    fill: Fill | None
    message: str
    ib_code: int
    event_time: dt.datetime | None
    proto: orders_pb2.OrderEvent

    @classmethod
    def from_proto(cls, e: orders_pb2.OrderEvent) -> OrderEvent:
        return cls(
            sequence=e.sequence,
            epoch=e.epoch,
            type=_enum_name(orders_pb2.OrderEventType, e.type, "ORDER_EVENT_TYPE_"),
            order=Order.from_proto(e.order),
            fill=Fill.from_proto(e.fill) if e.HasField("fill") else None,
            message=e.message,
            ib_code=e.ib_code,
            event_time=_time(e.event_time),
            proto=e,
        )


@dataclass(frozen=True)
class Position:
    """A position with TWS's valuation (``None`` where TWS has not valued it yet)."""

    account_id: str
    symbol: str
    con_id: int
    quantity: Decimal
    average_cost: Decimal | None
    market_price: Decimal | None
    market_value: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal | None
    proto: portfolio_pb2.Position

    @classmethod
    def from_proto(cls, p: portfolio_pb2.Position) -> Position:
        return cls(
            account_id=p.account_id,
            symbol=p.contract.local_symbol or p.contract.symbol,
            con_id=p.contract.con_id,
            quantity=to_decimal(p.quantity) or Decimal(0),
            average_cost=to_decimal(p.average_cost),
            market_price=to_decimal(p.market_price),
            market_value=to_decimal(p.market_value),
            unrealized_pnl=to_decimal(p.unrealized_pnl),
            realized_pnl=to_decimal(p.realized_pnl),
            proto=p,
        )


@dataclass(frozen=True)
class StreamRestarted:
    """Yielded by a self-healing stream when it has re-opened after losing the gateway
    (``error`` says why): quotes may have been missed in between; order events were
    resumed from the last sequence (a ``ReplayGap`` follows if some are gone)."""

    error: Exception | None
    attempt: int


def _enum_name(enum: object, value: int, prefix: str) -> str:
    name: str = enum.Name(value)  # type: ignore[attr-defined]
    return name.removeprefix(prefix)


def enum_value(enum: object, name: str, prefix: str) -> int:
    """``"BUY"`` or ``"ORDER_SIDE_BUY"`` → the enum's number."""
    full = name if name.startswith(prefix) else prefix + name.upper()
    try:
        return int(enum.Value(full))  # type: ignore[attr-defined]
    except ValueError:
        raise ValueError(f"unknown value {name!r} (expected one of the {prefix}* names)") from None
