"""Historical data requests: reqHistoricalData (and its keepUpToDate updates),
reqRealTimeBars, reqHeadTimestamp, with IB's limits and pacing errors.

Layouts (server versions 157-178, as ib_insync's and ib_async's decoders read them):

* historicalData (17): reqId, start, end, count, then per bar: date, open, high, low,
  close, volume, WAP, barCount (no version field since server version 124).
  ``date`` is "yyyyMMdd" for daily and longer bars; for shorter ones epoch seconds
  (formatDate=2) or "yyyyMMdd HH:mm:ss <exchange time zone>" (formatDate=1), as
  TWS 10.x writes it.
* historicalDataUpdate (90): reqId, barCount, date, open, close, high, low, WAP, volume.
* realtimeBar (50): version 3, reqId, time, open, high, low, close, volume, WAP, count.
* headTimestamp (88): reqId, timestamp.

Bars come from :mod:`history_data`: the simulator's own market since it started (so the
last bar ends at the live price and today's bar agrees with the quote's high, low and
volume), and a seeded synthetic past before that. The simulator's market is open while
it runs, whatever the clock says: its own session counts as regular trading hours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .contracts import parse_contract, resolve
from .dispatch import RequestError
from .history_data import SYNTHETIC_CELL, Cell, SyntheticPast, Tape, merge
from .instruments import Instrument
from .market import Quote
from .message_ids import In, Out
from .wire import fmt_float

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

HMDS = "Historical Market Data Service error message:"
PACING = (162, f"{HMDS}Historical data request pacing violation")
TOO_LONG = (162, f"{HMDS}Time length exceed max.")
BAD_END = (
    162,
    f"{HMDS}End Date/Time: The date, time, or time-zone entered is invalid. The correct "
    "format is yyyymmdd hh:mm:ss xx/xxxx where yyyymmdd and xx/xxxx are optional. "
    "E.g.: 20031126 15:59:00 US/Eastern",
)
BAD_DURATION = (162, f"{HMDS}Invalid duration string")
HMDS_DOWN = (162, f"{HMDS}HMDS server disconnect occurred.  Attempting reconnection...")
END_WITH_UPDATES = (
    321,
    "Error validating request.-'bX' : cause - End date not supported with live updates",
)
RT_PACING = (420, "Invalid Real-time Query: Historical data request pacing violation")

# IB's bar sizes (seconds; 0 = calendar: day, week, month) and the longest duration IB
# serves in one request for each (IB's "valid duration and bar size settings" table;
# daily and longer bars: up to the start of the simulator's past).
BAR_SIZES: dict[str, int] = {
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": 86400,
    "1 week": 7 * 86400,
    "1 month": 31 * 86400,
}
DAY, WEEK, MONTH = 86400, 7 * 86400, 31 * 86400
_MAX_SECONDS: dict[int, int] = {
    1: 1800,
    5: 3600,
    10: 14400,
    15: 14400,
    30: 28800,
    60: DAY,
    120: 2 * DAY,
    180: WEEK,
    300: WEEK,
    600: WEEK,
    900: WEEK,
    1200: WEEK,
    1800: 31 * DAY,
    3600: 31 * DAY,
    7200: 31 * DAY,
    10800: 31 * DAY,
    14400: 31 * DAY,
    28800: 31 * DAY,
}
_UNIT_SECONDS = {"S": 1, "D": DAY, "W": WEEK, "M": 31 * DAY, "Y": 366 * DAY}
WHAT_TO_SHOW = frozenset(
    {
        "TRADES",
        "MIDPOINT",
        "BID",
        "ASK",
        "BID_ASK",
        "ADJUSTED_LAST",
        "HISTORICAL_VOLATILITY",
        "OPTION_IMPLIED_VOLATILITY",
    }
)
REALTIME_WHAT_TO_SHOW = frozenset({"TRADES", "MIDPOINT", "BID", "ASK"})
_TRADES = frozenset({"TRADES", "ADJUSTED_LAST"})
IDENTICAL_WINDOW = 15.0
SAME_CONTRACT_WINDOW = (2.0, 6)  # six requests for one contract within 2 s: violation
PACING_WINDOW = 600.0
REALTIME_BAR_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar as TWS sends it (volume, WAP and count are -1 where they mean nothing)."""

    t: int  # start, epoch seconds
    day: date | None  # the session date of a daily or longer bar
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


@dataclass
class Request:
    conn: ClientConnection
    req_id: int
    inst: Instrument
    bar_size: int
    what: str
    rth: bool
    format_date: int
    last: Bar | None = None


@dataclass
class _Pacing:
    times: deque[float] = field(default_factory=deque)
    recent: deque[tuple[float, tuple[str, ...]]] = field(default_factory=deque)


def parse_duration(text: str) -> tuple[int, str]:
    match = re.fullmatch(r"\s*(\d+)\s+([SDWMY])\s*", text.upper())
    if match is None or int(match.group(1)) <= 0:
        raise RequestError(*BAD_DURATION)
    return int(match.group(1)), match.group(2)


def parse_end(text: str, tz: ZoneInfo, now: float) -> int:
    """The request's end time: empty means now; else IB's date formats."""
    text = text.strip()
    if not text:
        return int(now)
    match = re.fullmatch(r"(\d{8})(?:[ -]+(\d{1,2}:\d{2}:\d{2}))?(?:\s+(\S+))?", text)
    if match is None:
        raise RequestError(*BAD_END)
    day, clock, zone = match.groups()
    try:
        if zone is not None:
            where: ZoneInfo = ZoneInfo("UTC") if zone in ("UTC", "GMT") else ZoneInfo(zone)
        elif "-" in text:
            where = ZoneInfo("UTC")  # "yyyymmdd-hh:mm:ss" is UTC
        else:
            where = tz
        moment = datetime.strptime(f"{day} {clock or '23:59:59'}", "%Y%m%d %H:%M:%S")
    except (ValueError, ZoneInfoNotFoundError):
        raise RequestError(*BAD_END) from None
    return int(moment.replace(tzinfo=where).timestamp())


def _round(value: float, tick: float) -> float:
    decimals = max(0, -math.floor(math.log10(tick) + 1e-9))
    return round(round(value / tick) * tick, decimals)


class History:
    """Every instrument's tape and past, and every live bar subscription."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        config = sim.config
        self.seed = config.seed if config.seed is not None else random.getrandbits(32)
        self.clock: Callable[[], float] = sim.clock.now
        now = int(self.clock())
        self.tapes: dict[int, Tape] = {}
        self.pasts: dict[int, SyntheticPast] = {}
        for inst in sim.universe.instruments:
            self._track(inst, now)
        self.updates: dict[tuple[ClientConnection, int], Request] = {}
        self.realtime: dict[tuple[ClientConnection, int], Request] = {}
        self._pacing: dict[ClientConnection, _Pacing] = {}
        sim.market.add_listener(self.on_quote)
        sim.add_disconnect_listener(self.drop_client)
        sim.add_data_lost_listener(self.drop_all)
        sim.add_background(self._run_updates)
        sim.add_background(self._run_realtime)

    def _track(self, inst: Instrument, now: int) -> None:
        quote = self.sim.market.quote(inst.con_id)
        self.tapes[inst.con_id] = Tape(inst, quote, now)
        first_day = datetime.fromtimestamp(now, ZoneInfo(inst.time_zone_id)).date()
        self.pasts[inst.con_id] = SyntheticPast(inst, self.seed, first_day, quote.close)

    def tracked(self, inst: Instrument) -> Instrument:
        """Derivatives are priced on first use: their tape starts when first asked for."""
        if inst.con_id not in self.tapes:
            self._track(inst, int(self.clock()))
        return inst

    def on_quote(self, con_id: int, quote: Quote) -> None:
        tape = self.tapes.get(con_id)
        if tape is not None:
            tape.record(quote, int(self.clock()))

    # -- bars ----------------------------------------------------------------------------

    def cells(
        self, inst: Instrument, resolution: int, start: int, end: int, rth: bool
    ) -> list[Cell]:
        """Cells over [start, end): the synthetic past, then the recorded market."""
        tape = self.tapes[inst.con_id]
        out: list[Cell] = []
        if start < tape.start:
            out = self.pasts[inst.con_id].cells(resolution, start, min(end, tape.start), rth)
        return out + tape.cells(min(resolution, 60), start, end)

    def bars(
        self, inst: Instrument, bar_size: int, what: str, rth: bool, start: int, end: int
    ) -> list[Bar]:
        """The bars starting in [start, end) (the last one may still be forming)."""
        tz = ZoneInfo(inst.time_zone_id)
        if bar_size >= DAY:
            groups = self._day_groups(inst, bar_size, rth, start, end, tz)
        else:
            resolution = 1 if bar_size < 60 else 60 if bar_size % SYNTHETIC_CELL else SYNTHETIC_CELL
            buckets: dict[int, list[Cell]] = {}
            for cell in self.cells(inst, resolution, start, end, rth):
                offset = datetime.fromtimestamp(cell.t, tz).utcoffset()
                local = cell.t + int(offset.total_seconds() if offset else 0)
                buckets.setdefault(cell.t - local % bar_size, []).append(cell)
            groups = [
                (t, None, merged)
                for t, cells in sorted(buckets.items())
                if start <= t < end and (merged := merge(cells, t)) is not None
            ]
        return [bar for t, day, cell in groups if (bar := self._bar(inst, what, t, day, cell))]

    def _day_groups(
        self, inst: Instrument, bar_size: int, rth: bool, start: int, end: int, tz: ZoneInfo
    ) -> list[tuple[int, date | None, Cell]]:
        past = self.pasts[inst.con_id]
        tape = self.tapes[inst.con_id]
        days: dict[date, Cell] = {}
        first = max(past.earliest_day, datetime.fromtimestamp(start, tz).date())
        last = datetime.fromtimestamp(max(start, end - 1), tz).date()
        day = first
        while day <= last and day < past.first_day:
            total = past.day_total(day, rth)
            if total is not None:
                days[day] = total
            day += timedelta(days=1)
        recorded: dict[date, list[Cell]] = {}
        for cell in tape.minutes:
            if cell.t < end:
                recorded.setdefault(datetime.fromtimestamp(cell.t, tz).date(), []).append(cell)
        for day, cells in recorded.items():
            if first <= day <= last:
                merged = merge(cells, cells[0].t)
                if merged is not None:
                    days[day] = merged
        groups: dict[date, list[tuple[date, Cell]]] = {}
        for day, cell in sorted(days.items()):
            if bar_size == WEEK:
                key = day - timedelta(days=day.weekday())
            elif bar_size == MONTH:
                key = day.replace(day=1)
            else:
                key = day
            groups.setdefault(key, []).append((day, cell))
        out: list[tuple[int, date | None, Cell]] = []
        for members in groups.values():
            label = members[0][0]
            merged = merge((cell for _day, cell in members), members[0][1].t)
            if merged is not None:
                out.append((merged.t, label, merged))
        return out

    def _bar(self, inst: Instrument, what: str, t: int, day: date | None, cell: Cell) -> Bar | None:
        tick = inst.min_tick
        if what in _TRADES:
            if cell.trade is None:
                return None
            o, h, lo, c = cell.trade
            wap = cell.pv / cell.volume if cell.volume else c
            return Bar(t, day, o, h, lo, c, cell.volume, round(wap, 6), cell.count)
        if what == "BID":
            o, h, lo, c = cell.bid
        elif what == "ASK":
            o, h, lo, c = cell.ask
        elif what == "BID_ASK":
            # IB: time-average bid, highest ask, lowest bid, time-average ask.
            o = _round((cell.bid[0] + cell.bid[3]) / 2, tick)
            h, lo = cell.ask[1], cell.bid[2]
            c = _round((cell.ask[0] + cell.ask[3]) / 2, tick)
        elif what == "MIDPOINT":
            o, h, lo, c = ((b + a) / 2 for b, a in zip(cell.bid, cell.ask, strict=True))
            o, h, lo, c = (_round(p, tick / 2) for p in (o, h, lo, c))
        else:
            return self._volatility_bar(inst, what, t, day, cell)
        return Bar(t, day, o, h, lo, c, -1, -1, -1)

    def _volatility_bar(
        self, inst: Instrument, what: str, t: int, day: date | None, cell: Cell
    ) -> Bar:
        """Annualized volatility in the bar, from the bar's range around a base level."""
        base = 0.08 if inst.is_cash else 0.28
        mid_high = (cell.bid[1] + cell.ask[1]) / 2
        mid_low = (cell.bid[2] + cell.ask[2]) / 2
        spread = (mid_high - mid_low) / max(mid_low, 1e-9)
        level = base * (1 + min(1.0, spread * 20))
        if what == "OPTION_IMPLIED_VOLATILITY":
            level *= 1.12
        o, h, lo, c = (round(level * f, 6) for f in (1.0, 1.02, 0.98, 1.0))
        return Bar(t, day, o, h, lo, c, -1, -1, -1)

    # -- encoding ------------------------------------------------------------------------

    @staticmethod
    def bar_date(bar: Bar, format_date: int, tz_name: str) -> str:
        if bar.day is not None:
            return bar.day.strftime("%Y%m%d")
        if format_date == 2:
            return str(bar.t)
        local = datetime.fromtimestamp(bar.t, ZoneInfo(tz_name))
        return f"{local:%Y%m%d %H:%M:%S} {tz_name}"

    @staticmethod
    def _num(value: float) -> str:
        if value == -1:
            return "-1"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return fmt_float(value)

    def bar_fields(self, bar: Bar, request: Request) -> list[object]:
        date_text = self.bar_date(bar, request.format_date, request.inst.time_zone_id)
        return [
            date_text,
            fmt_float(bar.open),
            fmt_float(bar.high),
            fmt_float(bar.low),
            fmt_float(bar.close),
            self._num(bar.volume),
            self._num(bar.wap),
            bar.count,
        ]

    def update_fields(self, bar: Bar, request: Request) -> list[object]:
        date_text = self.bar_date(bar, request.format_date, request.inst.time_zone_id)
        return [
            Out.HISTORICAL_DATA_UPDATE,
            request.req_id,
            bar.count,
            date_text,
            fmt_float(bar.open),
            fmt_float(bar.close),
            fmt_float(bar.high),
            fmt_float(bar.low),
            self._num(bar.wap),
            self._num(bar.volume),
        ]

    # -- pacing --------------------------------------------------------------------------

    def _pace(self, conn: ClientConnection, key: tuple[str, ...], contract_key: str) -> None:
        """Raise IB's 162 when this request breaks the historical-data pacing rules."""
        config = self.sim.config
        limit = config.history_requests_per_10min
        pacing = self._pacing.setdefault(conn, _Pacing())
        now = time.monotonic()
        while pacing.times and now - pacing.times[0] > PACING_WINDOW:
            pacing.times.popleft()
        keep = max(config.history_identical_window, SAME_CONTRACT_WINDOW[0])
        while pacing.recent and now - pacing.recent[0][0] > keep:
            pacing.recent.popleft()
        identical = any(
            k == key and now - at <= config.history_identical_window for at, k in pacing.recent
        )
        window, most = SAME_CONTRACT_WINDOW
        same = sum(1 for at, k in pacing.recent if k[0] == contract_key and now - at <= window)
        if identical or same + 1 >= most or (limit and len(pacing.times) >= limit):
            raise RequestError(*PACING)
        pacing.times.append(now)
        pacing.recent.append((now, key))

    # -- handlers ------------------------------------------------------------------------

    def req_historical_data(self, conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, contract(12), includeExpired, end, barSize, duration, useRTH, whatToShow,
        #  formatDate, (BAG legs), keepUpToDate, chartOptions]
        req_id = int(fields[0])
        spec = parse_contract(fields, 1)
        end_text, size_text, duration_text = fields[14], fields[15], fields[16]
        rth, what, format_date = fields[17] == "1", fields[18].upper(), int(fields[19] or 1)
        keep_up = len(fields) > 20 and fields[20] == "1"
        bar_size = BAR_SIZES.get(size_text.strip())
        if bar_size is None:
            raise RequestError(
                321,
                "Error validating request.-'bK' : cause - Historical data bar size setting is "
                f"invalid. Legal ones are: {', '.join(BAR_SIZES)}",
                req_id,
            )
        if what not in WHAT_TO_SHOW:
            raise RequestError(162, f"{HMDS}No data of type {what} is available", req_id)
        count, unit = parse_duration(duration_text)
        inst = self.tracked(resolve(self.sim.universe, spec, req_id))
        if what in _TRADES and inst.is_cash:
            raise RequestError(
                162,
                f"{HMDS}No historical market data for {inst.symbol}/CASH@{inst.exchange} "
                f"Trades {size_text}",
                req_id,
            )
        if keep_up and end_text.strip():
            raise RequestError(*END_WITH_UPDATES, req_id)
        seconds = count * _UNIT_SECONDS[unit]
        if bar_size < DAY and seconds > _MAX_SECONDS[bar_size]:
            raise RequestError(*TOO_LONG, req_id)
        if self.sim.faults.offline:
            raise RequestError(*HMDS_DOWN, req_id)
        key = (str(inst.con_id), what, *fields[14:20], str(keep_up))
        self._pace(conn, key, f"{inst.con_id}:{what}")
        tz = ZoneInfo(inst.time_zone_id)
        now = self.clock()
        end = parse_end(end_text, tz, now)
        start = self._start(inst, end, count, unit, tz)
        request = Request(conn, req_id, inst, bar_size, what, rth, format_date)
        # an open end includes the bar forming now
        upper = int(now) + 1 if not end_text.strip() else min(end, int(now) + 1)
        bars = self.bars(inst, bar_size, what, rth, start, upper)
        tz_name = inst.time_zone_id
        start_text = f"{datetime.fromtimestamp(start, tz):%Y%m%d %H:%M:%S} {tz_name}"
        end_label = f"{datetime.fromtimestamp(end, tz):%Y%m%d %H:%M:%S} {tz_name}"
        out: list[object] = [Out.HISTORICAL_DATA, req_id, start_text, end_label, len(bars)]
        for bar in bars:
            out.extend(self.bar_fields(bar, request))
        conn.send(*out)
        if keep_up:
            request.last = bars[-1] if bars else None
            self.updates[(conn, req_id)] = request

    def _start(self, inst: Instrument, end: int, count: int, unit: str, tz: ZoneInfo) -> int:
        if unit == "S":
            return end - count
        local_end = datetime.fromtimestamp(end, tz)
        if unit == "D":
            # N sessions: the one ``end`` falls in (the simulator's own counts) and the
            # N-1 trading days before it.
            day = local_end.date()
            past = self.pasts[inst.con_id]
            if day < past.first_day and not past.trading_day(day):
                day = past.previous_trading_day(day)
            for _ in range(count - 1):
                day = past.previous_trading_day(day)
            return int(datetime.combine(day, datetime.min.time(), tz).timestamp())
        if unit == "W":
            return int((local_end - timedelta(weeks=count)).timestamp())
        months = count if unit == "M" else 12 * count
        year, month = divmod(local_end.month - 1 - months, 12)
        year += local_end.year
        day_of_month = min(local_end.day, 28)
        moved = local_end.replace(year=year, month=month + 1, day=day_of_month)
        return int(moved.timestamp())

    def cancel_historical_data(self, conn: ClientConnection, fields: list[str]) -> None:
        self.updates.pop((conn, int(fields[1])), None)

    def req_head_timestamp(self, conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, contract(12), includeExpired, useRTH, whatToShow, formatDate]
        req_id = int(fields[0])
        inst = self.tracked(resolve(self.sim.universe, parse_contract(fields, 1), req_id))
        rth, format_date = fields[14] == "1", int(fields[16] or 1)
        past = self.pasts[inst.con_id]
        first = past.session(past.earliest_day, rth)[0]
        if format_date == 2:
            text = str(first)
        else:
            text = f"{datetime.fromtimestamp(first, UTC):%Y%m%d-%H:%M:%S}"
        conn.send(Out.HEAD_TIMESTAMP, req_id, text)

    def cancel_head_timestamp(self, conn: ClientConnection, fields: list[str]) -> None:
        return None

    def req_real_time_bars(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, contract(12), barSize, whatToShow, useRTH, options]
        req_id = int(fields[1])
        inst = self.tracked(resolve(self.sim.universe, parse_contract(fields, 2), req_id))
        what = fields[15].upper()
        if fields[14] != str(REALTIME_BAR_SECONDS):
            raise RequestError(
                420, "Invalid Real-time Query: Only 5 seconds bars are supported", req_id
            )
        if what not in REALTIME_WHAT_TO_SHOW or (what == "TRADES" and inst.is_cash):
            raise RequestError(
                420,
                f"Invalid Real-time Query: No data of type {what} is available for {inst.symbol}",
                req_id,
            )
        if (conn, req_id) in self.realtime:
            raise RequestError(*RT_PACING, req_id)
        request = Request(conn, req_id, inst, REALTIME_BAR_SECONDS, what, fields[16] == "1", 2)
        self.realtime[(conn, req_id)] = request

    def cancel_real_time_bars(self, conn: ClientConnection, fields: list[str]) -> None:
        self.realtime.pop((conn, int(fields[1])), None)

    def drop_client(self, conn: ClientConnection) -> None:
        for subs in (self.updates, self.realtime):
            for key in [k for k in subs if k[0] is conn]:
                del subs[key]
        self._pacing.pop(conn, None)

    def drop_all(self) -> None:
        self.updates.clear()
        self.realtime.clear()

    # -- live bars -----------------------------------------------------------------------

    def current_bar(self, request: Request, now: int) -> tuple[Bar | None, Bar | None]:
        """(the bar forming now, the one before it) for a keepUpToDate subscription."""
        size = request.bar_size
        lookback = 2 * size if size < DAY else 40 * DAY
        bars = self.bars(request.inst, size, request.what, request.rth, now - lookback, now + 1)
        if not bars:
            return None, None
        return bars[-1], bars[-2] if len(bars) > 1 else None

    def send_updates(self) -> None:
        """keepUpToDate: re-send the forming bar when it changed; when a new bar starts,
        first the final state of the one that just ended."""
        if self.sim.faults.offline or not self.updates:
            return
        now = int(self.clock())
        for request in list(self.updates.values()):
            bar, before = self.current_bar(request, now)
            if bar is None:
                continue
            last = request.last
            if last is not None and bar.t > last.t and before is not None and before.t == last.t:
                if before != last:
                    request.conn.send(*self.update_fields(before, request))
            if bar != last:
                request.conn.send(*self.update_fields(bar, request))
                request.last = bar

    async def _run_updates(self) -> None:
        interval = self.sim.config.history_update_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.send_updates()
            except Exception:
                log.exception("keepUpToDate updates failed")

    def send_realtime(self, end: int) -> None:
        """Every real-time bar subscription gets the 5-second bar that ended at ``end``."""
        if self.sim.faults.offline:
            return
        start = end - REALTIME_BAR_SECONDS
        for request in list(self.realtime.values()):
            tape = self.tapes[request.inst.con_id]
            cell = merge((c for c in tape.seconds if start <= c.t < end), start)
            if cell is None:
                continue
            bar = self._bar(request.inst, request.what, start, None, cell)
            if bar is None:  # no trade in the window: IB repeats the last price, no volume
                price = request.last.close if request.last is not None else cell.bid[3]
                bar = Bar(start, None, price, price, price, price, 0, price, 0)
            request.last = bar
            request.conn.send(
                Out.REAL_TIME_BARS,
                3,
                request.req_id,
                bar.t,
                fmt_float(bar.open),
                fmt_float(bar.high),
                fmt_float(bar.low),
                fmt_float(bar.close),
                self._num(bar.volume),
                self._num(bar.wap),
                bar.count,
            )

    async def _run_realtime(self) -> None:
        while True:
            now = self.clock()
            boundary = (math.floor(now / REALTIME_BAR_SECONDS) + 1) * REALTIME_BAR_SECONDS
            # a little after the boundary, so the window's last second is recorded
            await asyncio.sleep(boundary - now + 0.05)
            try:
                self.send_realtime(int(boundary))
            except Exception:
                log.exception("real-time bars failed")


def install(sim: Simulator) -> History:
    history = History(sim)
    sim.register(In.REQ_HISTORICAL_DATA, history.req_historical_data)
    sim.register(In.CANCEL_HISTORICAL_DATA, history.cancel_historical_data)
    sim.register(In.REQ_HEAD_TIMESTAMP, history.req_head_timestamp)
    sim.register(In.CANCEL_HEAD_TIMESTAMP, history.cancel_head_timestamp)
    sim.register(In.REQ_REAL_TIME_BARS, history.req_real_time_bars)
    sim.register(In.CANCEL_REAL_TIME_BARS, history.cancel_real_time_bars)
    return history
