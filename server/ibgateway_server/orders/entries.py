"""What the order book holds about each order, and the outcomes of its calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ibgateway.v1 import orders_pb2
from ibgateway_server.ib.insync import Trade
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders import ib_terms

CANCELLED_IB_STATUSES = frozenset({"Cancelled", "ApiCancelled"})


FINAL_AFTER_CANCEL = frozenset({"Cancelled", "ApiCancelled", "Filled", "Inactive"})


WORKING_STATUSES = frozenset(
    {
        orders_pb2.ORDER_STATUS_PENDING_SUBMIT,
        orders_pb2.ORDER_STATUS_PRE_SUBMITTED,
        orders_pb2.ORDER_STATUS_SUBMITTED,
    }
)


class HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


def perm_id_of(trade: Trade) -> int:
    return int(trade.order.permId or trade.orderStatus.permId or 0)


def refused_before_acknowledged(trade: Trade) -> bool:
    """TWS refused the order outright: no perm id, done, with an IB error in its log."""
    if perm_id_of(trade) or trade.orderStatus.status not in (*CANCELLED_IB_STATUSES, "Inactive"):
        return False
    return any(entry.errorCode for entry in trade.log)


@dataclass
class BookEntry:
    """One order the book knows, with what the gateway learned about it."""

    trade: Trade
    create_time: datetime
    message: tuple[int, str] | None = None  # the latest IB message (code, text) about it
    rejection: tuple[int, str] | None = None  # TWS created the order, then refused it
    children: Callable[[Trade], list[Trade]] | None = None  # its child orders (brackets)

    @property
    def client_order_id(self) -> str:
        return self.trade.order.orderRef or ""

    @property
    def account(self) -> str:
        """The order's account (from its fills when TWS left the order's own field empty)."""
        trade = self.trade
        return trade.order.account or next(
            (f.execution.acctNumber for f in trade.fills if f.execution.acctNumber), ""
        )

    @property
    def order_id(self) -> int:
        return int(self.trade.order.orderId or self.trade.orderStatus.orderId or 0)

    @property
    def perm_id(self) -> int:
        return perm_id_of(self.trade)

    @property
    def status(self) -> str:
        return self.trade.orderStatus.status or ""

    @property
    def acknowledged(self) -> bool:
        """TWS has answered for the order (a status beyond PendingSubmit, or a perm id)."""
        return bool(self.perm_id) or self.status not in ib_terms.UNACKNOWLEDGED_IB_STATUSES

    def to_proto(self) -> orders_pb2.Order:
        children = self.children(self.trade) if self.children is not None else []
        return oc.trade_to_proto(
            self.trade, create_time=self.create_time, message=self.message, children=children
        )


@dataclass(frozen=True)
class Cancellation:
    """The outcome of CancelOrder: the order, and whether it was cancelled before."""

    entry: BookEntry
    already_cancelled: bool


@dataclass(frozen=True)
class Placement:
    """The outcome of PlaceOrder: the order, and whether it already existed."""

    entry: BookEntry
    replayed: bool


def created_time(trade: Trade) -> datetime:
    if trade.log and isinstance(trade.log[0].time, datetime):
        return trade.log[0].time
    return datetime.now(UTC)


def finished_check(entry: BookEntry) -> Callable[[], bool]:
    return lambda: entry.status in FINAL_AFTER_CANCEL


def key_metadata(entry: BookEntry) -> dict[str, str]:
    return {"client_order_id": entry.client_order_id, "order_id": str(entry.order_id)}
