"""PortfolioWatch's conflation: the newest value per key wins, skipped ones are counted."""

from __future__ import annotations

from typing import Any

from ib_insync import IB, AccountValue, Contract, PnL, Position

from ibgateway_server.portfolio import watch as watch_module
from ibgateway_server.portfolio.watch import PnlSubscriptions, PortfolioWatch


class FakeSession:
    def __init__(self) -> None:
        self.ib = IB()
        self.connected = True
        self.listeners: list[Any] = []

    def add_state_listener(self, fn: Any) -> Any:
        self.listeners.append(fn)
        return lambda: self.listeners.remove(fn)


def make_watch() -> tuple[FakeSession, PortfolioWatch]:
    session = FakeSession()
    pnl = PnlSubscriptions(session)  # type: ignore[arg-type]
    pnl._subscribe = lambda account: None  # type: ignore[method-assign]
    watch = PortfolioWatch(session, pnl, "DU1")  # type: ignore[arg-type]
    watch.open()
    return session, watch


def test_newest_value_per_key_wins_and_skipped_ones_are_counted() -> None:
    session, watch = make_watch()
    first = watch.next_message()
    assert first is not None and first.HasField("snapshot")
    ib = session.ib
    for value in ("100", "101", "102"):
        ib.accountValueEvent.emit(AccountValue("DU1", "NetLiquidation", value, "USD", ""))
    ib.accountValueEvent.emit(AccountValue("DU1", "BuyingPower", "400", "USD", ""))
    ib.accountValueEvent.emit(AccountValue("DU2", "NetLiquidation", "9", "USD", ""))  # other
    aapl = Contract(conId=265598, symbol="AAPL", secType="STK")
    ib.positionEvent.emit(Position("DU1", aapl, 10.0, 150.0))
    ib.positionEvent.emit(Position("DU1", aapl, 0.0, 0.0))
    ib.pnlEvent.emit(PnL("DU1", "", 1.0, 2.0, 3.0))
    message = watch.next_message()
    assert message is not None and message.HasField("changes")
    changes = message.changes
    assert [(v.tag, v.value) for v in changes.account_values] == [
        ("NetLiquidation", "102"),
        ("BuyingPower", "400"),
    ]
    [position] = changes.positions
    assert position.closed and position.position.quantity.value == "0"
    assert changes.pnl.realized_pnl.value == "3"
    assert changes.conflated_updates == 3  # two NetLiquidation values and the open position
    assert watch.next_message() is None
    watch.close()
    assert not session.listeners


def test_pending_changes_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(watch_module, "MAX_PENDING", 5)
    session, watch = make_watch()
    watch.next_message()
    for n in range(20):
        session.ib.accountValueEvent.emit(AccountValue("DU1", f"Tag{n}", "1", "USD", ""))
    message = watch.next_message()
    assert message is not None
    assert [v.tag for v in message.changes.account_values] == [f"Tag{n}" for n in range(15, 20)]
    assert message.changes.conflated_updates == 15
    watch.close()
