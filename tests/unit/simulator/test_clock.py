"""The simulated clock and the trading hours (pure)."""

from __future__ import annotations

from tws_simulator.clock import (
    Boundary,
    Phase,
    SimClock,
    boundaries,
    eastern,
    next_close,
    parse_good_till,
    phase,
)

# 2026-11-30 is a Monday.
MONDAY = (2026, 11, 30)


def test_clock_starts_where_asked_and_moves_with_the_wall_clock() -> None:
    wall = [1000.0]
    clock = SimClock(start=5000.0, wall=lambda: wall[0])
    assert clock.now() == 5000.0
    wall[0] += 2.5
    assert clock.now() == 5002.5
    jumps: list[tuple[float, float]] = []
    remove = clock.add_listener(lambda before, after: jumps.append((before, after)))
    clock.advance(100)
    assert clock.now() == 5102.5 and jumps == [(5002.5, 5102.5)]
    remove()
    clock.set(0.0)
    assert clock.now() == 0.0 and len(jumps) == 1


def test_stock_phases() -> None:
    assert phase("STK", eastern(*MONDAY, 3, 59)) is Phase.CLOSED
    assert phase("STK", eastern(*MONDAY, 4, 0)) is Phase.EXTENDED
    assert phase("STK", eastern(*MONDAY, 9, 30)) is Phase.REGULAR
    assert phase("STK", eastern(*MONDAY, 15, 59)) is Phase.REGULAR
    assert phase("STK", eastern(*MONDAY, 16, 0)) is Phase.EXTENDED
    assert phase("STK", eastern(*MONDAY, 20, 0)) is Phase.CLOSED
    assert phase("STK", eastern(2026, 12, 5, 12, 0)) is Phase.CLOSED  # Saturday


def test_forex_phases() -> None:
    assert phase("CASH", eastern(*MONDAY, 3, 0)) is Phase.REGULAR
    assert phase("CASH", eastern(*MONDAY, 17, 5)) is Phase.CLOSED  # the daily break
    assert phase("CASH", eastern(2026, 12, 4, 17, 0)) is Phase.CLOSED  # Friday close
    assert phase("CASH", eastern(2026, 12, 6, 17, 0)) is Phase.CLOSED  # Sunday before open
    assert phase("CASH", eastern(2026, 12, 6, 17, 15)) is Phase.REGULAR


def test_boundaries_between_two_moments_in_order() -> None:
    found = boundaries("STK", eastern(*MONDAY, 9, 0), eastern(2026, 12, 1, 10, 0))
    assert [(kind, moment) for moment, kind in found] == [
        (Boundary.OPEN, eastern(*MONDAY, 9, 30)),
        (Boundary.CLOSE, eastern(*MONDAY, 16, 0)),
        (Boundary.EXTENDED_CLOSE, eastern(*MONDAY, 20, 0)),
        (Boundary.OPEN, eastern(2026, 12, 1, 9, 30)),
    ]
    # (after, until]: a moment exactly at a boundary has passed it.
    assert boundaries("STK", eastern(*MONDAY, 9, 30), eastern(*MONDAY, 9, 31)) == []
    assert boundaries("STK", eastern(*MONDAY, 9, 0), eastern(*MONDAY, 9, 0)) == []


def test_next_close_skips_the_weekend() -> None:
    friday_evening = eastern(2026, 12, 4, 18, 0)
    assert next_close("STK", friday_evening) == eastern(2026, 12, 7, 16, 0)
    assert next_close("CASH", eastern(*MONDAY, 12, 0)) == eastern(*MONDAY, 17, 0)


def test_good_till_date_formats() -> None:
    assert parse_good_till("20261130 16:00:00 US/Eastern") == eastern(*MONDAY, 16, 0)
    assert parse_good_till("20261130 16:00:00") == eastern(*MONDAY, 16, 0)
    assert parse_good_till("20261130-21:00:00") == eastern(*MONDAY, 16, 0)  # UTC
    assert parse_good_till("") is None
    assert parse_good_till("tomorrow") is None
    assert parse_good_till("20261130 16:00:00 Mars/Olympus") is None


def test_futures_and_options_phases() -> None:
    assert phase("FUT", eastern(*MONDAY, 10, 0)) is Phase.REGULAR
    assert phase("FUT", eastern(*MONDAY, 3, 0)) is Phase.EXTENDED  # overnight Globex
    assert phase("FUT", eastern(*MONDAY, 17, 30)) is Phase.CLOSED  # the daily break
    assert phase("FUT", eastern(2026, 12, 6, 18, 30)) is Phase.EXTENDED  # Sunday evening
    assert phase("FUT", eastern(2026, 12, 4, 17, 30)) is Phase.CLOSED  # Friday after 17:00
    assert phase("OPT", eastern(*MONDAY, 10, 0)) is Phase.REGULAR
    assert phase("OPT", eastern(*MONDAY, 8, 0)) is Phase.CLOSED  # no pre-market for options
    kinds = [k for _, k in boundaries("FUT", eastern(*MONDAY, 9, 0), eastern(*MONDAY, 18, 0))]
    assert kinds == [Boundary.OPEN, Boundary.CLOSE, Boundary.EXTENDED_CLOSE]
