"""The random-walk market: deterministic with a seed, prices on the grid, sane quotes."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from decimal import Decimal

import pytest

from tws_simulator.market import MAX_WORK_PER_WAKE, REST_FACTOR, Market, Quote
from tws_simulator.universe import Universe


def on_grid(price: float, tick: float) -> bool:
    return (
        math.isclose(round(price / tick) * tick, price, abs_tol=tick / 1000)
        and round(price, 10) == price
    )


def run(seed: int, steps: int) -> list[Quote]:
    market = Market(Universe(), seed=seed, clock=lambda: 1_700_000_000.0)
    for _ in range(steps):
        market.step()
    return [market.quote(i.con_id) for i in market.universe]


def test_same_seed_same_market_and_different_seed_different_market() -> None:
    assert run(7, 200) == run(7, 200)
    assert run(7, 200) != run(8, 200)


def test_quotes_stay_on_the_grid_and_make_sense() -> None:
    universe = Universe()
    market = Market(universe, seed=3, clock=lambda: 1_700_000_000.0)
    for _ in range(2000):
        market.step()
        for inst in universe:
            q = market.quote(inst.con_id)
            assert 0 < q.bid < q.ask
            assert on_grid(q.bid, inst.min_tick) and on_grid(q.ask, inst.min_tick)
            assert round((q.ask - q.bid) / inst.min_tick) <= inst.spread_ticks + 2
            assert q.bid_size > 0 and q.ask_size > 0 and q.bid_size % inst.lot_size == 0
            assert q.low <= q.last <= q.high
    aapl = market.quote(265598)
    assert aapl.volume > 0 and aapl.last_size > 0 and aapl.last_time == 1_700_000_000
    assert isinstance(aapl.volume, Decimal)
    eur = market.quote(12087792)
    assert eur.volume == 0  # forex has no trades
    assert 0.9 < eur.bid < 1.3


def test_random_walk_moves_but_stays_near_its_start() -> None:
    first = run(11, 0)
    later = run(11, 5000)
    assert any(a.bid != b.bid for a, b in zip(first, later, strict=True))
    for a, b in zip(first, later, strict=True):
        assert 0.5 < b.bid / a.bid < 1.5


def test_listeners_see_every_change_and_can_unsubscribe() -> None:
    market = Market(Universe(), seed=1)
    seen: list[int] = []
    remove = market.add_listener(lambda con_id, quote: seen.append(con_id))
    market.step()
    assert len(seen) == len(market.universe)
    remove()
    market.step()
    assert len(seen) == len(market.universe)


def test_a_failing_listener_does_not_stop_the_others() -> None:
    market = Market(Universe(), seed=1)
    seen: list[int] = []

    def broken(con_id: int, quote: Quote) -> None:
        raise RuntimeError("boom")

    market.add_listener(broken)
    market.add_listener(lambda con_id, quote: seen.append(con_id))
    market.step()
    assert len(seen) == len(market.universe)


def test_move_to_jumps_the_midpoint() -> None:
    market = Market(Universe(), seed=1)
    quote = market.move_to(265598, 250.0)
    assert quote.bid <= 250.0 <= quote.ask
    assert market.quote(265598) is quote and quote.high >= 250.0


def test_tick_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Market(Universe(), tick_interval=0)


def test_a_partial_step_moves_the_next_instruments_round_robin() -> None:
    universe = Universe()
    market = Market(universe, seed=5, step_size=2, clock=lambda: 1_700_000_000.0)
    moved: list[int] = []
    market.add_listener(lambda con_id, quote: moved.append(con_id))
    count = len(universe.instruments)
    for _ in range(count):
        market.step()
    # two per step, each instrument twice over ``count`` steps, never twice in a row
    assert len(moved) == 2 * count
    assert sorted(moved) == sorted(2 * [i.con_id for i in universe])
    assert all(a != b for a, b in itertools.pairwise(moved))
    with pytest.raises(ValueError):
        Market(universe, step_size=-1)


async def test_falling_behind_drops_steps_instead_of_blocking_the_loop() -> None:
    """A rate the process cannot make: the market's work per loop pass stays bounded, it
    takes at most about a third of the loop (other tasks keep running), and the steps
    that do not fit are dropped."""
    universe = Universe()
    market = Market(universe, seed=1, tick_interval=1e-5)  # far more than it can make
    cost = 50e-6

    def busy(con_id: int, quote: Quote) -> None:  # a costly listener (an encoder, a socket)
        end = time.perf_counter() + cost
        while time.perf_counter() < end:
            pass

    market.add_listener(busy)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    market.start()
    try:
        start = last = loop.time()
        while last - start < 0.5:
            await asyncio.sleep(0)
            now = loop.time()
            gaps.append(now - last)
            last = now
    finally:
        await market.stop()
    elapsed = last - start
    assert market.steps > 10
    assert market.dropped > 10 * market.steps
    # one pass of the market: its budget plus at most one step (every instrument × cost)
    one_step = len(universe.instruments) * cost
    # Most passes fit the budget; a few may be stretched by the OS on a busy machine (a
    # market that never yields would hang this loop instead).
    gaps.sort()
    assert gaps[len(gaps) * 9 // 10] < MAX_WORK_PER_WAKE + one_step + 0.01
    market_time = market.steps * one_step
    assert market_time < elapsed * (1 / (1 + REST_FACTOR) + 0.1)


def test_the_day_range_brackets_bid_ask_and_last_at_every_step() -> None:
    market = Market(Universe(), seed=5, clock=lambda: 1_700_000_000.0)
    aapl = market.universe.by_symbol("AAPL")
    assert aapl is not None
    for step in range(400):
        if step == 200:
            market.move_to(aapl.con_id, 250.0)  # a scripted jump widens the range too
        else:
            market.step()
        for inst in market.universe:
            q = market.quote(inst.con_id)
            assert q.low <= min(q.bid, q.ask, q.last), (inst.symbol, q)
            assert q.high >= max(q.bid, q.ask, q.last), (inst.symbol, q)
