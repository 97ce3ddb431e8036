"""OrderTracker: turns what ib_insync reports about orders into order events.

It remembers, per order (by IB perm id, or client and order id until TWS assigns one),
what the events have said so far: acknowledged or not, the status, the filled quantity,
the terms (type, quantity, prices), and which executions and commission reports were
reported. Every IB callback about an order (open order, order status, execution,
commission report, error) compares the order with that memory and appends only what is
new, in this order:

* ACKNOWLEDGED once TWS has accepted the order (a status beyond PendingSubmit, or a fill),
  or when the gateway first sees an order placed elsewhere;
* REJECTED instead, when TWS refuses or ends the order with an error (IB's code and text);
* MODIFIED when TWS reports other terms for a working order;
* MODIFY_REJECTED when TWS refuses a modification (the order book tells, see
  :meth:`OrderTracker.modify_rejected`): the order as it is, still working on its terms;
* FILLED once per execution, then COMMISSION once per commission report;
* STATUS_CHANGED when the status changes, or the filled quantity changes without an
  execution explaining it; repeats of the same status say nothing.

After a reconnect ib_insync rebuilds its orders from TWS; :meth:`sync` (called by the
order book once it has re-synced) compares every order with the memory the same way, so
an order that was filled, cancelled or modified while the gateway was away yields its
FILLED / COMMISSION / STATUS_CHANGED events then, and nothing already reported is
repeated. Until then (and until the very first sync, which only records what TWS holds)
callbacks are ignored: the sync sees their effect.

With a journal on disk, what was reported about each order is kept there too (written in
the same transaction as the events), so after a restart the first sync compares TWS's
orders with what the previous run reported: a fill that happened while the gateway was
down yields its FILLED event once, and nothing reported before is repeated. Only a new
journal starts with a silent baseline.

IB messages about an order that are information (202 "Order Canceled", warnings) are
attached to that order's next event (``message``, ``ib_code``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from ibgateway.v1 import orders_pb2
from ibgateway_server.ib.insync import IB, Fill, Trade
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders import ib_terms
from ibgateway_server.orders.events import EventType, OrderEventLog
from ibgateway_server.orders.intent import order_terms
from ibgateway_server.orders.journal import JournaledOrder

log = logging.getLogger(__name__)

OrderKey = int | tuple[int, int]  # perm id, else (client id, order id)
Render = Callable[[Trade], orders_pb2.Order]

ACKNOWLEDGED = orders_pb2.ORDER_EVENT_TYPE_ACKNOWLEDGED
STATUS_CHANGED = orders_pb2.ORDER_EVENT_TYPE_STATUS_CHANGED
FILLED = orders_pb2.ORDER_EVENT_TYPE_FILLED
COMMISSION = orders_pb2.ORDER_EVENT_TYPE_COMMISSION
REJECTED = orders_pb2.ORDER_EVENT_TYPE_REJECTED
MODIFIED = orders_pb2.ORDER_EVENT_TYPE_MODIFIED
MODIFY_REJECTED = orders_pb2.ORDER_EVENT_TYPE_MODIFY_REJECTED

_ENDED = frozenset({orders_pb2.ORDER_STATUS_CANCELLED, orders_pb2.ORDER_STATUS_INACTIVE})


@dataclass
class Reported:
    """What the events have said about one order so far."""

    acknowledged: bool = False
    status: orders_pb2.OrderStatus.ValueType = orders_pb2.ORDER_STATUS_UNSPECIFIED
    filled: Decimal = Decimal(0)
    terms: tuple[str, ...] = ()
    fills: set[str] = field(default_factory=set)  # execution ids sent as FILLED
    commissions: set[str] = field(default_factory=set)  # ... sent as COMMISSION
    note: tuple[int, str] | None = None  # an informational IB message for the next event

    def to_json(self) -> dict[str, object]:
        return {
            "acknowledged": self.acknowledged,
            "status": int(self.status),
            "filled": str(self.filled),
            "terms": list(self.terms),
            "fills": sorted(self.fills),
            "commissions": sorted(self.commissions),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Reported:
        def strings(name: str) -> list[str]:
            value = data.get(name, [])
            return [str(v) for v in value] if isinstance(value, list) else []

        status = data.get("status", 0)
        return cls(
            acknowledged=bool(data.get("acknowledged", False)),
            status=orders_pb2.OrderStatus.ValueType(int(status) if isinstance(status, int) else 0),
            filled=Decimal(str(data.get("filled", "0"))),
            terms=tuple(strings("terms")),
            fills=set(strings("fills")),
            commissions=set(strings("commissions")),
        )


def order_key(trade: Trade) -> OrderKey:
    perm = int(trade.order.permId or trade.orderStatus.permId or 0)
    if perm:
        return perm
    return (int(trade.order.clientId or 0), int(trade.order.orderId or 0))


def _has_commission(fill: Fill) -> bool:
    report = fill.commissionReport
    return report is not None and bool(report.execId)


def _accepted(trade: Trade) -> bool:
    """TWS has taken the order: it reported a status beyond PendingSubmit, or a fill."""
    return trade.orderStatus.status not in ib_terms.UNACKNOWLEDGED_IB_STATUSES or bool(trade.fills)


def _logged_rejection(trade: Trade) -> tuple[int, str] | None:
    """The IB error ib_insync ended the order with (its newest log entry), if any."""
    if trade.log:
        entry = trade.log[-1]
        if entry.errorCode and not ib_terms.is_informational(entry.errorCode):
            return entry.errorCode, ib_terms.strip_error_prefix(entry.message)
    return None


class _Emitter:
    """Appends one order's events, rendering the order (its state now) once."""

    def __init__(self, log: OrderEventLog, render: Render, trade: Trade, state: Reported):
        self.log, self.render, self.trade, self.state = log, render, trade, state
        self._order: orders_pb2.Order | None = None

    def emit(
        self,
        event_type: EventType,
        *,
        fill: Fill | None = None,
        message: tuple[int, str] | None = None,
    ) -> None:
        if self._order is None:
            self._order = self.render(self.trade)
        if message is None:
            message, self.state.note = self.state.note, None
        code, text = message or (0, "")
        self.log.append(
            event_type,
            self._order,
            fill=oc.fill_to_proto(fill) if fill is not None else None,
            message=text,
            ib_code=code,
        )


class OrderTracker:
    """Follows ib_insync's order callbacks and appends order events to ``log``.

    ``render`` gives the proto Order of a trade as the order book shows it;
    ``trade_of_request`` the trade an IB error's request id names (an order id of this
    client). Start it after the order book, so that the book has taken in a callback
    before an event renders the order.
    """

    def __init__(
        self,
        ib: IB,
        log: OrderEventLog,
        render: Render,
        trade_of_request: Callable[[int], Trade | None],
    ) -> None:
        self.ib = ib
        self.log = log
        self.render = render
        self.trade_of_request = trade_of_request
        self._reported: dict[OrderKey, Reported] = {}
        self._live = False  # callbacks count only between a sync and the next disconnect
        self._baseline = True  # the first sync records without events
        self._saved: dict[int, dict[str, object]] = {}  # what the journal holds per perm id
        self._restore()
        self._started = False
        self._reported_error: tuple[int, int] | None = None  # (id(trade), code) told already

    def _restore(self) -> None:
        """Take up what an earlier run reported (from the event log's journal)."""
        journal = self.log.journal
        self._reported, self._saved = {}, {}
        self._baseline = True
        for held in journal.orders():
            try:
                perm = int(held.key)
                self._reported[perm] = Reported.from_json(held.state)
                self._saved[perm] = held.state
            except (ValueError, TypeError, ArithmeticError):
                log.warning("order journal: ignoring an unreadable order state %r", held.key)
        if journal.restored:
            self._baseline = False  # compare TWS's orders with what was reported before

    def restart(self) -> None:
        """The event log moved to another journal: start over from it."""
        self._restore()

    def _persist(self, key: OrderKey) -> None:
        """Write one order's reported state to the journal if it changed."""
        if not isinstance(key, int):
            return  # not acknowledged by TWS yet: nothing durable to remember
        state = self._reported.get(key)
        if state is None:
            return
        data = state.to_json()
        if self._saved.get(key) == data:
            return
        self._saved[key] = data
        final = state.status in ib_terms.DONE_STATUSES
        self.log.journal.put_order(JournaledOrder(str(key), data, final))

    def _persist_all(self) -> None:
        for key in list(self._reported):
            self._persist(key)
        gone = [k for k in self._saved if k not in self._reported]
        if gone:
            self.log.journal.forget_orders(str(k) for k in gone)
            for key in gone:
                del self._saved[key]

    @property
    def tracked(self) -> int:
        """How many orders the tracker remembers (those ib_insync holds)."""
        return len(self._reported)

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        ib = self.ib
        ib.openOrderEvent += self._on_trade
        ib.orderStatusEvent += self._on_trade
        ib.execDetailsEvent += self._on_fill
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._live = False
        ib = self.ib
        ib.openOrderEvent -= self._on_trade
        ib.orderStatusEvent -= self._on_trade
        ib.execDetailsEvent -= self._on_fill
        ib.commissionReportEvent -= self._on_commission
        ib.errorEvent -= self._on_error

    def suspend(self) -> None:
        """The connection is gone or being re-synced: wait for :meth:`sync`."""
        self._live = False

    def sync(self) -> None:
        """Compare every order ib_insync holds with what was reported, append the
        differences, forget orders it no longer holds, and follow callbacks again."""
        trades = sorted(self.ib.trades(), key=_placement_order)
        if self._baseline:
            self._reported = {}
            for trade in trades:
                try:
                    self._reported[order_key(trade)] = self._snapshot(trade)
                except Exception:
                    log.exception("order events: cannot record order %s", order_key(trade))
            self._baseline = False
        else:
            kept: dict[OrderKey, Reported] = {}
            for trade in trades:
                self._reconcile_safely(trade)
                key = order_key(trade)
                state = self._reported.get(key)
                if state is not None:
                    kept[key] = state
            self._reported = kept
        self._persist_all()
        self._live = True

    def modify_rejected(self, trade: Trade, code: int, text: str) -> None:
        """TWS refused a modification of this working order (the order book has put back
        the status ib_insync changed): one MODIFY_REJECTED with the order as it is."""
        if not self._live:
            return  # the next sync compares the order as TWS reports it
        try:
            state = self._state(trade)
            if state is None:
                state = self._snapshot(trade)
                self._reported[order_key(trade)] = state
            _Emitter(self.log, self.render, trade, state).emit(
                MODIFY_REJECTED, message=(code, text)
            )
            self._persist(order_key(trade))
        except Exception:
            log.exception("order events: cannot report the refused change of %s", order_key(trade))
        self._reported_error = (id(trade), code)  # the same IB error follows in _on_error

    # ---------------------------------------------------------------- callbacks

    def _on_trade(self, trade: Trade) -> None:
        if self._live:
            self._reconcile_safely(trade)

    def _on_fill(self, trade: Trade, fill: Fill) -> None:
        if self._live:
            self._reconcile_safely(trade)

    def _on_commission(self, trade: Trade, fill: Fill, report: object) -> None:
        if self._live:
            self._reconcile_safely(trade)

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if not self._live or req_id <= 0:
            return
        trade = self.trade_of_request(req_id)
        told, self._reported_error = self._reported_error, None
        if trade is not None and told == (id(trade), code):
            return  # reported as MODIFY_REJECTED
        if trade is not None:
            self._reconcile_safely(trade, error=(code, message.strip()))

    def _reconcile_safely(self, trade: Trade, error: tuple[int, str] | None = None) -> None:
        # One odd order must not stop the events of the others (nor a re-sync).
        try:
            self._reconcile(trade, error)
            self._persist(order_key(trade))
        except Exception:
            log.exception("order events: cannot follow order %s", order_key(trade))

    # ---------------------------------------------------------------- comparing

    def _state(self, trade: Trade) -> Reported | None:
        """The memory of this order; moved to its perm id once TWS assigned one."""
        key = order_key(trade)
        state = self._reported.get(key)
        if state is None and isinstance(key, int):
            early = (int(trade.order.clientId or 0), int(trade.order.orderId or 0))
            state = self._reported.pop(early, None)
            if state is not None:
                self._reported[key] = state
        return state

    def _snapshot(self, trade: Trade) -> Reported:
        """Everything about the order counted as reported (the baseline)."""
        executions = {f.execution.execId for f in trade.fills}
        return Reported(
            acknowledged=_accepted(trade) or _logged_rejection(trade) is not None,
            status=ib_terms.status_from_ib(trade.orderStatus.status),
            filled=oc.filled_quantity(trade),
            terms=order_terms(trade),
            fills=set(executions),
            commissions=set(executions),
        )

    def _reconcile(self, trade: Trade, error: tuple[int, str] | None = None) -> None:
        state = self._state(trade)
        if state is None:
            state = Reported(terms=order_terms(trade))
            self._reported[order_key(trade)] = state
        out = _Emitter(self.log, self.render, trade, state)
        status = ib_terms.status_from_ib(trade.orderStatus.status)
        refusal = _logged_rejection(trade) if status in _ENDED else None
        if error is not None:
            if ib_terms.is_informational(error[0]):
                state.note = error
            elif refusal is None and not state.acknowledged and not trade.order.permId:
                # Refused before TWS took it, and ib_insync left it pending (e.g. 110).
                refusal = error
            elif refusal is None:
                state.note = error  # about a working order (e.g. a refused change)

        if not state.acknowledged:
            if refusal is not None:
                state.acknowledged, state.status = True, status
                state.filled = oc.filled_quantity(trade)
                out.emit(REJECTED, message=refusal)
                return
            if not _accepted(trade):
                state.terms = order_terms(trade)
                return  # not acknowledged yet: nothing to say
            state.acknowledged, state.status = True, status
            state.terms = order_terms(trade)
            state.filled = oc.filled_quantity(trade)
            out.emit(ACKNOWLEDGED)

        terms = order_terms(trade)
        if terms != state.terms:
            state.terms = terms
            if status not in ib_terms.DONE_STATUSES:
                out.emit(MODIFIED)

        for fill in sorted(trade.fills, key=_fill_order):
            exec_id = fill.execution.execId
            if exec_id not in state.fills:
                state.fills.add(exec_id)
                state.filled = max(state.filled, oc.filled_quantity(trade))
                out.emit(FILLED, fill=fill)
            if exec_id not in state.commissions and _has_commission(fill):
                state.commissions.add(exec_id)
                out.emit(COMMISSION, fill=fill)

        filled = oc.filled_quantity(trade)
        if status != state.status:
            state.status, state.filled = status, filled
            if refusal is not None:
                out.emit(REJECTED, message=refusal)
            else:
                out.emit(STATUS_CHANGED)
        elif filled != state.filled:
            state.filled = filled
            out.emit(STATUS_CHANGED)


def _placement_order(trade: Trade) -> tuple[float, int, int]:
    first = trade.log[0].time if trade.log else None
    when = first.timestamp() if first is not None and hasattr(first, "timestamp") else 0.0
    return (when, int(trade.order.orderId or 0), int(trade.order.permId or 0))


def _fill_order(fill: Fill) -> tuple[float, str]:
    when = fill.execution.time if fill.execution.time else fill.time
    stamp = when.timestamp() if when is not None and hasattr(when, "timestamp") else 0.0
    return (stamp, fill.execution.execId)
