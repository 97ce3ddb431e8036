"""Bars in IB's vocabulary and in ours: bar sizes, durations, what-to-show values, the
longest duration IB serves per bar size, and the conversion of ib_insync bars to protos.

Pure: no I/O, no session.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.ib.convert import decimal_text, timestamp
from ibgateway_server.ib.insync import isNan

DAY = 86_400
MONTH = 31 * DAY
YEAR = 366 * DAY


@dataclass(frozen=True)
class BarSpec:
    """One IB bar size: its barSizeSetting text, its length, and the longest duration IB
    serves in one request with it (IB's "valid duration and bar size settings")."""

    ib_text: str
    seconds: int  # DAY, 7 * DAY or MONTH for calendar bars
    max_seconds: int
    max_text: str  # the longest duration, as a client writes it

    @property
    def calendar(self) -> bool:
        return self.seconds >= DAY


_B = market_data_pb2
BAR_SIZES: dict[int, BarSpec] = {
    _B.BAR_SIZE_1_SECOND: BarSpec("1 secs", 1, 1800, "1800 seconds"),
    _B.BAR_SIZE_5_SECONDS: BarSpec("5 secs", 5, 3600, "3600 seconds"),
    _B.BAR_SIZE_10_SECONDS: BarSpec("10 secs", 10, 14400, "14400 seconds"),
    _B.BAR_SIZE_15_SECONDS: BarSpec("15 secs", 15, 14400, "14400 seconds"),
    _B.BAR_SIZE_30_SECONDS: BarSpec("30 secs", 30, 28800, "28800 seconds"),
    _B.BAR_SIZE_1_MINUTE: BarSpec("1 min", 60, DAY, "1 day"),
    _B.BAR_SIZE_2_MINUTES: BarSpec("2 mins", 120, 2 * DAY, "2 days"),
    _B.BAR_SIZE_3_MINUTES: BarSpec("3 mins", 180, 7 * DAY, "1 week"),
    _B.BAR_SIZE_5_MINUTES: BarSpec("5 mins", 300, 7 * DAY, "1 week"),
    _B.BAR_SIZE_10_MINUTES: BarSpec("10 mins", 600, 7 * DAY, "1 week"),
    _B.BAR_SIZE_15_MINUTES: BarSpec("15 mins", 900, 7 * DAY, "1 week"),
    _B.BAR_SIZE_20_MINUTES: BarSpec("20 mins", 1200, 7 * DAY, "1 week"),
    _B.BAR_SIZE_30_MINUTES: BarSpec("30 mins", 1800, MONTH, "1 month"),
    _B.BAR_SIZE_1_HOUR: BarSpec("1 hour", 3600, MONTH, "1 month"),
    _B.BAR_SIZE_2_HOURS: BarSpec("2 hours", 7200, MONTH, "1 month"),
    _B.BAR_SIZE_3_HOURS: BarSpec("3 hours", 10800, MONTH, "1 month"),
    _B.BAR_SIZE_4_HOURS: BarSpec("4 hours", 14400, MONTH, "1 month"),
    _B.BAR_SIZE_8_HOURS: BarSpec("8 hours", 28800, MONTH, "1 month"),
    _B.BAR_SIZE_1_DAY: BarSpec("1 day", DAY, 20 * YEAR, "20 years"),
    _B.BAR_SIZE_1_WEEK: BarSpec("1 week", 7 * DAY, 20 * YEAR, "20 years"),
    _B.BAR_SIZE_1_MONTH: BarSpec("1 month", MONTH, 20 * YEAR, "20 years"),
}

WHAT_TO_SHOW: dict[int, str] = {
    _B.WHAT_TO_SHOW_TRADES: "TRADES",
    _B.WHAT_TO_SHOW_MIDPOINT: "MIDPOINT",
    _B.WHAT_TO_SHOW_BID: "BID",
    _B.WHAT_TO_SHOW_ASK: "ASK",
    _B.WHAT_TO_SHOW_BID_ASK: "BID_ASK",
    _B.WHAT_TO_SHOW_ADJUSTED_LAST: "ADJUSTED_LAST",
    _B.WHAT_TO_SHOW_HISTORICAL_VOLATILITY: "HISTORICAL_VOLATILITY",
    _B.WHAT_TO_SHOW_OPTION_IMPLIED_VOLATILITY: "OPTION_IMPLIED_VOLATILITY",
}

# unit → (IB letter, seconds per unit as IB's limits count them)
DURATION_UNITS: dict[int, tuple[str, int]] = {
    _B.DURATION_UNIT_SECOND: ("S", 1),
    _B.DURATION_UNIT_DAY: ("D", DAY),
    _B.DURATION_UNIT_WEEK: ("W", 7 * DAY),
    _B.DURATION_UNIT_MONTH: ("M", MONTH),
    _B.DURATION_UNIT_YEAR: ("Y", YEAR),
}


def what_to_show_for(value: int, sec_type: str) -> str:
    """IB's whatToShow; unspecified is trades, or midpoints for a currency pair."""
    if value == _B.WHAT_TO_SHOW_UNSPECIFIED:
        return "MIDPOINT" if sec_type == "CASH" else "TRADES"
    return WHAT_TO_SHOW[value]


def duration_text(count: int, unit: int) -> str:
    return f"{count} {DURATION_UNITS[unit][0]}"


def duration_seconds(count: int, unit: int) -> int:
    return count * DURATION_UNITS[unit][1]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _bar_start_end(
    moment: date | datetime, spec: BarSpec, tz: ZoneInfo
) -> tuple[datetime, datetime]:
    if isinstance(moment, datetime):
        start = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return start, start + timedelta(seconds=spec.seconds)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=tz)
    if spec.seconds == MONTH:
        days = calendar.monthrange(moment.year, moment.month)[1] - moment.day + 1
        return start, start + timedelta(days=days)
    return start, start + timedelta(seconds=spec.seconds)


def _number(value: float | None) -> str:
    """A bar value as an exact decimal; IB's -1 ("none") and NaN become empty."""
    if value is None or isNan(value) or value == -1:
        return ""
    return decimal_text(value)


def bar_to_proto(
    bar: object, spec: BarSpec, tz: ZoneInfo, now: datetime, *, completed: bool | None = None
) -> market_data_pb2.Bar:
    """An ib_insync BarData (or RealTimeBar) as a Bar; ``completed`` defaults to "the
    bar's period is over at ``now``"."""
    moment = getattr(bar, "date", None) or getattr(bar, "time", None)
    assert isinstance(moment, date)
    start, end = _bar_start_end(moment, spec, tz)
    opened = getattr(bar, "open", None)
    if opened is None:
        opened = getattr(bar, "open_", 0.0)
    wap = getattr(bar, "average", None)
    if wap is None:
        wap = getattr(bar, "wap", -1)
    count = getattr(bar, "barCount", None)
    if count is None:
        count = getattr(bar, "count", 0)
    return market_data_pb2.Bar(
        time=timestamp(start),
        open=_decimal(opened),
        high=_decimal(getattr(bar, "high", 0.0)),
        low=_decimal(getattr(bar, "low", 0.0)),
        close=_decimal(getattr(bar, "close", 0.0)),
        volume=_decimal(getattr(bar, "volume", -1)),
        wap=_decimal(wap),
        bar_count=max(0, int(count or 0)),
        trade_date="" if isinstance(moment, datetime) else moment.strftime("%Y%m%d"),
        completed=end <= now if completed is None else completed,
    )


def _decimal(value: float | None) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=_number(value))
