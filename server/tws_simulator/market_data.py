"""Market data requests: reqMktData streams and snapshots, market data types, tick-by-tick.

The per-tick path is the hot one (thousands of quote changes a second): each quote change
is encoded once into reqId-free pieces, then every subscription only splices its request
id in and writes the bytes.

A client that does not read its socket fast enough (its unsent bytes pass
:data:`CONGESTED_BYTES`) is not sent every change: its subscriptions skip ticks and, once
the socket drains, get one catch-up diff from the last quote they were sent to the newest,
the way a real feed conflates for a slow consumer instead of queueing without bound.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .contracts import format_tick, parse_contract, resolve
from .dispatch import RequestError
from .instruments import Instrument
from .market import Quote
from .message_ids import In, Out
from .wire import fmt, fmt_float

if TYPE_CHECKING:
    from .options import OptionModel
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

LIVE, FROZEN, DELAYED, DELAYED_FROZEN = 1, 2, 3, 4

MAX_TICKERS = (101, "Max number of tickers has been reached")
DUPLICATE_TICKER = (322, "Error processing request.-'bC' : cause - Duplicate ticker id")
DISPLAYING_DELAYED = (
    10167,
    "Requested market data is not subscribed. Displaying delayed market data.",
)
NOT_SUBSCRIBED = (
    354,
    "Requested market data is not subscribed. Delayed market data is available.",
)
SNAPSHOT_GENERIC = (
    321,
    "Error validating request.-'bW' : cause - Snapshot market data subscription is not "
    "applicable to generic ticks",
)

# Tick type ids (live, delayed), as in the TWS API's TickType.
BID_SIZE, BID, ASK, ASK_SIZE, LAST, LAST_SIZE = (0, 69), (1, 66), (2, 67), (3, 70), (4, 68), (5, 71)
HIGH, LOW, VOLUME, CLOSE, OPEN = (6, 72), (7, 73), (8, 74), (9, 75), (14, 76)
LAST_TIMESTAMP = (45, 88)
MARK_PRICE, RT_VOLUME, SHORTABLE, HALTED, SHORTABLE_SHARES = 37, 48, 46, 49, 89
SHORTABLE_SHARES_AVAILABLE = 25_000_000
# Generic ticks we can serve (others are refused like TWS refuses a bad generic list).
SUPPORTED_GENERIC = {
    "100",
    "101",
    "104",
    "105",
    "106",
    "162",
    "165",
    "221",
    "225",
    "233",
    "236",
    "258",
    "293",
    "294",
    "295",
    "318",
    "375",
    "411",
    "456",
    "588",
}
BBO_EXCHANGE = "9c0001"
# Unsent bytes to a client above which its ticks are conflated (see the module docstring).
CONGESTED_BYTES = 256 * 1024
SNAPSHOT_PERMISSIONS = 3

_LEN = struct.Struct(">I")
_TICK_PRICE = b"1\x006\x00"
_TICK_SIZE = b"2\x006\x00"
_TICK_STRING = b"46\x006\x00"
_TICK_GENERIC = b"45\x006\x00"
# tickOptionComputation from server version 156 on (all we serve): no version field, and a
# tickAttrib (0: return-based, 1: price-based) before the values. Older servers sent a
# version and no tickAttrib; ib_insync and ib_async read only the newer layout.
_TICK_OPTION = b"21\x00"
# Option computation tick types (live, delayed): bid, ask, last, model.
BID_OPTION, ASK_OPTION, LAST_OPTION, MODEL_OPTION = (10, 80), (11, 81), (12, 82), (13, 83)
NOT_COMPUTED, NOT_COMPUTED_GREEK = "-1", "-2"  # TWS's "not computed" values


def _size(value: object) -> str:
    return fmt(value)


def _price_tail(tick: int, price: float, size: object) -> bytes:
    return f"{tick}\0{fmt_float(price)}\0{_size(size)}\0{0}\0".encode()


@dataclass(eq=False)
class Subscription:
    conn: ClientConnection
    req_id: int
    instrument: Instrument
    data_type: int  # the type actually served (LIVE/FROZEN/DELAYED/DELAYED_FROZEN)
    generic: frozenset[str] = frozenset()
    rid: bytes = b""  # the encoded request id field, spliced into every tick
    behind: Quote | None = None  # the last quote sent, while ticks are being skipped

    def __post_init__(self) -> None:
        self.rid = f"{self.req_id}\0".encode()

    @property
    def delayed(self) -> bool:
        return self.data_type in (DELAYED, DELAYED_FROZEN)

    @property
    def streaming(self) -> bool:
        return self.data_type in (LIVE, DELAYED)


@dataclass(eq=False)
class TickByTick:
    conn: ClientConnection
    req_id: int
    instrument: Instrument
    kind: int  # 1 Last, 2 AllLast, 3 BidAsk, 4 MidPoint
    ignore_size: bool = False


def _frames(pieces: Iterable[tuple[bytes, bytes]], rid: bytes) -> bytes:
    out = []
    for head, tail in pieces:
        out.append(_LEN.pack(len(head) + len(rid) + len(tail)))
        out.append(head)
        out.append(rid)
        out.append(tail)
    return b"".join(out)


def _changes(
    inst: Instrument, old: Quote | None, new: Quote, delayed: bool
) -> list[tuple[bytes, bytes]]:
    """The ticks that describe going from ``old`` to ``new`` (everything if ``old`` is None)."""
    i = 1 if delayed else 0
    ticks: list[tuple[bytes, bytes]] = []
    if inst.is_index:
        return _index_changes(old, new, i)
    if old is None or new.bid != old.bid:
        ticks.append((_TICK_PRICE, _price_tail(BID[i], new.bid, new.bid_size)))
    elif new.bid_size != old.bid_size:
        ticks.append((_TICK_SIZE, f"{BID_SIZE[i]}\0{new.bid_size}\0".encode()))
    if old is None or new.ask != old.ask:
        ticks.append((_TICK_PRICE, _price_tail(ASK[i], new.ask, new.ask_size)))
    elif new.ask_size != old.ask_size:
        ticks.append((_TICK_SIZE, f"{ASK_SIZE[i]}\0{new.ask_size}\0".encode()))
    if not inst.is_cash and (
        old is None or new.last_time != old.last_time or new.volume != old.volume
    ):
        ticks.append((_TICK_PRICE, _price_tail(LAST[i], new.last, new.last_size)))
        ticks.append((_TICK_SIZE, f"{VOLUME[i]}\0{new.volume}\0".encode()))
        if old is None or new.last_time != old.last_time:
            ticks.append((_TICK_STRING, f"{LAST_TIMESTAMP[i]}\0{new.last_time}\0".encode()))
    if old is None or new.high != old.high:
        ticks.append((_TICK_PRICE, _price_tail(HIGH[i], new.high, 0)))
    if old is None or new.low != old.low:
        ticks.append((_TICK_PRICE, _price_tail(LOW[i], new.low, 0)))
    if old is None:
        ticks.append((_TICK_PRICE, _price_tail(CLOSE[i], new.close, 0)))
        if not inst.is_cash:
            ticks.append((_TICK_PRICE, _price_tail(OPEN[i], new.open, 0)))
    return ticks


def _computation(tick: int, model: OptionModel, price: float | None, vol: float | None) -> bytes:
    """One option computation tail: the greeks at ``vol`` (the volatility implied by
    ``price``; None when no volatility reprices it, as below intrinsic value)."""
    und = fmt_float(model.underlying_price)
    if vol is None:
        values = [NOT_COMPUTED, NOT_COMPUTED_GREEK, fmt_float(price) if price else NOT_COMPUTED]
        values += [NOT_COMPUTED, NOT_COMPUTED_GREEK, NOT_COMPUTED_GREEK, NOT_COMPUTED_GREEK, und]
    else:
        g = model.greeks(vol)
        values = [
            fmt_float(vol),
            fmt_float(g.delta),
            fmt_float(g.price if price is None else price),
            "0.0",  # pvDividend: the model's yield is continuous
            fmt_float(g.gamma),
            fmt_float(g.vega),
            fmt_float(g.theta),
            und,
        ]
    return f"{tick}\0{0}\0{chr(0).join(values)}\0".encode()


def option_computations(
    model: OptionModel | None, old: Quote | None, new: Quote, delayed: bool
) -> list[tuple[bytes, bytes]]:
    """The option computation ticks of a change: bid / ask / last when they moved (the
    volatility each implies, and greeks at it), the model's every time (the underlying
    moved)."""
    if model is None:
        return []
    i = 1 if delayed else 0
    ticks: list[tuple[bytes, bytes]] = []
    for kind, price, before in (
        (BID_OPTION, new.bid, None if old is None else old.bid),
        (ASK_OPTION, new.ask, None if old is None else old.ask),
        (LAST_OPTION, new.last, None if old is None else old.last),
    ):
        if price != before:
            vol = model.implied_vol(price) if price > 0 else None
            ticks.append((_TICK_OPTION, _computation(kind[i], model, price, vol)))
    ticks.append((_TICK_OPTION, _computation(MODEL_OPTION[i], model, None, model.vol)))
    return ticks


def _index_changes(old: Quote | None, new: Quote, i: int) -> list[tuple[bytes, bytes]]:
    """An index has a value (sent as last), high, low, close and open; no bid, ask, size."""
    ticks: list[tuple[bytes, bytes]] = []
    if old is None or new.last != old.last:
        ticks.append((_TICK_PRICE, _price_tail(LAST[i], new.last, 0)))
    if old is None or new.high != old.high:
        ticks.append((_TICK_PRICE, _price_tail(HIGH[i], new.high, 0)))
    if old is None or new.low != old.low:
        ticks.append((_TICK_PRICE, _price_tail(LOW[i], new.low, 0)))
    if old is None:
        ticks.append((_TICK_PRICE, _price_tail(CLOSE[i], new.close, 0)))
        ticks.append((_TICK_PRICE, _price_tail(OPEN[i], new.open, 0)))
    return ticks


def _rt_volume(new: Quote) -> bytes:
    vwap = round((new.high + new.low + new.last) / 3, 4)
    text = f"{fmt_float(new.last)};{new.last_size};{new.last_time * 1000};{new.volume};{vwap};true"
    return f"{RT_VOLUME}\0{text}\0".encode()


def _generic_extras(sub: Subscription, quote: Quote) -> bytes:
    """Ticks only sent once, at subscription time, for some generic tick requests."""
    out: list[tuple[bytes, bytes]] = []
    if "236" in sub.generic:
        out.append((_TICK_GENERIC, f"{SHORTABLE}\0{3.0}\0".encode()))
        out.append((_TICK_SIZE, f"{SHORTABLE_SHARES}\0{SHORTABLE_SHARES_AVAILABLE}\0".encode()))
    if "221" in sub.generic:
        out.append((_TICK_PRICE, _price_tail(MARK_PRICE, quote.midpoint, 0)))
    if "233" in sub.generic and not sub.instrument.is_cash:
        out.append((_TICK_STRING, _rt_volume(quote)))
    out.append((_TICK_GENERIC, f"{HALTED}\0{0.0}\0".encode()))
    return _frames(out, sub.rid)


class MarketDataFeed:
    """Every market data subscription of every client, fed from the market's quote changes."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.line_limit = sim.config.line_limit
        self._subs: dict[tuple[ClientConnection, int], Subscription] = {}
        self._streams: dict[int, list[Subscription]] = {}  # con_id → live/delayed streams
        self._tbt: dict[int, list[TickByTick]] = {}
        self._data_type: dict[ClientConnection, int] = {}
        self._last: dict[int, Quote] = {
            inst.con_id: sim.market.quote(inst.con_id) for inst in sim.universe.instruments
        }
        sim.market.add_listener(self.on_quote)
        sim.add_disconnect_listener(self.drop_client)
        sim.add_data_lost_listener(self.drop_all)

    def current(self, con_id: int) -> Quote:
        """The latest quote of an instrument (a derivative starts being priced here)."""
        quote = self._last.get(con_id)
        if quote is None:
            quote = self._last[con_id] = self.sim.market.quote(con_id)
        return quote

    @property
    def lines_in_use(self) -> int:
        return len(self._subs)

    # -- the hot path --------------------------------------------------------------------

    def on_quote(self, con_id: int, quote: Quote) -> None:
        old = self._last.get(con_id)
        self._last[con_id] = quote
        streams = self._streams.get(con_id)
        if streams:
            self._stream(streams, old, quote)
        tbt = self._tbt.get(con_id)
        if tbt:
            self._tick_by_tick(tbt, old, quote)

    def _stream(self, streams: list[Subscription], old: Quote | None, quote: Quote) -> None:
        inst = streams[0].instrument
        live: list[tuple[bytes, bytes]] | None = None
        delayed: list[tuple[bytes, bytes]] | None = None
        rt: tuple[bytes, bytes] | None = None
        traded = old is not None and quote.last_time != old.last_time and not inst.is_cash
        congested: dict[ClientConnection, bool] = {}
        for sub in streams:
            conn = sub.conn
            busy = congested.get(conn)
            if busy is None:
                busy = congested[conn] = conn.unsent_bytes() > CONGESTED_BYTES
            if busy:
                if sub.behind is None:
                    sub.behind = old
                continue
            if sub.behind is not None:
                self._catch_up(sub, sub.behind, quote)
                continue
            if sub.delayed:
                if delayed is None:
                    delayed = self._changes(inst, old, quote, True)
                pieces = delayed
            else:
                if live is None:
                    live = self._changes(inst, old, quote, False)
                pieces = live
            data = _frames(pieces, sub.rid) if pieces else b""
            if traded and "233" in sub.generic:
                if rt is None:
                    rt = (_TICK_STRING, _rt_volume(quote))
                data += _frames((rt,), sub.rid)
            if data:
                sub.conn.send_raw(data)

    def _catch_up(self, sub: Subscription, sent: Quote, quote: Quote) -> None:
        """One diff from the last quote ``sub`` was sent to the newest one."""
        sub.behind = None
        data = _frames(self._changes(sub.instrument, sent, quote, sub.delayed), sub.rid)
        traded = quote.last_time != sent.last_time and not sub.instrument.is_cash
        if traded and "233" in sub.generic:
            data += _frames(((_TICK_STRING, _rt_volume(quote)),), sub.rid)
        if data:
            sub.conn.send_raw(data)

    def _changes(
        self, inst: Instrument, old: Quote | None, quote: Quote, delayed: bool
    ) -> list[tuple[bytes, bytes]]:
        ticks = _changes(inst, old, quote, delayed)
        if inst.is_option:
            model = self.sim.market.option_model(inst.con_id)
            ticks += option_computations(model, old, quote, delayed)
        return ticks

    def _tick_by_tick(self, subs: list[TickByTick], old: Quote | None, quote: Quote) -> None:
        now = int(time.time())
        for sub in subs:
            fields: list[object] | None = None
            if sub.kind == 3 and (
                old is None
                or (quote.bid, quote.ask, quote.bid_size, quote.ask_size)
                != (old.bid, old.ask, old.bid_size, old.ask_size)
            ):
                bid_size = 0 if sub.ignore_size else quote.bid_size
                ask_size = 0 if sub.ignore_size else quote.ask_size
                fields = [
                    Out.TICK_BY_TICK,
                    sub.req_id,
                    3,
                    now,
                    quote.bid,
                    quote.ask,
                    bid_size,
                    ask_size,
                    0,
                ]
            elif sub.kind == 4 and (old is None or quote.midpoint != old.midpoint):
                fields = [Out.TICK_BY_TICK, sub.req_id, 4, now, round(quote.midpoint, 6)]
            elif (
                sub.kind in (1, 2)
                and not sub.instrument.is_cash
                and (old is None or quote.last_time != old.last_time or quote.volume != old.volume)
            ):
                fields = [
                    Out.TICK_BY_TICK,
                    sub.req_id,
                    sub.kind,
                    quote.last_time,
                    quote.last,
                    quote.last_size,
                    0,
                    sub.instrument.primary_exchange,
                    "",
                ]
            if fields is not None:
                sub.conn.send(*fields)

    # -- subscriptions -------------------------------------------------------------------

    def data_type(self, conn: ClientConnection) -> int:
        return self._data_type.get(conn, LIVE)

    def served_type(self, conn: ClientConnection, req_id: int) -> int:
        """What a request gets, given the client's market data type and our permissions."""
        wanted = self.data_type(conn)
        if self.sim.config.live_market_data:
            # TWS ignores a delayed request when live data is available.
            return FROZEN if wanted in (FROZEN, DELAYED_FROZEN) else LIVE
        if wanted in (LIVE, FROZEN):
            raise RequestError(*NOT_SUBSCRIBED, req_id)
        return wanted

    def subscribe(
        self,
        conn: ClientConnection,
        req_id: int,
        inst: Instrument,
        generic: frozenset[str],
        snapshot: bool,
    ) -> None:
        if (conn, req_id) in self._subs:
            raise RequestError(*DUPLICATE_TICKER, req_id)
        if snapshot and generic:
            raise RequestError(*SNAPSHOT_GENERIC, req_id)
        served = self.served_type(conn, req_id)
        if not snapshot and self.lines_in_use >= self.line_limit:
            raise RequestError(*MAX_TICKERS, req_id)
        sub = Subscription(conn, req_id, inst, served, generic)
        conn.send(
            Out.TICK_REQ_PARAMS,
            req_id,
            format_tick(inst.min_tick),
            BBO_EXCHANGE,
            SNAPSHOT_PERMISSIONS,
        )
        if served != LIVE:
            conn.send(Out.MARKET_DATA_TYPE, 1, req_id, served)
        if sub.delayed:
            conn.send_error(req_id, *DISPLAYING_DELAYED)
        quote = self.current(inst.con_id)
        initial = _frames(self._changes(inst, None, quote, sub.delayed), sub.rid)
        conn.send_raw(initial + _generic_extras(sub, quote))
        if snapshot:
            conn.send(Out.TICK_SNAPSHOT_END, 1, req_id)
            return
        self._subs[(conn, req_id)] = sub
        if sub.streaming:
            self._streams.setdefault(inst.con_id, []).append(sub)

    def unsubscribe(self, conn: ClientConnection, req_id: int) -> bool:
        sub = self._subs.pop((conn, req_id), None)
        if sub is None:
            return False
        streams = self._streams.get(sub.instrument.con_id)
        if streams and sub in streams:
            streams.remove(sub)
        return True

    def subscribe_tick_by_tick(self, sub: TickByTick) -> None:
        self._tbt.setdefault(sub.instrument.con_id, []).append(sub)
        self._tick_by_tick([sub], None, self.current(sub.instrument.con_id))

    def unsubscribe_tick_by_tick(self, conn: ClientConnection, req_id: int) -> None:
        for subs in self._tbt.values():
            subs[:] = [s for s in subs if not (s.conn is conn and s.req_id == req_id)]

    def drop_client(self, conn: ClientConnection) -> None:
        for key in [k for k in self._subs if k[0] is conn]:
            self.unsubscribe(*key)
        for subs in self._tbt.values():
            subs[:] = [s for s in subs if s.conn is not conn]
        self._data_type.pop(conn, None)

    def drop_all(self) -> None:
        """Connectivity came back with data lost: every subscription has to be made again."""
        self._subs.clear()
        self._streams.clear()
        self._tbt.clear()

    # -- handlers ------------------------------------------------------------------------

    def req_mkt_data(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, contract(12), (BAG legs), deltaNeutral, generic, snapshot, regSnap, opts]
        req_id = int(fields[1])
        spec = parse_contract(fields, 2)
        pos = 14
        if spec.sec_type.upper() == "BAG":
            raise RequestError(200, "The simulator has no combo (BAG) contracts", req_id)
        if fields[pos] == "1":
            pos += 3  # delta neutral contract: conId, delta, price
        pos += 1
        generic_text, snapshot, regulatory = fields[pos], fields[pos + 1], fields[pos + 2]
        generic = frozenset(g.strip() for g in generic_text.split(",") if g.strip())
        unknown = sorted(generic - SUPPORTED_GENERIC)
        if unknown:
            raise RequestError(
                321,
                f"Error validating request.-'bW' : cause - Incorrect generic tick list of "
                f"{','.join(unknown)}.  Legal ones for ({spec.sec_type or 'STK'}) are: "
                f"{','.join(sorted(SUPPORTED_GENERIC, key=int))}",
                req_id,
            )
        inst = resolve(self.sim.universe, spec, req_id)
        self.subscribe(conn, req_id, inst, generic, snapshot == "1" or regulatory == "1")

    def cancel_mkt_data(self, conn: ClientConnection, fields: list[str]) -> None:
        req_id = int(fields[1])
        if not self.unsubscribe(conn, req_id):
            conn.send_error(req_id, 300, f"Can't find EId with tickerId:{req_id}")

    def req_market_data_type(self, conn: ClientConnection, fields: list[str]) -> None:
        wanted = int(fields[1])
        if wanted not in (LIVE, FROZEN, DELAYED, DELAYED_FROZEN):
            raise RequestError(321, f"Error validating request.-'cr' : cause - type {wanted}")
        self._data_type[conn] = wanted

    def req_tick_by_tick(self, conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, contract(12), tickType, numberOfTicks, ignoreSize]
        req_id = int(fields[0])
        inst = resolve(self.sim.universe, parse_contract(fields, 1), req_id)
        kinds = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}
        kind = kinds.get(fields[13])
        if kind is None:
            raise RequestError(
                321, f"Error validating request.-'bQ' : cause - tick type {fields[13]}", req_id
            )
        self.served_type(conn, req_id)
        ignore = len(fields) > 15 and fields[15] == "1"
        self.subscribe_tick_by_tick(TickByTick(conn, req_id, inst, kind, ignore))

    def cancel_tick_by_tick(self, conn: ClientConnection, fields: list[str]) -> None:
        self.unsubscribe_tick_by_tick(conn, int(fields[0]))


def install(sim: Simulator) -> MarketDataFeed:
    feed = MarketDataFeed(sim)
    sim.register(In.REQ_MKT_DATA, feed.req_mkt_data)
    sim.register(In.CANCEL_MKT_DATA, feed.cancel_mkt_data)
    sim.register(In.REQ_MARKET_DATA_TYPE, feed.req_market_data_type)
    sim.register(In.REQ_TICK_BY_TICK_DATA, feed.req_tick_by_tick)
    sim.register(In.CANCEL_TICK_BY_TICK_DATA, feed.cancel_tick_by_tick)
    return feed
