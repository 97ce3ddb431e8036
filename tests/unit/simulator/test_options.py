"""Option chains, futures and the pricing model of the simulator (pure)."""

from __future__ import annotations

import itertools
import math
from datetime import date

import pytest

from tws_simulator.market import Market
from tws_simulator.options import (
    OPTIONABLE,
    black_scholes,
    implied_vol,
    occ_symbol,
    option_expiries,
    smile,
    strike_grid,
    third_friday,
)
from tws_simulator.universe import Universe

TODAY = date(2024, 1, 10)  # a Wednesday


def test_expiries_are_fridays_and_third_fridays() -> None:
    aapl = OPTIONABLE["AAPL"].classes[0]
    listed = option_expiries(aapl, TODAY)
    days = [d for d, _ in listed]
    assert days == sorted(days) and all(d.weekday() == 4 for d in days)
    monthlies = [d for d, monthly in listed if monthly]
    assert monthlies[:3] == [date(2024, 1, 19), date(2024, 2, 16), date(2024, 3, 15)]
    assert third_friday(2024, 1) == date(2024, 1, 19)
    spxw = OPTIONABLE["SPX"].classes[1]
    assert {d.weekday() for d, _ in option_expiries(spxw, TODAY)} == {0, 2, 4}


def test_strike_grid_and_occ_symbol() -> None:
    grid = strike_grid(189.5, 2.5, 0.1)
    assert grid[0] <= 189.5 * 0.9 + 2.5 and grid[-1] >= 189.5 * 1.1 - 2.5
    assert all(math.isclose(b - a, 2.5) for a, b in itertools.pairwise(grid))
    assert occ_symbol("AAPL", "20240119", "C", 190.0) == "AAPL  240119C00190000"
    assert occ_symbol("SPXW", "20240119", "P", 4512.5) == "SPXW  240119P04512500"


def test_universe_resolves_derivatives_like_tws() -> None:
    u = Universe(today=TODAY)
    calls = u.match(symbol="AAPL", sec_type="OPT", last_trade_date="20240119", right="C")
    assert len(calls) > 10  # every strike: ambiguous for a client that wants one
    [one] = u.match(
        symbol="AAPL", sec_type="OPT", last_trade_date="20240119", strike=190, right="C"
    )
    assert one.local_symbol == "AAPL  240119C00190000" and one.multiplier == "100"
    assert u.by_con_id(one.con_id) == one and u.underlying(one) == u.by_con_id(265598)
    futures = u.match(symbol="ES", sec_type="FUT")
    assert [f.contract_month for f in futures] == ["202403", "202406", "202409", "202412"]
    assert [
        f.local_symbol for f in u.match(symbol="ES", sec_type="FUT", last_trade_date="202406")
    ] == ["ESM4"]
    assert u.match(symbol="ES", sec_type="CONTFUT") == [futures[0]]
    # A stock spec never reaches the derivatives, a local symbol alone does.
    assert [i.sec_type for i in u.match(symbol="AAPL")] == ["STK"]
    assert u.match(local_symbol="ESM4") == [futures[1]]


def test_black_scholes_put_call_parity_and_greeks() -> None:
    s, k, t, vol, r, q = 100.0, 105.0, 0.25, 0.3, 0.05, 0.01
    call = black_scholes(s, k, t, vol, "C", r=r, q=q)
    put = black_scholes(s, k, t, vol, "P", r=r, q=q)
    parity = s * math.exp(-q * t) - k * math.exp(-r * t)
    assert call.price - put.price == pytest.approx(parity, abs=1e-9)
    assert 0 < call.delta < 1 and -1 < put.delta < 0
    assert call.gamma == pytest.approx(put.gamma) and call.vega == pytest.approx(put.vega)
    assert call.theta < 0
    bumped = black_scholes(s, k, t, vol + 0.01, "C", r=r, q=q)
    assert bumped.price - call.price == pytest.approx(call.vega, rel=0.02)  # vega per point
    assert implied_vol(call.price, s, k, t, "C", 0.5, r=r, q=q) == pytest.approx(vol, abs=1e-5)
    assert implied_vol(0.0, s, k, t, "C", 0.5, r=r, q=q) is None


def test_smile_skews_to_puts() -> None:
    atm = smile(0.2, 100, 100, 0.25)
    assert atm == pytest.approx(0.2)
    assert smile(0.2, 90, 100, 0.25) > atm < smile(0.2, 140, 100, 0.25)  # far wings rise
    assert smile(0.2, 90, 100, 0.25) > smile(0.2, 110, 100, 0.25)


def test_option_quotes_follow_the_underlying() -> None:
    u = Universe(today=date.today())
    market = Market(u, seed=3)
    call = next(o for o in u.options_on(265598) if o.right == "C" and o.strike >= 190)
    before = market.quote(call.con_id)
    assert 0 <= before.bid < before.ask
    model = market.option_model(call.con_id)
    assert model is not None and model.underlying_price == pytest.approx(189.5, abs=1)
    market.move_to(265598, 210.0)
    after = market.quote(call.con_id)
    assert after.bid > before.ask  # a call gains when the stock jumps 10 %
    es = u.front_future("ES")
    assert es is not None
    fut = market.quote(es.con_id)
    assert fut.bid > market.quote(416904).last * 0.99 and fut.ask - fut.bid in (0.25, 0.5)
