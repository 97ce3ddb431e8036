"""A seedable random-walk market: one live quote per instrument, always on the tick grid."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .instruments import Instrument, tick_at
from .options import (
    DIVIDEND_YIELD,
    RATE,
    OptionModel,
    atm_vol_of,
    expiry_time,
    smile,
    years_to,
)
from .universe import Universe

log = logging.getLogger(__name__)

QuoteListener = Callable[[int, "Quote"], None]

# The most time the market spends moving prices in one pass of the event loop, and the
# rest it takes after each pass (REST_FACTOR × the work). When the steps that fell due
# take longer (the loop was blocked, or the rate is more than this process can make), the
# rest are dropped and the market carries on from its latest prices, as a real feed does
# when its consumer falls behind: the loop stays shared with everything else in the
# process (an embedded gateway's gRPC senders, for one), and it goes idle now and then,
# which gRPC's completion thread needs to get the GIL.
MAX_WORK_PER_WAKE = 0.002
REST_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Quote:
    """The state of one instrument's market at one moment (immutable: a new one per change)."""

    bid: float
    ask: float
    last: float
    bid_size: Decimal
    ask_size: Decimal
    last_size: Decimal
    volume: Decimal
    high: float
    low: float
    close: float  # the previous session's close
    open: float
    last_time: int  # epoch seconds of the last trade

    @property
    def midpoint(self) -> float:
        return (self.bid + self.ask) / 2


def _decimals(tick: float) -> int:
    """How many decimals a price on this tick grid needs (0.01 → 2, 0.00005 → 5)."""
    exponent = Decimal(str(tick)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


class _Walker:
    """The random walk of one instrument, in integer ticks so prices stay on the grid."""

    __slots__ = (
        "_decimals",
        "_is_cash",
        "_lot",
        "_rng",
        "_spread",
        "_tick",
        "_vol",
        "inst",
        "mid_ticks",
        "quote",
    )

    def __init__(self, inst: Instrument, rng: random.Random, now: int) -> None:
        self.inst = inst
        self._rng = rng
        self._tick = inst.min_tick
        self._decimals = _decimals(inst.min_tick)
        self._spread = inst.spread_ticks
        self._lot = inst.lot_size
        self._vol = inst.volatility
        # Forex and indices have no trades: their "last" follows the midpoint.
        self._is_cash = inst.is_cash or inst.is_index
        self.mid_ticks = float(round(inst.start_price / self._tick))
        close = self._price(round(self.mid_ticks * (1 + rng.uniform(-0.01, 0.01))))
        bid_t, ask_t = self._bid_ask_ticks()
        bid, ask = self._price(bid_t), self._price(ask_t)
        last = self._price(round(self.mid_ticks)) if self._is_cash else ask
        volume = Decimal(0) if self._is_cash else Decimal(self._lot * rng.randint(1_000, 50_000))
        self.quote = Quote(
            bid=bid,
            ask=ask,
            last=last,
            bid_size=self._size(),
            ask_size=self._size(),
            last_size=Decimal(0) if self._is_cash else Decimal(self._lot),
            volume=volume,
            # the day's range brackets the bid, ask and last (clients check it)
            high=max(ask, last),
            low=min(bid, last),
            close=close,
            open=last,
            last_time=now,
        )

    def _price(self, ticks: int) -> float:
        return round(ticks * self._tick, self._decimals)

    def _size(self) -> Decimal:
        return Decimal(self._lot * self._rng.randint(1, 20))

    def _bid_ask_ticks(self) -> tuple[int, int]:
        # Mostly the tightest spread, sometimes one or two ticks wider.
        r = self._rng.random()
        spread = self._spread + (0 if r < 0.7 else 1 if r < 0.93 else 2)
        bid = math.floor(self.mid_ticks - spread / 2)
        return bid, bid + spread

    def step(self, now: int) -> Quote:
        rng = self._rng
        q = self.quote
        # Relative move, expressed in ticks; the floor keeps prices positive.
        self.mid_ticks = max(
            self._spread + 1.0, self.mid_ticks * (1.0 + self._vol * rng.gauss(0.0, 1.0))
        )
        bid_t, ask_t = self._bid_ask_ticks()
        bid, ask = self._price(bid_t), self._price(ask_t)
        bid_size = self._size() if bid != q.bid or rng.random() < 0.5 else q.bid_size
        ask_size = self._size() if ask != q.ask or rng.random() < 0.5 else q.ask_size
        last, last_size, volume, last_time = q.last, q.last_size, q.volume, q.last_time
        high, low = q.high, q.low
        if self._is_cash:
            # Forex has no trades: "last" follows the midpoint so stops have a reference.
            last = self._price(round(self.mid_ticks))
        elif rng.random() < 0.4:
            last = bid if rng.random() < 0.5 else ask
            lots = rng.randint(1, 5) if rng.random() < 0.8 else 0
            last_size = Decimal(self._lot * lots if lots else rng.randint(1, 99))
            volume = volume + last_size
            last_time = now
        high = max(high, ask, last)
        low = min(low, bid, last)
        self.quote = Quote(
            bid,
            ask,
            last,
            bid_size,
            ask_size,
            last_size,
            volume,
            high,
            low,
            q.close,
            q.open,
            last_time,
        )
        return self.quote

    def move_to(self, price: float, now: int) -> Quote:
        """Put the midpoint at ``price`` (for tests and scripted scenarios)."""
        self.mid_ticks = price / self._tick
        q = self.quote
        bid_t, ask_t = self._bid_ask_ticks()
        bid, ask = self._price(bid_t), self._price(ask_t)
        last = self._price(round(self.mid_ticks))
        self.quote = Quote(
            bid,
            ask,
            last,
            q.bid_size,
            q.ask_size,
            q.last_size,
            q.volume,
            max(q.high, ask, last),
            min(q.low, bid, last),
            q.close,
            q.open,
            now,
        )
        return self.quote


def _round_down(price: float, rule: int) -> float:
    step = tick_at(rule, price)
    return round(math.floor(price / step + 1e-9) * step, 2)


def _round_up(price: float, rule: int) -> float:
    step = tick_at(rule, price)
    return round(math.ceil(price / step - 1e-9) * step, 2)


class DerivedWalker:
    """The quote of one derivative, re-priced from its underlying's quote at every step."""

    def __init__(
        self, inst: Instrument, atm_vol: float, rng: random.Random, under: Quote, now: float
    ) -> None:
        self.inst = inst
        self._rng = rng
        self._atm_vol = atm_vol
        self._expiry = expiry_time(datetime.strptime(inst.last_trade_date, "%Y%m%d").date())
        self.model: OptionModel | None = None
        bid, ask, fair = self._bid_ask(under, now)
        close = self._on_grid(fair * (1 + rng.uniform(-0.03, 0.03)))
        last = ask if ask > 0 else fair
        self.quote = Quote(
            bid=bid,
            ask=ask,
            last=last,
            bid_size=self._size(),
            ask_size=self._size(),
            last_size=Decimal(1),
            volume=Decimal(rng.randint(0, 5_000)),
            high=max(last, close),
            low=min(last, close),
            close=close,
            open=close,
            last_time=int(now),
        )

    def _size(self) -> Decimal:
        return Decimal(self._rng.randint(1, 60))

    def _on_grid(self, price: float) -> float:
        if self.inst.is_option:
            return max(0.0, _round_down(price, self.inst.market_rule_id))
        return round(round(price / self.inst.min_tick) * self.inst.min_tick, 2)

    def _bid_ask(self, under: Quote, now: float) -> tuple[float, float, float]:
        """(bid, ask, fair value) from the underlying's quote at ``now``."""
        # (rounded: TWS reports the underlying's price as a price, not a float artifact)
        spot = round(under.midpoint if under.bid > 0 and under.ask > 0 else under.last, 6)
        t = years_to(self._expiry, now)
        inst = self.inst
        if inst.sec_type == "FUT":
            fair = spot * math.exp((RATE - DIVIDEND_YIELD) * t)
            tick = inst.min_tick
            bid = math.floor(fair / tick) * tick
            wide = 1 if self._rng.random() < 0.85 else 2
            return round(bid, 2), round(bid + wide * tick, 2), fair
        # Options on a future are Black-76 (q = r); others carry the dividend yield.
        q = RATE if inst.sec_type == "FOP" else DIVIDEND_YIELD
        forward = spot * math.exp((RATE - q) * t)
        vol = smile(self._atm_vol, inst.strike, forward, t)
        self.model = OptionModel(spot, inst.strike, t, vol, inst.right, RATE, q)
        fair = self.model.greeks().price
        rule = inst.market_rule_id
        half = max(tick_at(rule, fair), fair * 0.015)
        bid = max(0.0, _round_down(fair - half, rule))
        ask = max(_round_up(fair + half, rule), bid + tick_at(rule, bid))
        return bid, round(ask, 2), fair

    def step(self, under: Quote, now: float) -> Quote:
        rng = self._rng
        q = self.quote
        bid, ask, _ = self._bid_ask(under, now)
        bid_size = self._size() if bid != q.bid or rng.random() < 0.3 else q.bid_size
        ask_size = self._size() if ask != q.ask or rng.random() < 0.3 else q.ask_size
        last, last_size, volume, last_time = q.last, q.last_size, q.volume, q.last_time
        trade_odds = 0.5 if self.inst.sec_type == "FUT" else 0.15
        if rng.random() < trade_odds and bid > 0:
            last = bid if rng.random() < 0.5 else ask
            last_size = Decimal(rng.randint(1, 10))
            volume += last_size
            last_time = int(now)
        self.quote = Quote(
            bid,
            ask,
            last,
            bid_size,
            ask_size,
            last_size,
            volume,
            max(q.high, ask, last),
            min(q.low, bid, last) if bid > 0 else min(q.low, last),
            q.close,
            q.open,
            last_time,
        )
        return self.quote


class Market:
    """Quotes for every instrument of the universe, moved by a random walk on a timer.

    ``tick_interval`` is the time between two steps; each step updates every instrument
    (or ``step_size`` of them, round robin), so the total rate of quote changes is
    ``len(universe) / tick_interval`` (``step_size / tick_interval``) per second.
    Listeners are called synchronously on every change; keep them cheap. Steps that the
    process cannot make in time are dropped (see :data:`MAX_WORK_PER_WAKE`); ``dropped``
    counts them. Derivatives (options, futures) are priced from their underlying from
    the first time anyone reads their quote on, then re-priced after each of its steps.
    """

    def __init__(
        self,
        universe: Universe,
        *,
        seed: int | None = None,
        tick_interval: float = 0.25,
        step_size: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        if step_size < 0:
            raise ValueError("step_size must be 0 (every instrument) or positive")
        self.universe = universe
        self.tick_interval = tick_interval
        self.step_size = step_size
        self.paused = False  # the offline fault: prices freeze and nothing is published
        self._clock = clock
        rng = random.Random(seed)
        now = int(clock())
        # One generator per instrument, so subscribing to one never changes another's walk.
        self._walkers = {
            inst.con_id: _Walker(inst, random.Random(rng.getrandbits(64)), now)
            for inst in universe.instruments
        }
        self._walker_list = list(self._walkers.values())
        # the round-robin order of a partial step (shuffled: neighbours are unrelated)
        self._order = list(self._walker_list)
        random.Random(rng.getrandbits(64)).shuffle(self._order)
        self._next = 0
        self._derived_seed = rng.getrandbits(64)
        self._derived: dict[int, DerivedWalker] = {}
        self._dependents: dict[int, list[DerivedWalker]] = {}  # underlying con_id → walkers
        self._listeners: list[QuoteListener] = []
        self._task: asyncio.Task[None] | None = None
        self.steps = 0
        self.dropped = 0  # steps skipped because the process could not keep up

    # -- reading -------------------------------------------------------------------------

    def quote(self, con_id: int) -> Quote:
        walker = self._walkers.get(con_id)
        if walker is not None:
            return walker.quote
        return self._derived_walker(con_id).quote

    def option_model(self, con_id: int) -> OptionModel | None:
        """The model inputs behind an option's latest quote (None for anything else)."""
        walker = self._derived.get(con_id)
        return walker.model if walker is not None else None

    def _derived_walker(self, con_id: int) -> DerivedWalker:
        """The walker of a derivative, started (priced off its underlying) on first use."""
        walker = self._derived.get(con_id)
        if walker is not None:
            return walker
        inst = self.universe.by_con_id(con_id)
        if inst is None or not inst.under_con_id:
            raise KeyError(con_id)
        under = self.quote(inst.under_con_id)
        # Seeded from the instrument, so a derivative's walk does not depend on which
        # other derivatives were read before it.
        rng = random.Random(self._derived_seed ^ con_id)
        walker = DerivedWalker(inst, atm_vol_of(inst), rng, under, self._clock())
        self._derived[con_id] = walker
        self._dependents.setdefault(inst.under_con_id, []).append(walker)
        return walker

    def add_listener(self, fn: QuoteListener) -> Callable[[], None]:
        """Call ``fn(con_id, quote)`` on every quote change; returns the unsubscribe function."""
        self._listeners.append(fn)

        def remove() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return remove

    # -- moving --------------------------------------------------------------------------

    def step(self) -> None:
        """Advance every instrument (or the next ``step_size``) by one random-walk step
        and publish the new quotes."""
        moment = self._clock()
        now = int(moment)
        self.steps += 1
        if not self.step_size:
            for walker in self._walker_list:
                self._step_one(walker, now, moment)
            return
        order = self._order
        for _ in range(min(self.step_size, len(order))):
            walker = order[self._next]
            self._next = (self._next + 1) % len(order)
            self._step_one(walker, now, moment)

    def _step_one(self, walker: _Walker, now: int, moment: float) -> None:
        con_id = walker.inst.con_id
        quote = walker.step(now)
        self._publish(con_id, quote)
        if con_id in self._dependents:
            self._step_dependents(con_id, quote, moment)

    def _step_dependents(self, con_id: int, quote: Quote, moment: float) -> None:
        """Re-price the derivatives of an instrument that just moved (and theirs)."""
        for walker in self._dependents[con_id]:
            dependent = walker.inst.con_id
            derived = walker.step(quote, moment)
            self._publish(dependent, derived)
            if dependent in self._dependents:  # options on a future
                self._step_dependents(dependent, derived, moment)

    def move_to(self, con_id: int, price: float) -> Quote:
        """Jump one listed instrument's midpoint to ``price`` and publish it (tests,
        scenarios); its derivatives follow."""
        moment = self._clock()
        quote = self._walkers[con_id].move_to(price, int(moment))
        self._publish(con_id, quote)
        if con_id in self._dependents:
            self._step_dependents(con_id, quote, moment)
        return quote

    def _publish(self, con_id: int, quote: Quote) -> None:
        for fn in self._listeners:
            try:
                fn(con_id, quote)
            except Exception:
                log.exception("quote listener %r failed", fn)

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="market")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_time = loop.time() + self.tick_interval
        clock = time.perf_counter
        while True:
            interval = self.tick_interval  # (may be changed while running: benchmarks)
            delay = next_time - loop.time()
            # (a zero sleep still yields: the loop's other work runs between passes)
            await asyncio.sleep(max(0.0, delay))
            # Steps that fell due while we slept run back to back, so high rates hold,
            # within a time budget per pass; what does not fit is dropped.
            now = loop.time()
            due = int((now - next_time) / interval) + 1
            next_time += due * interval
            if self.paused:
                continue
            started = clock()
            deadline = started + MAX_WORK_PER_WAKE
            for done in range(due):
                self.step()
                if clock() > deadline and done + 1 < due:
                    self.dropped += due - done - 1
                    break
            # Rest at least twice as long as that took: the market never takes more than
            # a third of the loop, whatever the rate asked (what does not fit is dropped).
            rest_until = loop.time() + REST_FACTOR * (clock() - started)
            if next_time < rest_until:
                skipped = int((rest_until - next_time) / interval) + 1
                self.dropped += skipped
                next_time += skipped * interval
