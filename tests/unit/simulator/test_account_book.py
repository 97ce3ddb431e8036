"""Account book-keeping: fills, average cost, realized P&L, values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tws_simulator.account import Account
from tws_simulator.market import Market
from tws_simulator.universe import Universe
from tws_simulator.wire import UNSET_DOUBLE


@pytest.fixture
def account() -> Account:
    universe = Universe()
    return Account("DU7654321", universe, Market(universe, seed=5), cash=100_000.0)


def inst(account: Account, symbol: str):
    found = account.universe.by_symbol(symbol)
    assert found is not None
    return found


def values(account: Account) -> dict[str, float]:
    return {k: float(v) for k, v, cur in account.values() if cur == "USD" and k != "Currency"}


def test_opening_and_adding_average_in_the_commission(account: Account) -> None:
    aapl = inst(account, "AAPL")
    assert account.apply_fill(aapl, "BOT", Decimal(100), 100.0, 1.0) == UNSET_DOUBLE
    assert account.apply_fill(aapl, "BOT", Decimal(100), 110.0, 1.0) == UNSET_DOUBLE
    pos = account.position(aapl.con_id)
    assert pos is not None and pos.quantity == 200
    assert pos.average_cost == pytest.approx((100 * 100 + 1 + 100 * 110 + 1) / 200)
    assert account.cash == pytest.approx(100_000 - 21_002)


def test_closing_realizes_pnl_and_removes_the_position(account: Account) -> None:
    aapl = inst(account, "AAPL")
    account.apply_fill(aapl, "BOT", Decimal(100), 100.0, 1.0)
    realized = account.apply_fill(aapl, "SLD", Decimal(40), 110.0, 1.0)
    assert realized == pytest.approx(40 * (110 - 100.01) - 1.0)
    assert account.position(aapl.con_id).quantity == 60  # type: ignore[union-attr]
    rest = account.apply_fill(aapl, "SLD", Decimal(60), 90.0, 1.0)
    assert rest == pytest.approx(60 * (90 - 100.01) - 1.0)
    assert account.position(aapl.con_id) is None
    assert account.realized_pnl == pytest.approx(realized + rest)
    assert account.cash == pytest.approx(100_000 - 10_001 + 4_399 + 5_399)


def test_short_and_flip_through_zero(account: Account) -> None:
    spy = inst(account, "SPY")
    account.apply_fill(spy, "SLD", Decimal(10), 400.0, 2.0)
    pos = account.position(spy.con_id)
    assert pos is not None and pos.quantity == -10
    assert pos.average_cost == pytest.approx(400.2)
    realized = account.apply_fill(spy, "BOT", Decimal(30), 390.0, 3.0)
    # 10 closed at a gain (400.2 - 390) minus their share of the commission (1.0)
    assert realized == pytest.approx(10 * (400.2 - 390.0) - 1.0)
    pos = account.position(spy.con_id)
    assert pos is not None and pos.quantity == 20
    assert pos.average_cost == pytest.approx((20 * 390.0 + 2.0) / 20)


def test_bad_fills_are_refused(account: Account) -> None:
    aapl = inst(account, "AAPL")
    with pytest.raises(ValueError):
        account.apply_fill(aapl, "BUY", Decimal(1), 1.0, 0.0)
    with pytest.raises(ValueError):
        account.apply_fill(aapl, "BOT", Decimal(0), 1.0, 0.0)


def test_values_are_consistent(account: Account) -> None:
    aapl, eur = inst(account, "AAPL"), inst(account, "EUR.USD")
    account.apply_fill(aapl, "BOT", Decimal(100), 150.0, 0.0)
    account.apply_fill(eur, "BOT", Decimal(20_000), 1.08, 0.0)
    v = values(account)
    items = {i.instrument.symbol: i for i in account.portfolio()}
    stock_value = items["AAPL"].market_value
    assert v["NetLiquidation"] == pytest.approx(
        account.cash + stock_value + items["EUR"].market_value, abs=0.01
    )
    assert v["GrossPositionValue"] == pytest.approx(abs(stock_value), abs=0.01)  # forex is cash
    assert v["InitMarginReq"] == pytest.approx(0.25 * abs(stock_value), abs=0.01)
    assert v["AvailableFunds"] == pytest.approx(v["NetLiquidation"] - v["InitMarginReq"], abs=0.02)
    assert v["BuyingPower"] == pytest.approx(4 * v["AvailableFunds"], abs=0.05)
    assert account.buying_power() == pytest.approx(v["BuyingPower"], abs=0.05)
    assert v["TotalCashValue"] == pytest.approx(account.cash, abs=0.01)


def test_listeners_hear_every_fill(account: Account) -> None:
    heard: list[int] = []
    account.add_listener(heard.append)
    aapl = inst(account, "AAPL")
    account.apply_fill(aapl, "BOT", Decimal(1), 100.0, 0.0)
    account.apply_fill(aapl, "SLD", Decimal(1), 100.0, 0.0)
    assert heard == [aapl.con_id, aapl.con_id]


def test_starting_positions_need_known_symbols() -> None:
    universe = Universe()
    with pytest.raises(ValueError):
        Account("DU1", universe, Market(universe), positions={"NOPE": (1, 1.0)})
