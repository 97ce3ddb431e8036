"""OrderTracker without TWS: ib_insync's Trade, Fill and event objects, driven the way
ib_insync's wrapper drives them, and the events that reach the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from eventkit import Event

from ibgateway.v1 import orders_pb2
from ibgateway_server.ib.insync import (
    IB,
    CommissionReport,
    Contract,
    Execution,
    Fill,
    Order,
    OrderStatus,
    Trade,
    TradeLogEntry,
)
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders import ib_terms
from ibgateway_server.orders.events import OrderEventLog
from ibgateway_server.orders.intent import order_terms
from ibgateway_server.orders.tracker import OrderTracker

CLIENT_ID = 1
AAPL = Contract(conId=265598, symbol="AAPL", secType="STK", exchange="SMART", currency="USD")
Kind = orders_pb2.OrderEventType


class FakeIB:
    """The events and the trade table of ib_insync's IB that the tracker uses."""

    def __init__(self) -> None:
        self.openOrderEvent = Event("openOrderEvent")
        self.orderStatusEvent = Event("orderStatusEvent")
        self.execDetailsEvent = Event("execDetailsEvent")
        self.commissionReportEvent = Event("commissionReportEvent")
        self.errorEvent = Event("errorEvent")
        self.table: dict[object, Trade] = {}

    def trades(self) -> list[Trade]:
        return list(self.table.values())

    # -- what ib_insync does on each message ---------------------------------------------

    def place(self, order_id: int, *, quantity: float = 10, order_type: str = "LMT") -> Trade:
        order = Order(
            orderId=order_id,
            clientId=CLIENT_ID,
            action="BUY",
            totalQuantity=quantity,
            orderType=order_type,
            lmtPrice=100.0,
            account="DU1",
            orderRef=f"key-{order_id}",
        )
        trade = Trade(
            contract=AAPL,
            order=order,
            orderStatus=OrderStatus(orderId=order_id, status="PendingSubmit"),
            log=[TradeLogEntry(datetime.now(UTC), "PendingSubmit", "")],
        )
        self.table[(CLIENT_ID, order_id)] = trade
        return trade

    def open_order(self, trade: Trade, perm_id: int, **changes: float) -> None:
        trade.order.permId = perm_id
        for name, value in changes.items():
            setattr(trade.order, name, value)
        self.openOrderEvent.emit(trade)

    def status(self, trade: Trade, status: str, filled: float = 0) -> None:
        trade.orderStatus.status = status
        trade.orderStatus.filled = filled
        trade.orderStatus.remaining = trade.order.totalQuantity - filled
        trade.log.append(TradeLogEntry(datetime.now(UTC), status, ""))
        self.orderStatusEvent.emit(trade)

    def execution(self, trade: Trade, exec_id: str, shares: float, price: float = 100) -> Fill:
        execution = Execution(
            execId=exec_id,
            time=datetime.now(UTC),
            acctNumber="DU1",
            exchange="NASDAQ",
            side="BOT",
            shares=shares,
            price=price,
            permId=trade.order.permId,
            clientId=CLIENT_ID,
            orderId=trade.order.orderId,
        )
        fill = Fill(AAPL, execution, CommissionReport(), datetime.now(UTC))
        trade.fills.append(fill)
        self.execDetailsEvent.emit(trade, fill)
        return fill

    def commission(self, trade: Trade, fill: Fill, amount: float = 1.0) -> None:
        report = fill.commissionReport  # ib_insync updates the fill's report in place
        report.execId, report.commission, report.currency = fill.execution.execId, amount, "USD"
        self.commissionReportEvent.emit(trade, fill, report)

    def error(self, trade: Trade, code: int, text: str, *, cancels: bool) -> None:
        """ib_insync's wrapper.error: most codes cancel a pending or working trade first."""
        if cancels:
            trade.orderStatus.status = "Cancelled"
            trade.log.append(
                TradeLogEntry(
                    datetime.now(UTC),
                    "Cancelled",
                    f"Error {code}, reqId {trade.order.orderId}: {text}",
                    code,
                )
            )
            self.orderStatusEvent.emit(trade)
        self.errorEvent.emit(trade.order.orderId, code, text, trade.contract)


def tracked(ib: FakeIB | None = None) -> tuple[OrderTracker, OrderEventLog, FakeIB]:
    ib = ib or FakeIB()
    log = OrderEventLog()
    tracker = OrderTracker(
        cast(IB, ib),
        log,
        lambda trade: oc.trade_to_proto(trade),
        lambda req_id: ib.table.get((CLIENT_ID, req_id)),
    )
    tracker.start()
    tracker.sync()  # the first sync: nothing held yet
    return tracker, log, ib


def events(log: OrderEventLog, since: int = 1) -> list[orders_pb2.OrderEvent]:
    found = (log.event(n) for n in range(since, log.last_sequence + 1))
    return [e.message.order_event for e in found if e is not None]


def kinds(found: list[orders_pb2.OrderEvent]) -> list[str]:
    return [Kind.Name(e.type).removeprefix("ORDER_EVENT_TYPE_") for e in found]


def acknowledged(ib: FakeIB, order_id: int = 7, perm_id: int = 500) -> Trade:
    trade = ib.place(order_id)
    ib.open_order(trade, perm_id)
    ib.status(trade, "Submitted")
    return trade


def test_an_order_placed_then_filled_in_parts() -> None:
    _, log, ib = tracked()
    trade = ib.place(7)
    ib.open_order(trade, 500)  # TWS's openOrder comes before its status: not yet news
    assert log.last_sequence == 0
    ib.status(trade, "Submitted")
    first = ib.execution(trade, "e1", 4)
    ib.open_order(trade, 500)  # repeated after each fill: nothing changed
    ib.status(trade, "Submitted", filled=4)  # explained by the fill
    ib.commission(trade, first)
    ib.commission(trade, first)  # a repeated report
    second = ib.execution(trade, "e2", 6)
    ib.status(trade, "Filled", filled=10)
    ib.commission(trade, second)
    found = events(log)
    assert kinds(found) == [
        "ACKNOWLEDGED",
        "FILLED",
        "COMMISSION",
        "FILLED",
        "STATUS_CHANGED",
        "COMMISSION",
    ]
    assert [e.fill.execution_id for e in found if e.HasField("fill")] == ["e1", "e1", "e2", "e2"]
    assert found[0].order.status == orders_pb2.ORDER_STATUS_SUBMITTED
    assert found[1].order.filled_quantity.value == "4"
    assert found[4].order.status == orders_pb2.ORDER_STATUS_FILLED
    assert found[5].order.total_commission.value == "2"


def test_a_filled_quantity_without_an_execution_is_a_status_change() -> None:
    _, log, ib = tracked()
    trade = acknowledged(ib)
    ib.status(trade, "Submitted", filled=3)  # e.g. the execution report comes later
    found = events(log)
    assert kinds(found) == ["ACKNOWLEDGED", "STATUS_CHANGED"]
    assert found[1].order.filled_quantity.value == "3"
    ib.execution(trade, "e1", 3)  # now it does: the fill, but no second status change
    assert kinds(events(log, 3)) == ["FILLED"]


def test_a_rejection_is_one_rejected_event() -> None:
    _, log, ib = tracked()
    trade = ib.place(7)
    ib.error(trade, 201, "Order rejected - reason:no", cancels=True)
    found = events(log)
    assert kinds(found) == ["REJECTED"]
    assert (found[0].ib_code, found[0].message) == (201, "Order rejected - reason:no")
    assert found[0].order.status == orders_pb2.ORDER_STATUS_CANCELLED


def test_a_refusal_ib_insync_does_not_cancel_is_rejected_too() -> None:
    _, log, ib = tracked()
    trade = ib.place(7)
    ib.error(trade, 110, "The price does not conform to the minimum price variation", cancels=False)
    found = events(log)
    assert kinds(found) == ["REJECTED"] and found[0].ib_code == 110


def test_an_error_that_ends_a_working_order_is_rejected() -> None:
    _, log, ib = tracked()
    trade = acknowledged(ib)
    ib.error(trade, 201, "Order rejected - reason:margin", cancels=True)
    found = events(log)
    assert kinds(found) == ["ACKNOWLEDGED", "REJECTED"] and found[1].ib_code == 201


def test_information_from_ib_comes_with_the_next_event() -> None:
    _, log, ib = tracked()
    trade = acknowledged(ib)
    ib.error(trade, 202, "Order Canceled - reason:", cancels=False)
    assert log.last_sequence == 1  # no event of its own
    ib.status(trade, "Cancelled")
    cancelled = events(log)[-1]
    assert kinds([cancelled]) == ["STATUS_CHANGED"]
    assert (cancelled.ib_code, cancelled.message) == (202, "Order Canceled - reason:")
    assert cancelled.order.status == orders_pb2.ORDER_STATUS_CANCELLED


def test_other_terms_from_tws_are_a_modification() -> None:
    _, log, ib = tracked()
    trade = acknowledged(ib)
    ib.open_order(trade, 500, lmtPrice=101.5)
    ib.status(trade, "Submitted")  # TWS confirms with an unchanged status
    found = events(log)
    assert kinds(found) == ["ACKNOWLEDGED", "MODIFIED"]
    assert found[1].order.limit_price.value == "101.5"


def test_callbacks_wait_for_the_sync_after_a_reconnect() -> None:
    tracker, log, ib = tracked()
    trade = acknowledged(ib)
    tracker.suspend()  # the connection dropped
    ib.status(trade, "Cancelled")
    assert log.last_sequence == 1
    tracker.sync()
    assert kinds(events(log, 2)) == ["STATUS_CHANGED"]


def test_the_sync_reports_what_changed_while_away_and_forgets_what_is_gone() -> None:
    tracker, log, ib = tracked()
    working = acknowledged(ib, order_id=7, perm_id=500)
    unanswered = ib.place(8)  # TWS never took it
    ib.openOrderEvent.emit(unanswered)
    assert tracker.tracked == 2 and log.last_sequence == 1
    tracker.suspend()
    # ib_insync forgets everything on a disconnect; TWS reports its orders anew.
    ib.table = {}
    again = ib.place(7)
    again.order.permId = 500
    again.orderStatus.status = "Filled"
    again.orderStatus.filled = 10
    fill = Fill(
        AAPL,
        Execution(execId="e9", shares=10, price=99.5, permId=500, time=datetime.now(UTC)),
        CommissionReport(execId="e9", commission=1.25, currency="USD"),
        datetime.now(UTC),
    )
    again.fills.append(fill)
    elsewhere = ib.place(3)
    elsewhere.order.clientId, elsewhere.order.permId = 2, 900
    elsewhere.orderStatus.status = "Submitted"
    ib.table = {(CLIENT_ID, 7): again, (2, 3): elsewhere}
    tracker.sync()
    found = events(log, 2)
    mine = [e for e in found if e.order.client_order_id == "key-7"]
    assert kinds(mine) == ["FILLED", "COMMISSION", "STATUS_CHANGED"]
    assert mine[0].fill.execution_id == "e9" and mine[1].fill.commission.value == "1.25"
    assert all(e.order.status == orders_pb2.ORDER_STATUS_FILLED for e in mine)
    first_seen = [e for e in found if e.order.client_order_id == "key-3"]
    assert kinds(first_seen) == ["ACKNOWLEDGED"]  # placed elsewhere, seen for the first time
    assert len(found) == 4
    assert tracker.tracked == 2  # the order TWS never got is forgotten
    # A second sync with nothing new says nothing (nothing is reported twice).
    tracker.sync()
    assert log.last_sequence == 5
    assert working.order.permId == 500


def test_the_first_sync_only_records() -> None:
    ib = FakeIB()
    trade = ib.place(7)
    trade.order.permId = 500
    trade.orderStatus.status = "Submitted"
    tracker, log, _ = tracked(ib)
    assert log.last_sequence == 0 and tracker.tracked == 1
    ib.status(trade, "Submitted")
    assert log.last_sequence == 0  # known as it is
    ib.status(trade, "Cancelled")
    assert kinds(events(log)) == ["STATUS_CHANGED"]


def test_close_stops_following() -> None:
    tracker, log, ib = tracked()
    tracker.close()
    acknowledged(ib)
    assert log.last_sequence == 0


def test_order_terms_compare_what_each_type_uses() -> None:
    ib = FakeIB()
    market = ib.place(1, order_type="MKT")
    limit = ib.place(2)
    assert order_terms(market) == ("MKT", "10", "", "", "")
    assert order_terms(limit) == ("LMT", "10", "100", "", "")
    market.order.lmtPrice = 0.0  # TWS's spelling of "no limit" differs: not a change
    assert order_terms(market) == ("MKT", "10", "", "", "")
    limit.order.totalQuantity = 12.0
    assert order_terms(limit) == ("LMT", "12", "100", "", "")
    trail = ib.place(3, order_type="TRAIL")
    trail.order.trailingPercent, trail.order.trailStopPrice = 1.5, 95.0  # the stop moves
    assert order_terms(trail) == ("TRAIL", "10", "", "", "1.5")
    assert ib_terms.is_informational(202) and ib_terms.is_informational(2104)
    assert not ib_terms.is_informational(201) and not ib_terms.is_informational(110)
