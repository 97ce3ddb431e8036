"""The historical pacing budget and the bar conversions (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from ib_insync import BarData

from ibgateway.v1 import market_data_pb2
from ibgateway_server.market_data.bars import BAR_SIZES, bar_to_proto, zone
from ibgateway_server.market_data.pacing import HistoricalPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_counts_requests_in_a_sliding_10_minute_window() -> None:
    clock = Clock()
    pacer = HistoricalPacer(3, clock=clock)
    for n in range(3):
        assert pacer.delay(("c", n), ("r", n)) == (0.0, "")
        pacer.record(("c", n), ("r", n))
        clock.now += 10
    delay, reason = pacer.delay(("c", 9), ("r", 9))
    assert reason == "HISTORY_BUDGET_EXHAUSTED" and delay == pytest.approx(600 - 30)
    clock.now += delay
    assert pacer.delay(("c", 9), ("r", 9)) == (0.0, "")
    assert pacer.used == 2


def test_identical_requests_wait_15_seconds_and_bursts_2_seconds() -> None:
    clock = Clock()
    pacer = HistoricalPacer(60, clock=clock)
    pacer.record("aapl", "same")
    delay, reason = pacer.delay("aapl", "same")
    assert reason == "IDENTICAL_HISTORY_REQUEST" and delay == pytest.approx(15)
    for n in range(4):
        pacer.record("aapl", n)
    delay, reason = pacer.delay("aapl", "other")
    assert reason == "HISTORY_BURST" and 0 < delay <= 2
    assert pacer.delay("msft", "other") == (0.0, "")  # another contract is not held
    clock.now += 2
    assert pacer.delay("aapl", "other") == (0.0, "")


def test_an_ib_violation_holds_every_request() -> None:
    clock = Clock()
    pacer = HistoricalPacer(60, clock=clock)
    pacer.penalize(15)
    delay, reason = pacer.delay("x", "y")
    assert reason == "IB_PACING_PENALTY" and delay == pytest.approx(15)
    clock.now += 15
    assert pacer.delay("x", "y") == (0.0, "")


def test_intraday_bars_are_exact_and_completed_once_their_period_is_over() -> None:
    spec = BAR_SIZES[market_data_pb2.BAR_SIZE_1_MINUTE]
    start = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
    bar = BarData(
        date=start, open=189.1, high=189.25, low=189.0, close=189.2, volume=1200.0,
        average=189.1234, barCount=17,
    )  # fmt: skip
    tz = zone("US/Eastern")
    forming = bar_to_proto(bar, spec, tz, start + timedelta(seconds=30))
    assert forming.open.value == "189.1" and forming.wap.value == "189.1234"
    assert forming.volume.value == "1200" and forming.bar_count == 17
    assert forming.time.ToDatetime(tzinfo=UTC) == start and not forming.trade_date
    assert not forming.completed
    assert bar_to_proto(bar, spec, tz, start + timedelta(seconds=60)).completed


def test_daily_bars_carry_their_session_date_and_no_volume_means_empty() -> None:
    spec = BAR_SIZES[market_data_pb2.BAR_SIZE_1_DAY]
    bar = BarData(
        date=date(2026, 11, 27), open=1.08, high=1.09, low=1.07, close=1.085, volume=-1,
        average=-1, barCount=-1,
    )  # fmt: skip
    tz = zone("US/Eastern")
    message = bar_to_proto(bar, spec, tz, datetime(2026, 11, 30, tzinfo=UTC))
    assert message.trade_date == "20261127" and message.completed
    assert message.time.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    assert (message.volume.value, message.wap.value, message.bar_count) == ("", "", 0)
    monthly = bar_to_proto(
        bar, BAR_SIZES[market_data_pb2.BAR_SIZE_1_MONTH], tz, datetime(2026, 11, 30, tzinfo=UTC)
    )
    assert not monthly.completed  # November is not over yet
