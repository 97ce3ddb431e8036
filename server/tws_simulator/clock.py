"""The simulated clock and the trading hours of each instrument.

:class:`SimClock` is the simulator's "now": the wall clock plus an offset, so it moves in
real time but can start at a chosen moment (``SimulatorConfig.clock_start``) and be set or
advanced by tests (``sim.clock.advance(3600)``). Order expiry (DAY, GTD), the open and
close auctions and the session phases all read it; listeners hear every jump.

Trading hours (US/Eastern, no exchange holidays):

* US stocks (STK): pre-market 04:00-09:30, regular trading hours (RTH) 09:30-16:00,
  after-hours 16:00-20:00, Monday to Friday; closed otherwise. The opening auction runs
  at 09:30 (OPG orders), the closing auction at 16:00 (MOC / LOC orders).
* Forex (CASH, IDEALPRO): Sunday 17:15 to Friday 17:00 with a daily break 17:00-17:15;
  the whole session counts as regular hours; its "close" (DAY expiry) is 17:00.
* CME futures and futures options (FUT, FOP): Globex Sunday 18:00 to Friday 17:00 with a
  daily break 17:00-18:00; regular hours 09:30-16:00 (08:30-15:00 Central), the rest of
  the session is extended hours (outside-RTH DAY orders expire at 17:00). No auctions.
* US options (OPT): regular hours only, 09:30-16:00, Monday to Friday.

These are the hours ``reqContractDetails`` reports (contracts.trading_hours).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from datetime import time as day_time
from enum import Enum
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("US/Eastern")

ClockListener = Callable[[float, float], None]  # (before, after) epoch seconds


class SimClock:
    """The simulator's time: the wall clock shifted by an offset tests can change."""

    def __init__(self, start: float | None = None, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._offset = 0.0 if start is None else start - wall()
        self._listeners: list[ClockListener] = []

    def now(self) -> float:
        return self._wall() + self._offset

    def set(self, epoch: float) -> None:
        """Jump to ``epoch`` (forwards or backwards); listeners run at once."""
        before = self.now()
        self._offset = epoch - self._wall()
        after = self.now()
        for fn in list(self._listeners):
            fn(before, after)

    def advance(self, seconds: float) -> None:
        self.set(self.now() + seconds)

    def add_listener(self, fn: ClockListener) -> Callable[[], None]:
        self._listeners.append(fn)

        def remove() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return remove


def eastern(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Epoch seconds of a US/Eastern wall time (tests set the clock with it)."""
    return datetime(year, month, day, hour, minute, tzinfo=EASTERN).timestamp()


class Phase(Enum):
    """Where an instrument's trading day is."""

    CLOSED = "closed"
    EXTENDED = "extended"  # pre-market or after-hours
    REGULAR = "regular"


class Boundary(Enum):
    """A moment the order desk acts on."""

    OPEN = "open"  # regular hours begin (opening auction for stocks)
    CLOSE = "close"  # regular hours end (closing auction; DAY orders expire)
    EXTENDED_CLOSE = "extended_close"  # after-hours end (outside-RTH DAY orders expire)


_STK_EXT_OPEN = day_time(4, 0)
_STK_OPEN = day_time(9, 30)
_STK_CLOSE = day_time(16, 0)
_STK_EXT_CLOSE = day_time(20, 0)
_FX_CLOSE = day_time(17, 0)
_FX_OPEN = day_time(17, 15)
_CME_CLOSE = day_time(17, 0)
_CME_OPEN = day_time(18, 0)
_FUTURES = frozenset({"FUT", "FOP"})


def _at(day: date, clock: day_time) -> float:
    return datetime.combine(day, clock, tzinfo=EASTERN).timestamp()


def phase(sec_type: str, epoch: float) -> Phase:
    """The session phase of an instrument type at ``epoch``."""
    moment = datetime.fromtimestamp(epoch, EASTERN)
    weekday, now = moment.weekday(), moment.time()
    if sec_type == "CASH":
        if weekday == 5:
            return Phase.CLOSED
        if weekday == 6:
            return Phase.REGULAR if now >= _FX_OPEN else Phase.CLOSED
        if weekday == 4 and now >= _FX_CLOSE:
            return Phase.CLOSED
        return Phase.CLOSED if _FX_CLOSE <= now < _FX_OPEN else Phase.REGULAR
    if sec_type in _FUTURES:
        if weekday == 5 or (weekday == 4 and now >= _CME_CLOSE):
            return Phase.CLOSED
        if weekday == 6:
            return Phase.EXTENDED if now >= _CME_OPEN else Phase.CLOSED
        if _STK_OPEN <= now < _STK_CLOSE:
            return Phase.REGULAR
        return Phase.CLOSED if _CME_CLOSE <= now < _CME_OPEN else Phase.EXTENDED
    if weekday >= 5:
        return Phase.CLOSED
    if _STK_OPEN <= now < _STK_CLOSE:
        return Phase.REGULAR
    if sec_type != "OPT" and _STK_EXT_OPEN <= now < _STK_EXT_CLOSE:
        return Phase.EXTENDED
    return Phase.CLOSED


def boundaries(sec_type: str, after: float, until: float) -> list[tuple[float, Boundary]]:
    """The session boundaries in (after, until], in time order."""
    if until <= after:
        return []
    first = datetime.fromtimestamp(after, EASTERN).date()
    last = datetime.fromtimestamp(until, EASTERN).date()
    found: list[tuple[float, Boundary]] = []
    day = first
    while day <= last:
        weekday = day.weekday()
        if sec_type == "CASH":
            if weekday < 5:
                found.append((_at(day, _FX_CLOSE), Boundary.CLOSE))
            if weekday in (0, 1, 2, 3, 6):
                found.append((_at(day, _FX_OPEN), Boundary.OPEN))
        elif sec_type in _FUTURES:
            if weekday < 5:
                found.append((_at(day, _STK_OPEN), Boundary.OPEN))
                found.append((_at(day, _STK_CLOSE), Boundary.CLOSE))
                found.append((_at(day, _CME_CLOSE), Boundary.EXTENDED_CLOSE))
        elif weekday < 5:
            found.append((_at(day, _STK_OPEN), Boundary.OPEN))
            found.append((_at(day, _STK_CLOSE), Boundary.CLOSE))
            found.append((_at(day, _STK_EXT_CLOSE), Boundary.EXTENDED_CLOSE))
        day += timedelta(days=1)
    return sorted((t, b) for t, b in found if after < t <= until)


def next_close(sec_type: str, epoch: float) -> float:
    """The next regular-hours close at or after ``epoch`` (when a DAY order expires)."""
    horizon = epoch + 8 * 86400  # always contains a close, weekends included
    for moment, kind in boundaries(sec_type, epoch - 1e-6, horizon):
        if kind is Boundary.CLOSE:
            return moment
    return horizon


def parse_good_till(text: str, default_zone: ZoneInfo = EASTERN) -> float | None:
    """IB's goodTillDate ("yyyymmdd hh:mm:ss [Zone]", or "yyyymmdd-hh:mm:ss" in UTC) as
    epoch seconds; None when it cannot be read."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) >= 17 and text[8] == "-":
            moment = datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=ZoneInfo("UTC"))
            return moment.timestamp()
        stamp, _, rest = text.partition(" ")
        clock, _, zone = rest.partition(" ")
        tz = ZoneInfo(zone) if zone else default_zone
        moment = datetime.strptime(f"{stamp} {clock or '00:00:00'}", "%Y%m%d %H:%M:%S")
        return moment.replace(tzinfo=tz).timestamp()
    except (ValueError, KeyError):
        return None
