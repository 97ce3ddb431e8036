"""The simulator's history building blocks: splitting cells, the synthetic past."""

from __future__ import annotations

from datetime import date, datetime

from tws_simulator.history_data import Cell, SyntheticPast, merge, split
from tws_simulator.instruments import DEFAULT_INSTRUMENTS

AAPL = DEFAULT_INSTRUMENTS[0]


def test_split_parts_merge_back_into_the_cell() -> None:
    cell = Cell(
        600,
        [10.0, 10.5, 9.8, 10.2],
        [10.01, 10.51, 9.81, 10.21],
        [10.0, 10.5, 9.8, 10.2],
        1234.0,
        17,
        1234.0 * 10.1,
    )
    parts = split(cell, 60, 12, seed=7, tick=0.01)
    assert [p.t for p in parts] == list(range(600, 660, 5))
    again = merge(parts, 600)
    assert again is not None
    assert (again.bid, again.ask, again.trade) == (cell.bid, cell.ask, cell.trade)
    assert (again.volume, again.count) == (cell.volume, cell.count)
    for part in parts:
        assert part.trade is not None
        assert part.trade[2] <= min(part.trade[0], part.trade[3]) <= part.trade[1]
        assert round(part.trade[1] * 100, 6) == round(part.trade[1] * 100)  # on the grid


def test_the_past_closes_at_the_previous_close_and_is_seeded() -> None:
    first_day = date(2026, 11, 30)  # a Monday: the last past day is Friday
    past = SyntheticPast(AAPL, 1, first_day, previous_close=150.0)
    friday = date(2026, 11, 27)
    assert past.previous_trading_day(first_day) == friday
    regular = past.day_total(friday, rth=True)
    assert regular is not None and regular.trade is not None
    assert regular.trade[3] == 150.0
    assert past.day_total(date(2026, 11, 28), rth=False) is None  # Saturday
    start, end = past.session(friday, rth=False)
    assert datetime.fromtimestamp(start, past.tz).hour == 4
    assert datetime.fromtimestamp(end, past.tz).hour == 20
    same = SyntheticPast(AAPL, 1, first_day, previous_close=150.0)
    other = SyntheticPast(AAPL, 2, first_day, previous_close=150.0)
    older = date(2026, 6, 3)
    assert same.day_total(older, rth=False) == past.day_total(older, rth=False)
    assert other.day_total(older, rth=False) != past.day_total(older, rth=False)
