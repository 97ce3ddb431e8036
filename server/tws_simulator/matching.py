"""The matching engine: order validation, fills against the simulated quotes, commissions.

Pure and synchronous: no sockets, no clock, no account. ``orders.py`` feeds it orders and
quotes and turns the :class:`Fill` results into TWS messages.

Model (what a paper TWS does, simplified):

* A buy executes at the ask, a sell at the bid, for at most the displayed size (ask size,
  bid size); what is left waits for the next quote. Each quote's displayed size is shared
  by all orders on that side of one instrument, first come first served.
* MKT fills at once (partially if it is larger than the displayed size).
* LMT that is marketable on arrival fills at the quote (price improvement, liquidity
  "removed"); otherwise it rests and fills at its limit price once the market crosses it
  (liquidity "added").
* STP / STP LMT wait until the trigger price reaches the stop, then act as MKT / LMT.
  The trigger price follows ``triggerMethod``: last (default), bid/ask, or midpoint.
* TRAIL keeps a stop at a fixed amount (``auxPrice``) or percentage
  (``trailingPercent``) behind the best trigger price seen since submission, moving only
  in the order's favour; when hit it becomes a market order.
* TRAIL LIMIT trails like TRAIL; when hit it becomes a limit order at the stop plus
  (buy) or minus (sell) ``lmtPriceOffset``.
* MIT / LIT wait until the trigger price touches ``auxPrice`` from the other side (a buy
  when the price falls to it, a sell when it rises to it), then act as MKT / LMT.
* MIDPRICE fills at the midpoint of the bid and ask, never worse than its optional cap
  (``lmtPrice``).
* REL (pegged to primary) is a limit that follows the bid (buy) or ask (sell), moved by
  an offset (``auxPrice`` amount or ``percentOffset``) towards the other side and capped
  by its optional ``lmtPrice``; it fills when the market comes through its last peg.
* MOC / LOC, and MKT / LMT with TIF OPG, take no part in continuous trading: they wait
  for the closing (opening) auction, which the order desk runs on the simulated clock
  (:meth:`MatchingEngine.auction`): everything fills at the auction price (a limit only
  if its price allows), the rest is cancelled.
* TIF: DAY and GTC rest until filled or cancelled (DAY orders expire at the close, GTD
  ones at their time; the order desk does that on the simulated clock); IOC fills what
  is available on arrival and the rest is cancelled; FOK fills its whole quantity on
  arrival or nothing.
* ``held`` orders (not transmitted, waiting for a parent, outside trading hours) are not
  evaluated at all: no trigger, no trail, no fill.

Commissions follow IB's *fixed* pricing plan (https://www.interactivebrokers.com/en/pricing/commissions-stocks.php,
.../commissions-spot-currencies.php), charged per order and spread over its executions:

* US stocks/ETFs: USD 0.005 per share, at least USD 1.00 per order, at most 1 % of the
  trade value (exchange, regulatory and clearing fees are included in the fixed plan).
* Forex (IDEALPRO): 0.2 basis points of the trade value, at least USD 2.00 per order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import NamedTuple

from tws_simulator.market import Quote

# Each order type and the tag contract details list it under (Instrument.order_types):
# an instrument supports an order type when its list names the tag, as in TWS.
ORDER_TYPE_TAGS = {
    "MKT": "MKT",
    "LMT": "LMT",
    "STP": "STP",
    "STP LMT": "STPLMT",
    "TRAIL": "TRAIL",
    "TRAIL LIMIT": "TRAILLMT",
    "MOC": "MOC",
    "LOC": "LOC",
    "MIT": "MIT",
    "LIT": "LIT",
    "MIDPRICE": "MIDPX",
    "REL": "REL",
}
SUPPORTED_ORDER_TYPES = frozenset(ORDER_TYPE_TAGS)
SUPPORTED_TIFS = frozenset({"DAY", "GTC", "IOC", "GTD", "OPG", "FOK"})
# Orders that wait for a trigger (PreSubmitted until it is hit).
TRIGGERED_TYPES = frozenset({"STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIT", "LIT"})
TRAILING_TYPES = frozenset({"TRAIL", "TRAIL LIMIT"})
CLOSE_AUCTION_TYPES = frozenset({"MOC", "LOC"})
# Types whose price is a limit (lmtPrice required).
LIMIT_PRICE_TYPES = frozenset({"LMT", "STP LMT", "LIT", "LOC"})
# Types that may work outside regular trading hours when outsideRth is set.
OUTSIDE_RTH_TYPES = frozenset({"LMT", "STP LMT", "LIT", "TRAIL LIMIT", "REL"})

# Liquidity flags of an execution (Execution.lastLiquidity).
ADDED_LIQUIDITY = 1
REMOVED_LIQUIDITY = 2

# Trigger methods (Order.triggerMethod).
TRIGGER_DEFAULT = 0
TRIGGER_DOUBLE_BID_ASK = 1
TRIGGER_LAST = 2
TRIGGER_DOUBLE_LAST = 3
TRIGGER_BID_ASK = 4
TRIGGER_LAST_OR_BID_ASK = 7
TRIGGER_MIDPOINT = 8
TRIGGER_METHODS = frozenset(
    {
        TRIGGER_DEFAULT,
        TRIGGER_DOUBLE_BID_ASK,
        TRIGGER_LAST,
        TRIGGER_DOUBLE_LAST,
        TRIGGER_BID_ASK,
        TRIGGER_LAST_OR_BID_ASK,
        TRIGGER_MIDPOINT,
    }
)

# Commission plan (IB fixed pricing).
STOCK_PER_SHARE = 0.005
# US options: per contract by premium, at least 1.00 per order; US futures and futures
# options: 0.85 per contract plus the exchange and regulatory fees (CME E-mini 1.28 and
# NFA 0.02), which the fixed plan passes on for futures.
OPTION_PER_CONTRACT = 0.65
OPTION_PER_CONTRACT_UNDER_10C = 0.50
OPTION_PER_CONTRACT_UNDER_5C = 0.25
OPTION_MIN_PER_ORDER = 1.00
FUTURES_PER_CONTRACT = 0.85
FUTURES_FEES_PER_CONTRACT = 1.30
STOCK_MIN_PER_ORDER = 1.00
STOCK_MAX_RATE = 0.01
FX_RATE = 0.00002  # 0.2 basis points
FX_MIN_PER_ORDER = 2.00


@dataclass(frozen=True)
class Rejection:
    """Why an order is refused: an IB error code and TWS's text."""

    code: int
    message: str


# IB's codes and texts (TWS API "Message Codes" reference).
NO_SECURITY_DEFINITION = Rejection(200, "No security definition has been found for the request")
AMBIGUOUS_CONTRACT = Rejection(200, "The contract description specified is ambiguous.")
PRICE_OFF_TICK = Rejection(
    110, "The price does not conform to the minimum price variation for this contract."
)
SIZE_ZERO = Rejection(434, "The order size cannot be zero.")
FRACTIONAL_SIZE = Rejection(
    10243,
    "Fractional-sized order cannot be placed via API. "
    "Please use desktop version to place this order.",
)
INCOMPLETE_ORDER = Rejection(107, "Cannot transmit incomplete order.")
UNSUPPORTED_ORDER_TYPE = Rejection(
    387, "Unsupported order type for this exchange and security type."
)
TIF_INCOMPATIBLE = Rejection(111, "The TIF (Tif type) and the order type are incompatible.")
TRAIL_OFFSET_MISSING = Rejection(
    158, "You must specify an offset amount or a percent offset value."
)
TRAIL_PERCENT_RANGE = Rejection(159, "The percent offset value must be between 0% and 100%.")
INVALID_ACTION = Rejection(
    321, "Error validating request.-'bN' : cause - Invalid side. Valid values are BUY or SELL."
)
INVALID_TRIGGER_METHOD = Rejection(146, "Invalid trigger method.")
GTD_DATE_MISSING = Rejection(
    201, "Order rejected - reason:Good Till Date (GTD) orders need a goodTillDate"
)
GTD_IN_PAST = Rejection(
    201, "Order rejected - reason:The Good Till Date (GTD) of the order is in the past"
)
LIMIT_OFFSET_MISSING = Rejection(
    201, "Order rejected - reason:TRAIL LIMIT orders need a limit price offset (lmtPriceOffset)"
)


def insufficient_buying_power(equity: float, required: float, currency: str) -> Rejection:
    """IB's 201 for a margin shortfall, with its uppercase reason text."""
    return Rejection(
        201,
        "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED "
        f"POSITION YOUR EQUITY WITH LOAN VALUE [{equity:.2f} {currency}] MUST EXCEED THE "
        f"INITIAL MARGIN [{required:.2f} {currency}]",
    )


def on_tick_grid(price: float, min_tick: float) -> bool:
    """Whether ``price`` is a whole number of ticks (with float tolerance)."""
    steps = price / min_tick
    return abs(steps - round(steps)) < 1e-6 * max(1.0, abs(steps))


def round_to_tick(price: float, min_tick: float) -> float:
    decimals = max(0, -math.floor(math.log10(min_tick)) + 1)
    return round(round(price / min_tick) * min_tick, decimals)


@dataclass(frozen=True)
class OrderSpec:
    """The parts of an order the engine validates and executes."""

    action: str  # BUY / SELL
    quantity: Decimal
    order_type: str
    lmt_price: float | None = None
    aux_price: float | None = None  # stop price (STP, STP LMT) or trailing amount (TRAIL)
    trailing_percent: float | None = None
    trail_stop_price: float | None = None  # initial stop of a TRAIL order, if given
    tif: str = "DAY"
    trigger_method: int = TRIGGER_DEFAULT
    lmt_price_offset: float | None = None  # TRAIL LIMIT: limit = stop -/+ this
    percent_offset: float | None = None  # REL: offset as a fraction of the peg price
    outside_rth: bool = False

    @property
    def auction_only(self) -> bool:
        """Works only in an auction: MOC / LOC at the close, OPG at the open."""
        return self.order_type in CLOSE_AUCTION_TYPES or self.tif == "OPG"


_DEFAULT_TAGS = ",".join([*ORDER_TYPE_TAGS.values(), "DAY", "GTC", "IOC", "GTD", "OPG"])


def validate(
    spec: OrderSpec, *, sec_type: str, min_tick: float, order_types: str = _DEFAULT_TAGS
) -> Rejection | None:
    """Static checks of an order against its instrument; None when it may be placed.

    ``order_types`` is the instrument's contract-details list of order types and TIFs:
    a type or TIF it does not name is refused as TWS refuses it.
    """
    if spec.action not in ("BUY", "SELL"):
        return INVALID_ACTION
    tags = frozenset(order_types.split(","))
    kind = spec.order_type
    if kind not in SUPPORTED_ORDER_TYPES or ORDER_TYPE_TAGS[kind] not in tags:
        return UNSUPPORTED_ORDER_TYPE
    if spec.quantity <= 0:
        return SIZE_ZERO
    if sec_type == "STK" and spec.quantity != spec.quantity.to_integral_value():
        return FRACTIONAL_SIZE
    tif = spec.tif or "DAY"
    # FOK is not in the abridged lists; IB offers it for stocks.
    tif_listed = tif in tags or (tif == "FOK" and sec_type == "STK")
    if tif not in SUPPORTED_TIFS or not tif_listed:
        return TIF_INCOMPATIBLE
    if tif in ("IOC", "FOK") and (kind in TRIGGERED_TYPES or kind in CLOSE_AUCTION_TYPES):
        return TIF_INCOMPATIBLE
    if tif == "OPG" and kind not in ("MKT", "LMT"):
        return TIF_INCOMPATIBLE
    if kind in CLOSE_AUCTION_TYPES and tif != "DAY":
        return TIF_INCOMPATIBLE
    if spec.trigger_method not in TRIGGER_METHODS:
        return INVALID_TRIGGER_METHOD
    if kind in LIMIT_PRICE_TYPES and spec.lmt_price is None:
        return INCOMPLETE_ORDER
    if kind in ("STP", "STP LMT", "MIT", "LIT") and spec.aux_price is None:
        return INCOMPLETE_ORDER
    if kind in TRAILING_TYPES:
        if spec.aux_price is None and spec.trailing_percent is None:
            return TRAIL_OFFSET_MISSING
        if spec.trailing_percent is not None and not 0 < spec.trailing_percent < 100:
            return TRAIL_PERCENT_RANGE
        if kind == "TRAIL LIMIT" and spec.lmt_price_offset is None:
            return LIMIT_OFFSET_MISSING
    if spec.percent_offset is not None and not 0 <= spec.percent_offset < 1:
        return TRAIL_PERCENT_RANGE
    prices = [spec.lmt_price, spec.aux_price, spec.trail_stop_price, spec.lmt_price_offset]
    if kind in ("MKT", "MOC"):
        prices = []  # ib_insync sends 0.0 / unset there; TWS ignores them for MKT
    elif kind == "TRAIL LIMIT":
        prices = [spec.aux_price, spec.trail_stop_price, spec.lmt_price_offset]
    for price in prices:
        if price is not None and not on_tick_grid(price, min_tick):
            return PRICE_OFF_TICK
    return None


def margin_check(
    *,
    action: str,
    quantity: Decimal,
    price: float,
    position: Decimal,
    equity: float,
    buying_power: float,
    currency: str = "USD",
) -> Rejection | None:
    """Refuse an order whose added exposure exceeds the buying power.

    Only the part of the order that increases the absolute position needs funds; closing
    a position is always allowed. ``equity`` is reported in the reason text.
    """
    reduces = position < 0 if action == "BUY" else position > 0
    added = quantity - min(quantity, abs(position)) if reduces else quantity
    if added <= 0:
        return None
    needed = float(added) * price
    if needed <= buying_power:
        return None
    return insufficient_buying_power(equity, equity + needed - buying_power, currency)


def order_commission(sec_type: str, quantity: Decimal, value: float) -> float:
    """The commission of an order that executed ``quantity`` for ``value`` (fixed plan;
    ``value`` is quantity times price, before any contract multiplier)."""
    if quantity <= 0:
        return 0.0
    if sec_type == "CASH":
        return round(max(FX_MIN_PER_ORDER, abs(value) * FX_RATE), 2)
    if sec_type == "OPT":
        # per contract by premium (the average price of the order), at least per order
        premium = abs(value) / float(quantity)
        rate = OPTION_PER_CONTRACT
        if premium < 0.05:
            rate = OPTION_PER_CONTRACT_UNDER_5C
        elif premium < 0.10:
            rate = OPTION_PER_CONTRACT_UNDER_10C
        return round(max(OPTION_MIN_PER_ORDER, float(quantity) * rate), 2)
    if sec_type in ("FUT", "FOP"):
        return round(float(quantity) * (FUTURES_PER_CONTRACT + FUTURES_FEES_PER_CONTRACT), 2)
    fee = max(STOCK_MIN_PER_ORDER, float(quantity) * STOCK_PER_SHARE)
    return round(min(fee, max(STOCK_MIN_PER_ORDER, abs(value) * STOCK_MAX_RATE)), 2)


@dataclass
class WorkingOrder:
    """An order the engine is executing; ``key`` is unique (the perm id)."""

    key: int
    con_id: int
    spec: OrderSpec
    min_tick: float
    sec_type: str = "STK"
    filled: Decimal = Decimal(0)
    filled_value: float = 0.0  # sum of quantity * price over the fills
    commission_charged: float = 0.0
    triggered: bool = False  # a stop order whose stop was hit
    marketable: bool = False  # the limit was marketable at the last quote it saw
    trail_stop: float | None = None  # the live stop of a TRAIL order
    held: bool = False  # not evaluated (not transmitted, waiting for a parent or a session)
    peg_price: float | None = None  # REL: the limit it pegged to at the last quote
    trail_limit: float | None = None  # TRAIL LIMIT: the limit fixed when it triggered
    _trail_extreme: float | None = field(default=None, repr=False)

    @property
    def remaining(self) -> Decimal:
        return self.spec.quantity - self.filled

    @property
    def is_buy(self) -> bool:
        return self.spec.action == "BUY"

    @property
    def avg_fill_price(self) -> float:
        return self.filled_value / float(self.filled) if self.filled else 0.0

    @property
    def effective_type(self) -> str:
        """What the order behaves as right now: stops become MKT/LMT once triggered."""
        kind = self.spec.order_type
        if kind in ("STP", "TRAIL", "MIT"):
            return "MKT" if self.triggered else kind
        if kind in ("STP LMT", "TRAIL LIMIT", "LIT"):
            return "LMT" if self.triggered else kind
        return kind

    def limit_price(self) -> float | None:
        """The limit a triggered or plain limit order works at."""
        if self.spec.order_type == "TRAIL LIMIT":
            return self.trail_limit
        return self.spec.lmt_price

    def commission_for(self, quantity: Decimal, price: float) -> float:
        """The commission of the next execution: the order's total so far minus what was
        already charged, so the per-order minimum is paid once."""
        total = order_commission(
            self.sec_type, self.filled + quantity, self.filled_value + float(quantity) * price
        )
        return round(max(0.0, total - self.commission_charged), 2)


@dataclass(frozen=True)
class Fill:
    """One execution produced by the engine (already booked on the order)."""

    order: WorkingOrder
    quantity: Decimal
    price: float
    liquidity: int
    commission: float


def _trigger_price(order: WorkingOrder, quote: Quote) -> float:
    method = order.spec.trigger_method
    if method in (TRIGGER_DOUBLE_BID_ASK, TRIGGER_BID_ASK):
        return quote.ask if order.is_buy else quote.bid
    if method == TRIGGER_MIDPOINT:
        return quote.midpoint
    return quote.last


def _stop_hit(order: WorkingOrder, stop: float, quote: Quote) -> bool:
    prices = [_trigger_price(order, quote)]
    if order.spec.trigger_method == TRIGGER_LAST_OR_BID_ASK:
        prices.append(quote.ask if order.is_buy else quote.bid)
    if order.is_buy:
        return any(p >= stop for p in prices)
    return any(p <= stop for p in prices)


def _touched(order: WorkingOrder, level: float, quote: Quote) -> bool:
    """MIT / LIT: the price came to ``level`` from the other side than a stop's."""
    price = _trigger_price(order, quote)
    return price <= level if order.is_buy else price >= level


def _peg(order: WorkingOrder, quote: Quote) -> float | None:
    """REL: the bid (buy) or ask (sell) moved by the offset towards the other side,
    capped by the order's limit; None when the quote has no price on that side."""
    spec = order.spec
    base = quote.bid if order.is_buy else quote.ask
    if base <= 0:
        return None
    offset = spec.aux_price or 0.0
    if spec.percent_offset:
        offset = base * spec.percent_offset
    price = base + offset if order.is_buy else base - offset
    if spec.lmt_price:
        price = min(price, spec.lmt_price) if order.is_buy else max(price, spec.lmt_price)
    return round_to_tick(price, order.min_tick)


def book_fill(order: WorkingOrder, quantity: Decimal, price: float, liquidity: int) -> Fill:
    """Record an execution on the order (with its share of the commission)."""
    commission = order.commission_for(quantity, price)
    order.filled += quantity
    order.filled_value += float(quantity) * price
    order.commission_charged += commission
    return Fill(order, quantity, price, liquidity, commission)


class OrderBook:
    """The working orders of one instrument, re-evaluated on each of its quotes."""

    __slots__ = ("_ask_left", "_bid_left", "_quote", "orders")

    def __init__(self) -> None:
        self.orders: dict[int, WorkingOrder] = {}
        self._quote: Quote | None = None
        self._ask_left = Decimal(0)
        self._bid_left = Decimal(0)

    def _use_quote(self, quote: Quote) -> None:
        """A new quote refreshes the displayed size all orders share."""
        if quote is not self._quote:
            self._quote = quote
            self._ask_left = quote.ask_size
            self._bid_left = quote.bid_size

    def evaluate(self, order: WorkingOrder, quote: Quote, *, arriving: bool) -> Fill | None:
        """Trigger/trail bookkeeping and at most one execution for ``order`` on ``quote``."""
        self._use_quote(quote)
        if order.held or order.spec.auction_only:
            return None
        spec = order.spec
        was_triggered = order.triggered
        if spec.order_type in TRAILING_TYPES and not order.triggered:
            self._update_trail(order, quote)
            assert order.trail_stop is not None
            if _stop_hit(order, order.trail_stop, quote):
                order.triggered = True
                if spec.order_type == "TRAIL LIMIT":
                    offset = spec.lmt_price_offset or 0.0
                    stop = order.trail_stop
                    order.trail_limit = round_to_tick(
                        stop + offset if order.is_buy else stop - offset, order.min_tick
                    )
        elif spec.order_type in ("STP", "STP LMT") and not order.triggered:
            assert spec.aux_price is not None
            if _stop_hit(order, spec.aux_price, quote):
                order.triggered = True
        elif spec.order_type in ("MIT", "LIT") and not order.triggered:
            assert spec.aux_price is not None
            if _touched(order, spec.aux_price, quote):
                order.triggered = True
        # A triggered stop enters the market like a new order.
        entering = arriving or (order.triggered and not was_triggered)
        kind = order.effective_type
        if kind == "MIDPRICE":
            return self._fill_at_mid(order, quote)
        if kind not in ("MKT", "LMT", "REL"):
            return None
        touch = quote.ask if order.is_buy else quote.bid
        if touch <= 0:
            return None
        if kind in ("LMT", "REL"):
            if kind == "REL":
                # A resting peg is judged at the price it pegged to on the previous quote.
                peg = _peg(order, quote)
                limit_or_none = peg if entering or order.peg_price is None else order.peg_price
                order.peg_price = peg
            else:
                limit_or_none = order.limit_price()
            if limit_or_none is None:
                return None
            limit = limit_or_none
            marketable = touch <= limit if order.is_buy else touch >= limit
            was_marketable, order.marketable = order.marketable, marketable
            if not marketable:
                return None
            # A resting limit the market has just come through trades at its own price
            # (it provided the liquidity); one that is marketable on arrival, or still
            # marketable from the previous quote, takes the quote.
            crossed = not entering and not was_marketable
            price = limit if crossed else touch
            liquidity = ADDED_LIQUIDITY if crossed else REMOVED_LIQUIDITY
        else:
            price = touch
            liquidity = REMOVED_LIQUIDITY
        return self._take(order, price, liquidity, arriving=arriving)

    def _fill_at_mid(self, order: WorkingOrder, quote: Quote) -> Fill | None:
        """MIDPRICE: the midpoint, if the optional cap allows it."""
        if quote.bid <= 0 or quote.ask <= 0:
            return None
        mid = quote.midpoint
        cap = order.spec.lmt_price
        if cap and (mid > cap if order.is_buy else mid < cap):
            return None
        return self._take(order, round(mid, 10), REMOVED_LIQUIDITY, arriving=False)

    def _take(
        self, order: WorkingOrder, price: float, liquidity: int, *, arriving: bool
    ) -> Fill | None:
        """Execute what the displayed size allows (all of it, or nothing, for FOK)."""
        available = self._ask_left if order.is_buy else self._bid_left
        quantity = min(order.remaining, available)
        if quantity <= 0:
            return None
        if order.spec.tif == "FOK" and quantity < order.remaining:
            return None
        if order.is_buy:
            self._ask_left -= quantity
        else:
            self._bid_left -= quantity
        return book_fill(order, quantity, price, liquidity)

    def _update_trail(self, order: WorkingOrder, quote: Quote) -> None:
        spec = order.spec
        reference = _trigger_price(order, quote)
        extreme = order._trail_extreme
        if extreme is None:
            extreme = reference
        elif order.is_buy:
            extreme = min(extreme, reference)
        else:
            extreme = max(extreme, reference)
        order._trail_extreme = extreme
        if spec.trailing_percent is not None:
            offset = extreme * spec.trailing_percent / 100.0
        else:
            offset = spec.aux_price or 0.0
        stop = round_to_tick(extreme + offset if order.is_buy else extreme - offset, order.min_tick)
        current = order.trail_stop
        if current is None:
            # A stop the client gave (trailStopPrice) is where the trail starts.
            given = spec.trail_stop_price
            order.trail_stop = given if given is not None else stop
        elif order.is_buy:
            order.trail_stop = min(current, stop)
        else:
            order.trail_stop = max(current, stop)


class QuoteResult(NamedTuple):
    """What one quote did: executions, and stop orders whose stop it hit."""

    fills: list[Fill]
    triggered: list[WorkingOrder]


_NOTHING = QuoteResult([], [])


@dataclass
class SubmitResult:
    fills: list[Fill]
    expired: bool  # an IOC order whose unfilled rest was cancelled


class MatchingEngine:
    """All working orders, indexed by instrument so a quote only touches its own book."""

    def __init__(self) -> None:
        self._books: dict[int, OrderBook] = {}
        self._by_key: dict[int, WorkingOrder] = {}

    def __contains__(self, key: int) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: int) -> WorkingOrder | None:
        return self._by_key.get(key)

    def submit(self, order: WorkingOrder, quote: Quote) -> SubmitResult:
        """Add an order and execute what the current quote allows."""
        book = self._books.get(order.con_id)
        if book is None:
            book = self._books[order.con_id] = OrderBook()
        fills = self._run(book, order, quote, arriving=True)
        if order.remaining > 0 and order.spec.tif in ("IOC", "FOK") and not order.held:
            return SubmitResult(fills, expired=True)
        if order.remaining > 0:
            book.orders[order.key] = order
            self._by_key[order.key] = order
        return SubmitResult(fills, expired=False)

    def modify(self, key: int, spec: OrderSpec, quote: Quote) -> list[Fill]:
        """Replace the order's terms (quantity, prices, TIF) and re-evaluate it at once."""
        order = self._by_key[key]
        order.spec = spec
        order.trail_stop = None  # recomputed from the best price seen, with the new offset
        book = self._books[order.con_id]
        fills = self._run(book, order, quote, arriving=True)
        if order.remaining <= 0:
            self._remove(order)
        return fills

    def cancel(self, key: int) -> WorkingOrder | None:
        order = self._by_key.get(key)
        if order is not None:
            self._remove(order)
        return order

    def on_quote(
        self, con_id: int, quote: Quote, on_fill: Callable[[Fill], None] | None = None
    ) -> QuoteResult:
        """Re-evaluate the working orders of one instrument; cheap when it has none.

        ``on_fill`` runs after each execution, before the next order is evaluated, so it
        can cancel or reduce orders linked to the one that filled (OCA groups with block).
        """
        book = self._books.get(con_id)
        if book is None or not book.orders:
            return _NOTHING
        fills: list[Fill] = []
        triggered: list[WorkingOrder] = []
        for order in list(book.orders.values()):
            if order.key not in book.orders or order.remaining <= 0:
                continue  # cancelled or reduced to nothing by an earlier fill of this quote
            was_triggered = order.triggered
            fill = book.evaluate(order, quote, arriving=False)
            if order.triggered and not was_triggered:
                triggered.append(order)
            if fill is not None:
                fills.append(fill)
                if order.remaining <= 0:
                    self._remove(order)
                if on_fill is not None:
                    on_fill(fill)
        return QuoteResult(fills, triggered)

    def activate(self, key: int, quote: Quote) -> list[Fill]:
        """A held order starts working: evaluate it as if it had just arrived."""
        order = self._by_key.get(key)
        if order is None or not order.held:
            return []
        order.held = False
        fills = self._run(self._books[order.con_id], order, quote, arriving=True)
        if order.remaining <= 0:
            self._remove(order)
        return fills

    def resize(self, key: int, quantity: Decimal) -> None:
        """Change an order's total quantity (an OCA reduction); at or below the filled
        quantity the order stops working."""
        order = self._by_key.get(key)
        if order is None:
            return
        order.spec = replace(order.spec, quantity=max(quantity, order.filled))
        if order.remaining <= 0:
            self._remove(order)

    def auction(self, con_id: int, price: float, wanted: Callable[[int], bool]) -> list[Fill]:
        """An opening or closing auction: every wanted order fills in full at ``price``
        (a limit only when its price allows) and stops working either way."""
        book = self._books.get(con_id)
        if book is None:
            return []
        fills: list[Fill] = []
        for order in list(book.orders.values()):
            if order.held or not wanted(order.key):
                continue
            limit = order.spec.lmt_price if order.spec.order_type in ("LMT", "LOC") else None
            crosses = limit is None or (price <= limit if order.is_buy else price >= limit)
            if crosses and order.remaining > 0:
                fills.append(book_fill(order, order.remaining, price, REMOVED_LIQUIDITY))
            self._remove(order)
        return fills

    def _run(
        self, book: OrderBook, order: WorkingOrder, quote: Quote, *, arriving: bool
    ) -> list[Fill]:
        fill = book.evaluate(order, quote, arriving=arriving)
        return [fill] if fill is not None else []

    def _remove(self, order: WorkingOrder) -> None:
        self._by_key.pop(order.key, None)
        book = self._books.get(order.con_id)
        if book is not None:
            book.orders.pop(order.key, None)
