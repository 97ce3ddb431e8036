"""Where the simulator's historical bars come from: its own recorded market, and before it
started, a synthetic past that is deterministic with the seed.

* :class:`Tape` records one instrument's live market from the moment the simulator starts,
  into 1-second cells (the last hour) and 1-minute cells (the last two days). The first
  cell carries the day's volume so far, traded at the open, so today's bars agree with
  the quote: the day's high, low, open, last and volume are the same numbers.
* :class:`SyntheticPast` makes up the trading days before the simulator's first day:
  15-minute cells on weekdays (a stock's 04:00-20:00 session, regular hours 09:30-16:00;
  a currency pair's whole day), chained backwards so that the last of those days closes
  (at 16:00) exactly at the quote's "previous close".
* A cell holds bid, ask and trade open/high/low/close, volume, trade count and
  price×volume (for the WAP); bars of any size are cells merged by :func:`merge`.

Pure data and arithmetic: nothing here touches a socket.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .instruments import Instrument
from .market import Quote

SECONDS_KEPT = 3600  # 1-second cells: IB's longest 1-second and 5-second requests
MINUTES_KEPT = 2 * 24 * 60
SYNTHETIC_CELL = 900  # seconds in one cell of the synthetic past
HISTORY_YEARS = 10  # how far back the synthetic past (and reqHeadTimestamp) goes
_DAY_CACHE = 64  # synthetic days whose cells are kept
_DAY_TOTALS_CACHE = 20_000

Ohlc = list[float]  # [open, high, low, close]


@dataclass(slots=True)
class Cell:
    """The market over [t, t + length): bid, ask and trades, as open/high/low/close."""

    t: int
    bid: Ohlc
    ask: Ohlc
    trade: Ohlc | None
    volume: float
    count: int
    pv: float  # sum of price × size, for the WAP

    def copy(self) -> Cell:
        return Cell(
            self.t,
            list(self.bid),
            list(self.ask),
            list(self.trade) if self.trade is not None else None,
            self.volume,
            self.count,
            self.pv,
        )


def _extend(into: Ohlc, later: Ohlc) -> None:
    if later[1] > into[1]:
        into[1] = later[1]
    if later[2] < into[2]:
        into[2] = later[2]
    into[3] = later[3]


def merge(cells: Iterable[Cell], t: int) -> Cell | None:
    """One cell spanning ``cells`` (in time order), starting at ``t``; None if empty."""
    out: Cell | None = None
    for cell in cells:
        if out is None:
            out = cell.copy()
            out.t = t
            continue
        _extend(out.bid, cell.bid)
        _extend(out.ask, cell.ask)
        if cell.trade is not None:
            if out.trade is None:
                out.trade = list(cell.trade)
            else:
                _extend(out.trade, cell.trade)
        out.volume += cell.volume
        out.count += cell.count
        out.pv += cell.pv
    return out


def _point(value: float) -> Ohlc:
    return [value, value, value, value]


def _reach(series: Ohlc, high: float | None, low: float | None) -> None:
    """Widen a series' range to the day's new extreme (its open and close stay)."""
    if high is not None and high > series[1]:
        series[1] = high
    if low is not None and low < series[2]:
        series[2] = low


def _touch(series: Ohlc, value: float) -> None:
    if value > series[1]:
        series[1] = value
    elif value < series[2]:
        series[2] = value
    series[3] = value


class Tape:
    """One instrument's live market since the simulator started, in cells."""

    __slots__ = (
        "_high",
        "_last_price",
        "_last_volume",
        "_low",
        "_trades",
        "minutes",
        "seconds",
        "start",
        "tick",
    )

    def __init__(self, inst: Instrument, quote: Quote, now: int) -> None:
        self.tick = inst.min_tick
        self.seconds: deque[Cell] = deque(maxlen=SECONDS_KEPT)
        self.minutes: deque[Cell] = deque(maxlen=MINUTES_KEPT)
        self._trades = not inst.is_cash
        self.start = now
        # The day's volume before we started counts as traded at the open.
        self._last_volume = 0.0
        self._last_price = math.nan
        self._high = -math.inf
        self._low = math.inf
        self.record(quote, now)

    def record(self, quote: Quote, now: int) -> None:
        """Take one quote change into the current second's and minute's cells."""
        size = 0.0
        traded = False
        if self._trades:
            volume = float(quote.volume)
            size = max(0.0, volume - self._last_volume)
            traded = size > 0 or quote.last != self._last_price
            self._last_volume = volume
            self._last_price = quote.last
        # The quote's day range brackets bid and ask too: the trade series reaches it, so
        # today's bars and the quote agree on the day's high and low.
        new_high = quote.high if quote.high > self._high else None
        new_low = quote.low if quote.low < self._low else None
        reach = self._trades and (new_high is not None or new_low is not None)
        self._high, self._low = max(self._high, quote.high), min(self._low, quote.low)
        for cells, t in ((self.seconds, now), (self.minutes, now - now % 60)):
            cell = cells[-1] if cells else None
            if reach and cell is not None and cell.t == t:
                if cell.trade is None:
                    cell.trade = _point(quote.last)
                _reach(cell.trade, new_high, new_low)
            if cell is None or cell.t != t:
                trade = _point(quote.last) if traded or reach else None
                if trade is not None and reach:
                    _reach(trade, new_high, new_low)
                cells.append(
                    Cell(
                        t,
                        _point(quote.bid),
                        _point(quote.ask),
                        trade,
                        size,
                        1 if traded else 0,
                        quote.last * size,
                    )
                )
                continue
            _touch(cell.bid, quote.bid)
            _touch(cell.ask, quote.ask)
            if traded:
                if cell.trade is None:
                    cell.trade = _point(quote.last)
                else:
                    _touch(cell.trade, quote.last)
                cell.volume += size
                cell.count += 1
                cell.pv += quote.last * size

    def cells(self, resolution: int, start: int, end: int) -> list[Cell]:
        """Recorded cells of ``resolution`` (1 or 60) seconds overlapping [start, end)."""
        if resolution >= 60:
            return [c for c in self.minutes if start <= c.t + 59 and c.t < end]
        out: list[Cell] = []
        if len(self.seconds) == self.seconds.maxlen:
            # older seconds have been dropped: cut the minutes before them
            first_second = self.seconds[0].t
            for minute in self.minutes:
                if start < minute.t + 60 and minute.t + 60 <= min(end, first_second):
                    out.extend(
                        c for c in split(minute, 60, 60, minute.t, self.tick) if start <= c.t
                    )
        out.extend(c for c in self.seconds if start <= c.t < end)
        return out


def price_rounder(tick: float) -> Callable[[float], float]:
    """Rounds a price to the tick grid (and drops binary noise: 0.1 + 0.2 → 0.3)."""
    decimals = max(0, -math.floor(math.log10(tick) + 1e-9))

    def to_grid(value: float) -> float:
        return round(round(value / tick) * tick, decimals)

    return to_grid


def split(cell: Cell, length: int, parts: int, seed: int, tick: float) -> list[Cell]:
    """Cut a cell of ``length`` seconds into ``parts`` equal ones, deterministically.

    Each series goes from the cell's open to its close inside its high/low; one part
    reaches the high and one the low, so merging the parts gives the cell back.
    """
    rng = random.Random(seed)
    high_at, low_at = rng.randrange(parts), rng.randrange(parts)
    noise = [rng.gauss(0.0, 0.35) for _ in range(parts - 1)]
    weights = [rng.random() + 0.2 for _ in range(parts)]
    step = length // parts
    to_grid = price_rounder(tick)

    def shape(series: Ohlc) -> list[Ohlc]:
        o, h, lo, c = series
        points = [o]
        for k in range(1, parts):
            mid = o + (c - o) * k / parts + noise[k - 1] * (h - lo)
            points.append(to_grid(min(h, max(lo, mid))))
        points.append(c)
        out = [
            [points[k], max(points[k], points[k + 1]), min(points[k], points[k + 1]), points[k + 1]]
            for k in range(parts)
        ]
        out[high_at][1] = h
        out[low_at][2] = lo
        return out

    bids, asks = shape(cell.bid), shape(cell.ask)
    trades = shape(cell.trade) if cell.trade is not None else None
    total = sum(weights)
    volumes = [float(math.floor(cell.volume * w / total)) for w in weights]
    volumes[-1] += cell.volume - sum(volumes)
    counts = [math.floor(cell.count * w / total) for w in weights]
    counts[-1] += cell.count - sum(counts)
    wap = cell.pv / cell.volume if cell.volume else 0.0
    return [
        Cell(
            cell.t + k * step,
            bids[k],
            asks[k],
            trades[k] if trades is not None else None,
            volumes[k],
            counts[k],
            wap * volumes[k],
        )
        for k in range(parts)
    ]


@dataclass(frozen=True)
class _DayAnchor:
    open: float  # at the session's start
    close: float  # at the regular session's close (16:00 for stocks)
    last: float  # at the session's end (20:00 for stocks)


class SyntheticPast:
    """The trading days before the simulator's first day, made up from the seed."""

    def __init__(self, inst: Instrument, seed: int, first_day: date, previous_close: float) -> None:
        self.inst = inst
        self.tz = ZoneInfo(inst.time_zone_id)
        self.first_day = first_day
        self._seed = seed
        self._tick = inst.min_tick
        self._decimals = max(0, -math.floor(math.log10(inst.min_tick) + 1e-9))
        self._half_spread = inst.spread_ticks * inst.min_tick / 2
        self._vol = 0.0015 if inst.is_cash else 0.015  # daily, as a fraction
        self._anchors: dict[date, _DayAnchor] = {}
        self._oldest: date | None = None
        self._days: OrderedDict[date, list[Cell]] = OrderedDict()
        self._totals: OrderedDict[tuple[date, bool], Cell | None] = OrderedDict()
        last = self.previous_trading_day(first_day)
        r, after, _gap = self._moves(last)
        self._anchors[last] = _DayAnchor(
            previous_close / math.exp(r), previous_close, previous_close * math.exp(after)
        )
        self._oldest = last
        self.earliest_day = self._earliest(first_day)

    # -- calendar ------------------------------------------------------------------------

    @staticmethod
    def trading_day(day: date) -> bool:
        return day.weekday() < 5

    def previous_trading_day(self, day: date) -> date:
        day -= timedelta(days=1)
        while not self.trading_day(day):
            day -= timedelta(days=1)
        return day

    def _earliest(self, first_day: date) -> date:
        day = first_day.replace(year=first_day.year - HISTORY_YEARS)
        while not self.trading_day(day):
            day += timedelta(days=1)
        return day

    def session(self, day: date, rth: bool) -> tuple[int, int]:
        """The session's [start, end) in epoch seconds (regular hours when ``rth``)."""
        if self.inst.is_cash:
            begin, finish = time(0, 0), None
        elif rth:
            begin, finish = time(9, 30), time(16, 0)
        else:
            begin, finish = time(4, 0), time(20, 0)
        start = int(datetime.combine(day, begin, self.tz).timestamp())
        if finish is None:
            end = int(datetime.combine(day + timedelta(days=1), time(0, 0), self.tz).timestamp())
        else:
            end = int(datetime.combine(day, finish, self.tz).timestamp())
        return start, end

    # -- prices --------------------------------------------------------------------------

    def _rng(self, day: date, what: str) -> random.Random:
        return random.Random(f"{self._seed}:{self.inst.con_id}:{day.toordinal()}:{what}")

    def _moves(self, day: date) -> tuple[float, float, float]:
        """(open→close, close→session end, previous session end→open) log returns."""
        rng = self._rng(day, "day")
        after = 0.0 if self.inst.is_cash else rng.gauss(0.0, self._vol / 5)
        return rng.gauss(0.0, self._vol), after, rng.gauss(0.0, self._vol / 4)

    def anchor(self, day: date) -> _DayAnchor:
        """The day's open, regular close and session-end prices (walking back as needed)."""
        found = self._anchors.get(day)
        if found is not None:
            return found
        assert self._oldest is not None
        while self._oldest > day:
            newer = self._oldest
            newer_anchor = self._anchors[newer]
            _r, _after, gap = self._moves(newer)
            older = self.previous_trading_day(newer)
            r, after, _g = self._moves(older)
            last = newer_anchor.open / math.exp(gap)
            close = last / math.exp(after)
            self._anchors[older] = _DayAnchor(close / math.exp(r), close, last)
            self._oldest = older
        return self._anchors[day]

    def _price(self, value: float) -> float:
        return round(round(value / self._tick) * self._tick, self._decimals)

    def day_cells(self, day: date) -> list[Cell]:
        """The 5-minute cells of one trading day's whole session (cached)."""
        cached = self._days.get(day)
        if cached is not None:
            self._days.move_to_end(day)
            return cached
        cells = self._make_day(day)
        self._days[day] = cells
        if len(self._days) > _DAY_CACHE:
            self._days.popitem(last=False)
        return cells

    def _make_day(self, day: date) -> list[Cell]:
        anchor = self.anchor(day)
        start, end = self.session(day, rth=False)
        n = (end - start) // SYNTHETIC_CELL
        if self.inst.is_cash:
            legs = [(n, anchor.open, anchor.close)]
        else:
            close_at = (self.session(day, rth=True)[1] - start) // SYNTHETIC_CELL
            legs = [
                (close_at, anchor.open, anchor.close),
                (n - close_at, anchor.close, anchor.last),
            ]
        rng = self._rng(day, "intraday")
        sigma = self._vol / math.sqrt(n)
        path: list[float] = []
        for count, a, b in legs:
            la, lb = math.log(a), math.log(b)
            steps = [rng.gauss(0.0, sigma) for _ in range(count)]
            total = sum(steps)
            level = 0.0
            if not path:
                path.append(la)
            for k, e in enumerate(steps, 1):
                level += e
                path.append(la + level - total * k / count + (lb - la) * k / count)
        lot = self.inst.lot_size
        cells: list[Cell] = []
        rth_start, rth_end = self.session(day, rth=True)
        for k in range(n):
            t = start + k * SYNTHETIC_CELL
            o, c = math.exp(path[k]), math.exp(path[k + 1])
            wiggle = abs(rng.gauss(0.0, sigma)) * 0.5
            mid = [o, max(o, c) * math.exp(wiggle), min(o, c) * math.exp(-wiggle), c]
            bid = [self._price(p - self._half_spread) for p in mid]
            ask = [round(b + 2 * self._half_spread, self._decimals) for b in bid]
            trade: Ohlc | None = None
            volume, count, pv = 0.0, 0, 0.0
            if not self.inst.is_cash:
                trade = [self._price(p) for p in mid]
                busy = 4 if rth_start <= t < rth_end else 1
                count = rng.randint(5, 40) * busy
                volume = float(lot * count * rng.randint(1, 4))
                pv = volume * (trade[1] + trade[2] + trade[3]) / 3
            cells.append(Cell(t, bid, ask, trade, volume, count, pv))
        return cells

    def cells(self, resolution: int, start: int, end: int, rth: bool) -> list[Cell]:
        """Cells of ``resolution`` seconds (1, 60 or 300) overlapping [start, end)."""
        out: list[Cell] = []
        first = max(self.earliest_day, datetime.fromtimestamp(start, self.tz).date())
        last = min(
            self.previous_trading_day(self.first_day),
            datetime.fromtimestamp(max(start, end - 1), self.tz).date(),
        )
        day = first
        while day <= last:
            if self.trading_day(day):
                lo, hi = self.session(day, rth)
                if lo < end and hi > start:
                    for cell in self.day_cells(day):
                        if not (lo <= cell.t < hi) or cell.t + SYNTHETIC_CELL <= start:
                            continue
                        if cell.t >= end:
                            break
                        if resolution >= SYNTHETIC_CELL:
                            out.append(cell)
                            continue
                        parts = SYNTHETIC_CELL // resolution
                        out.extend(
                            c
                            for c in split(cell, SYNTHETIC_CELL, parts, cell.t, self._tick)
                            if start <= c.t + resolution - 1 and c.t < end
                        )
            day += timedelta(days=1)
        return out

    def day_total(self, day: date, rth: bool) -> Cell | None:
        """The whole (or regular-hours) session of a synthetic day as one cell (cached)."""
        key = (day, rth)
        if key in self._totals:
            return self._totals[key]
        total: Cell | None = None
        if self.trading_day(day) and self.earliest_day <= day < self.first_day:
            lo, hi = self.session(day, rth)
            total = merge((c for c in self.day_cells(day) if lo <= c.t < hi), lo)
        self._totals[key] = total
        if len(self._totals) > _DAY_TOTALS_CACHE:
            self._totals.popitem(last=False)
        return total
