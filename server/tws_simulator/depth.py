"""Market depth (level II): reqMktDepth / cancelMktDepth, the book and its changes.

Each instrument's book is built from its live quote: row 0 of each side is the top of
book (bid / ask and their sizes, so depth and quotes always agree), the rows below step
away from it one price increment at a time, with sizes that change now and then. Every
quote change rebuilds the book; each subscription is sent the row operations that turn
the book it last saw into the new one (TWS's insert / update / delete by position, see
:func:`diff_side`), cut to the rows it asked for.

Like TWS: a few depth subscriptions at a time (``depth_line_limit``, error 309 beyond),
none for instruments without a book (indices: 10092), error 354 for an account without
a depth subscription. ``isSmartDepth`` books aggregate several exchanges and are sent as
updateMktDepthL2 with the exchange of each row as its market maker; an exchange's own
book is sent as updateMktDepth.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from .contracts import parse_contract, resolve
from .dispatch import RequestError
from .instruments import Instrument, tick_at
from .market import Quote
from .message_ids import In, Out
from .wire import encode_message

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

MAX_ROWS = 20  # TWS caps a depth request's rows (SMART depth shows up to about 20)
INSERT, UPDATE, DELETE = 0, 1, 2
ASK_SIDE, BID_SIDE = 0, 1
DEPTH_LIMIT_CODE = 309
NOT_SUPPORTED = (
    10092,
    "Deep market data is not supported for this combination of security type/exchange",
)
NOT_SUBSCRIBED = (
    354,
    "Requested market data is not subscribed.Deep book (Level II) data needs a market "
    "depth subscription",
)
_MARKET_MAKERS = ("NSDQ", "ARCA", "BATS", "EDGX", "IEX", "DRCTEDGE", "MEMX")


@dataclass(frozen=True, slots=True)
class Level:
    """One row of a book side."""

    price: float
    size: Decimal
    market_maker: str = ""


Book = tuple[tuple[Level, ...], tuple[Level, ...]]  # (bids best first, asks best first)


def diff_side(old: list[Level], new: list[Level]) -> list[tuple[int, int, Level]]:
    """(operation, position, level) rows that turn ``old`` into ``new`` the way TWS sends
    them: rows are rewritten in place (update), inserted only at the end (while the book
    fills) and deleted only from the end (last row first). Read as IB documents the
    operations (insert and delete shift the rows below, as ib_insync does) or as
    positions to overwrite (as ib_async does), they give the same book."""
    ops: list[tuple[int, int, Level]] = []
    for pos in range(len(old) - 1, len(new) - 1, -1):
        ops.append((DELETE, pos, old[pos]))
    for pos, level in enumerate(new):
        if pos >= len(old):
            ops.append((INSERT, pos, level))
        elif old[pos] != level:
            ops.append((UPDATE, pos, level))
    return ops


def apply_side(rows: list[Level], op: int, pos: int, level: Level) -> None:
    """Apply one row operation the way a client keeps its book (tests use it)."""
    if op == INSERT:
        rows.insert(pos, level)
    elif op == UPDATE:
        rows[pos] = level
    elif pos < len(rows):
        del rows[pos]


class _BookMaker:
    """The full-depth book of one instrument, rebuilt on each of its quote changes."""

    def __init__(self, inst: Instrument, seed: int) -> None:
        self.inst = inst
        self._rng = random.Random(seed)
        self._sizes: dict[tuple[int, float], Decimal] = {}
        self.book: Book = ((), ())

    def _size(self, side: int, price: float) -> Decimal:
        key = (side, price)
        size = self._sizes.get(key)
        if size is None or self._rng.random() < 0.15:
            lot = max(1, self.inst.lot_size)
            size = Decimal(lot * self._rng.randint(1, 30))
            self._sizes[key] = size
        return size

    def _step(self, price: float) -> float:
        if self.inst.is_option:
            return tick_at(self.inst.market_rule_id, price)
        return self.inst.min_tick

    def _maker(self, price: float) -> str:
        """The exchange showing a price level (fixed per price, so a row keeps its maker
        as the book moves)."""
        return _MARKET_MAKERS[round(price / self.inst.min_tick) % len(_MARKET_MAKERS)]

    def rebuild(self, quote: Quote) -> Book:
        decimals = max(2, len(f"{self.inst.min_tick:.10f}".rstrip("0").split(".")[1]))
        bids: list[Level] = []
        asks: list[Level] = []
        if quote.bid > 0:
            bids.append(Level(quote.bid, quote.bid_size, self._maker(quote.bid)))
        if quote.ask > 0:
            asks.append(Level(quote.ask, quote.ask_size, self._maker(quote.ask)))
        for _ in range(1, MAX_ROWS):
            if bids:
                price = round(bids[-1].price - self._step(bids[-1].price), decimals)
                if price > 0:
                    bids.append(Level(price, self._size(BID_SIDE, price), self._maker(price)))
            if asks:
                price = round(asks[-1].price + self._step(asks[-1].price), decimals)
                asks.append(Level(price, self._size(ASK_SIDE, price), self._maker(price)))
        # Forget sizes of prices far from the market (the walk never comes back to all).
        if len(self._sizes) > 8 * MAX_ROWS:
            live = {(BID_SIDE, lv.price) for lv in bids} | {(ASK_SIDE, lv.price) for lv in asks}
            self._sizes = {k: v for k, v in self._sizes.items() if k in live}
        self.book = (tuple(bids), tuple(asks))
        return self.book


@dataclass(eq=False)
class DepthSubscription:
    conn: ClientConnection
    req_id: int
    instrument: Instrument
    rows: int
    smart: bool
    bids: list[Level] = field(default_factory=list)  # what this client was sent
    asks: list[Level] = field(default_factory=list)


class DepthFeed:
    """Every depth subscription, fed from the market's quote changes."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._subs: dict[tuple[ClientConnection, int], DepthSubscription] = {}
        self._by_con_id: dict[int, list[DepthSubscription]] = {}
        self._makers: dict[int, _BookMaker] = {}
        self._seed = random.Random(sim.config.seed).getrandbits(32)
        sim.market.add_listener(self.on_quote)
        sim.add_disconnect_listener(self.drop_client)
        sim.add_data_lost_listener(self.drop_all)

    @property
    def lines_in_use(self) -> int:
        return len(self._subs)

    def book(self, conn: ClientConnection, req_id: int) -> Book | None:
        """The book a subscription was last sent (None if there is no such subscription)."""
        sub = self._subs.get((conn, req_id))
        return (tuple(sub.bids), tuple(sub.asks)) if sub else None

    def subscriptions(self) -> list[DepthSubscription]:
        return list(self._subs.values())

    # -- the book ------------------------------------------------------------------------

    def on_quote(self, con_id: int, quote: Quote) -> None:
        subs = self._by_con_id.get(con_id)
        if not subs:
            return
        bids, asks = self._makers[con_id].rebuild(quote)
        for sub in subs:
            self._send(sub, list(bids[: sub.rows]), list(asks[: sub.rows]))

    def _send(self, sub: DepthSubscription, bids: list[Level], asks: list[Level]) -> None:
        out: list[bytes] = []
        for side, old, new in ((BID_SIDE, sub.bids, bids), (ASK_SIDE, sub.asks, asks)):
            for op, pos, level in diff_side(old, new):
                out.append(_row_message(sub, pos, op, side, level))
        sub.bids, sub.asks = bids, asks
        if out:
            sub.conn.send_raw(b"".join(out))

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(
        self, conn: ClientConnection, req_id: int, inst: Instrument, rows: int, smart: bool
    ) -> None:
        if (conn, req_id) in self._subs:
            raise RequestError(
                322, "Error processing request.-'bB' : cause - Duplicate ticker id", req_id
            )
        if inst.is_index:
            raise RequestError(*NOT_SUPPORTED, req_id)
        if not self.sim.config.depth_permission:
            raise RequestError(*NOT_SUBSCRIBED, req_id)
        limit = self.sim.config.depth_line_limit
        if len(self._subs) >= limit:
            raise RequestError(
                DEPTH_LIMIT_CODE,
                f"Max number ({limit}) of market depth requests has been reached",
                req_id,
            )
        sub = DepthSubscription(conn, req_id, inst, max(1, min(rows, MAX_ROWS)), smart)
        self._subs[(conn, req_id)] = sub
        self._by_con_id.setdefault(inst.con_id, []).append(sub)
        maker = self._makers.get(inst.con_id)
        if maker is None:
            maker = self._makers[inst.con_id] = _BookMaker(inst, self._seed ^ inst.con_id)
            maker.rebuild(self.sim.market.quote(inst.con_id))
        bids, asks = maker.book
        self._send(sub, list(bids[: sub.rows]), list(asks[: sub.rows]))

    def unsubscribe(self, conn: ClientConnection, req_id: int) -> bool:
        sub = self._subs.pop((conn, req_id), None)
        if sub is None:
            return False
        subs = self._by_con_id.get(sub.instrument.con_id, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._by_con_id.pop(sub.instrument.con_id, None)
        return True

    def drop_client(self, conn: ClientConnection) -> None:
        for key in [k for k in self._subs if k[0] is conn]:
            self.unsubscribe(*key)

    def drop_all(self) -> None:
        self._subs.clear()
        self._by_con_id.clear()

    # -- handlers ------------------------------------------------------------------------

    def req_mkt_depth(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, contract(12), numRows, isSmartDepth, mktDepthOptions]
        req_id = int(fields[1])
        spec = parse_contract(fields, 2)
        rows = int(fields[14] or 0) if len(fields) > 14 else 5
        smart = len(fields) > 15 and fields[15] == "1"
        inst = resolve(self.sim.universe, spec, req_id)
        self.subscribe(conn, req_id, inst, rows, smart)

    def cancel_mkt_depth(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, isSmartDepth]
        req_id = int(fields[1])
        if not self.unsubscribe(conn, req_id):
            conn.send_error(req_id, 300, f"Can't find EId with tickerId:{req_id}")

    def req_mkt_depth_exchanges(self, conn: ClientConnection, fields: list[str]) -> None:
        venues = [("NASDAQ", "STK", "NASDAQ", "Deep2", "1"), ("ARCA", "STK", "ARCA", "Deep2", "1")]
        venues += [("IDEALPRO", "CASH", "", "Deep", "4"), ("CME", "FUT", "", "Deep", "2")]
        conn.send(Out.MKT_DEPTH_EXCHANGES, len(venues), *(f for v in venues for f in v))


def _row_message(sub: DepthSubscription, pos: int, op: int, side: int, level: Level) -> bytes:
    if sub.smart:
        # updateMktDepthL2; isSmartDepth on the wire since server version 146 (all we serve)
        fields: list[object] = [
            Out.MARKET_DEPTH_L2,
            1,
            sub.req_id,
            pos,
            level.market_maker,
            op,
            side,
            level.price,
            level.size,
            True,
        ]
    else:
        fields = [Out.MARKET_DEPTH, 1, sub.req_id, pos, op, side, level.price, level.size]
    return encode_message(fields)


def install(sim: Simulator) -> DepthFeed:
    feed = DepthFeed(sim)
    sim.register(In.REQ_MKT_DEPTH, feed.req_mkt_depth)
    sim.register(In.CANCEL_MKT_DEPTH, feed.cancel_mkt_depth)
    sim.register(In.REQ_MKT_DEPTH_EXCHANGES, feed.req_mkt_depth_exchanges)
    return feed
