"""The pure matching engine: validation codes, fills, stops, trailing stops, commissions."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from tws_simulator.market import Quote
from tws_simulator.matching import (
    ADDED_LIQUIDITY,
    REMOVED_LIQUIDITY,
    MatchingEngine,
    OrderSpec,
    WorkingOrder,
    margin_check,
    on_tick_grid,
    order_commission,
    round_to_tick,
    validate,
)

AAPL = 265598
_keys = itertools.count(1)


def quote(
    bid: float,
    ask: float,
    *,
    last: float | None = None,
    bid_size: int = 500,
    ask_size: int = 500,
) -> Quote:
    """A fresh quote object (the engine treats each new object as a new market state)."""
    return Quote(
        bid=bid,
        ask=ask,
        last=last if last is not None else (bid + ask) / 2,
        bid_size=Decimal(bid_size),
        ask_size=Decimal(ask_size),
        last_size=Decimal(100),
        volume=Decimal(10_000),
        high=ask,
        low=bid,
        close=bid,
        open=bid,
        last_time=0,
    )


def order(
    action: str,
    qty: int | str,
    order_type: str = "MKT",
    *,
    sec_type: str = "STK",
    min_tick: float = 0.01,
    **kw: object,
) -> WorkingOrder:
    spec = OrderSpec(action=action, quantity=Decimal(qty), order_type=order_type, **kw)  # type: ignore[arg-type]
    return WorkingOrder(next(_keys), AAPL, spec, min_tick, sec_type)


# --------------------------------------------------------------------------- validation


def spec(**kw: object) -> OrderSpec:
    base: dict[str, object] = {
        "action": "BUY",
        "quantity": Decimal(100),
        "order_type": "LMT",
        "lmt_price": 189.5,
    }
    base.update(kw)
    return OrderSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({}, None),
        ({"lmt_price": 189.505}, 110),
        ({"order_type": "STP", "aux_price": 180.001}, 110),
        ({"quantity": Decimal(0)}, 434),
        ({"quantity": Decimal(-5)}, 434),
        ({"quantity": Decimal("1.5")}, 10243),
        ({"lmt_price": None}, 107),
        ({"order_type": "STP LMT", "aux_price": None}, 107),
        ({"order_type": "TRAIL", "lmt_price": None}, 158),
        ({"order_type": "TRAIL", "trailing_percent": 150.0}, 159),
        ({"order_type": "MOC"}, None),
        ({"order_type": "MOC", "tif": "GTC"}, 111),
        ({"order_type": "MIDPRICE"}, None),
        ({"order_type": "PEG BENCH"}, 387),
        ({"tif": "OPG"}, None),
        ({"order_type": "STP", "aux_price": 180.0, "tif": "OPG"}, 111),
        ({"tif": "FOK"}, None),
        ({"order_type": "MIT", "tif": "FOK", "aux_price": 180.0}, 111),
        ({"order_type": "MIT"}, 107),
        ({"order_type": "LIT", "aux_price": 180.0, "lmt_price": None}, 107),
        ({"order_type": "TRAIL LIMIT", "aux_price": 1.0}, 201),
        ({"order_type": "TRAIL LIMIT", "aux_price": 1.0, "lmt_price_offset": 0.1}, None),
        ({"order_type": "REL", "percent_offset": 1.5}, 159),
        ({"order_type": "STP", "aux_price": 180.0, "tif": "IOC"}, 111),
        ({"action": "SSHORTX"}, 321),
        ({"trigger_method": 5}, 146),
        ({"order_type": "MKT", "lmt_price": 0.123}, None),  # prices of a MKT order are ignored
        ({"tif": ""}, None),  # no TIF means DAY
        ({"tif": "GTC"}, None),
        ({"tif": "IOC"}, None),
    ],
)
def test_validation_codes(overrides: dict[str, object], code: int | None) -> None:
    rejection = validate(spec(**overrides), sec_type="STK", min_tick=0.01)
    assert (rejection.code if rejection else None) == code


CASH_TAGS = "DAY,GTC,GTD,IOC,LIT,LMT,MIT,MKT,REL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"order_type": "MOC"}, 387),
        ({"order_type": "MIDPRICE"}, 387),
        ({"order_type": "MIT", "aux_price": 1.1}, None),
        ({"tif": "OPG"}, 111),
        ({"tif": "FOK"}, 111),
    ],
)
def test_an_instrument_supports_what_its_contract_details_list(
    overrides: dict[str, object], code: int | None
) -> None:
    base = {"quantity": Decimal(20000), "lmt_price": 1.1}
    rejection = validate(
        spec(**{**base, **overrides}), sec_type="CASH", min_tick=0.00005, order_types=CASH_TAGS
    )
    assert (rejection.code if rejection else None) == code


def test_validation_texts_are_ibs() -> None:
    off_tick = validate(spec(lmt_price=1.001), sec_type="STK", min_tick=0.01)
    assert off_tick is not None
    assert off_tick.message == (
        "The price does not conform to the minimum price variation for this contract."
    )
    zero = validate(spec(quantity=Decimal(0)), sec_type="STK", min_tick=0.01)
    assert zero is not None and zero.message == "The order size cannot be zero."


def test_forex_allows_fractional_quantities_and_half_pips() -> None:
    fx = spec(quantity=Decimal("20000.5"), lmt_price=1.08735)
    assert validate(fx, sec_type="CASH", min_tick=0.00005) is None
    assert validate(spec(lmt_price=1.08731), sec_type="CASH", min_tick=0.00005) is not None


def test_tick_grid_helpers() -> None:
    assert on_tick_grid(189.51, 0.01) and not on_tick_grid(189.515, 0.01)
    assert on_tick_grid(1.08735, 0.00005)
    assert round_to_tick(189.514, 0.01) == 189.51 and round_to_tick(1.087374, 0.00005) == 1.08735


def test_margin_check() -> None:
    ok = margin_check(
        action="BUY",
        quantity=Decimal(100),
        price=190.0,
        position=Decimal(0),
        equity=10_000,
        buying_power=40_000,
    )
    assert ok is None
    too_big = margin_check(
        action="BUY",
        quantity=Decimal(1000),
        price=190.0,
        position=Decimal(0),
        equity=10_000,
        buying_power=40_000,
    )
    assert too_big is not None and too_big.code == 201
    assert too_big.message.startswith("Order rejected - reason:YOUR ORDER IS NOT ACCEPTED.")
    # Closing a position needs no buying power, only the part that opens a short does.
    closing = margin_check(
        action="SELL",
        quantity=Decimal(1000),
        price=190.0,
        position=Decimal(1000),
        equity=10_000,
        buying_power=0,
    )
    assert closing is None
    flipping = margin_check(
        action="SELL",
        quantity=Decimal(2000),
        price=190.0,
        position=Decimal(1000),
        equity=10_000,
        buying_power=0,
    )
    assert flipping is not None


# --------------------------------------------------------------------------- commissions


def test_stock_commission_fixed_plan() -> None:
    assert order_commission("STK", Decimal(100), 18_950.0) == 1.00  # 0.50 → minimum 1.00
    assert order_commission("STK", Decimal(1000), 189_500.0) == 5.00  # 0.005 per share
    assert order_commission("STK", Decimal(1000), 50.0) == 1.00  # capped at 1 % (min 1.00)
    assert order_commission("STK", Decimal(10_000), 1_000.0) == 10.00  # 50.00 capped at 1 %


def test_forex_commission() -> None:
    assert order_commission("CASH", Decimal(20_000), 21_747.0) == 2.00  # minimum
    assert order_commission("CASH", Decimal(2_000_000), 2_174_700.0) == 43.49  # 0.2 bp


def test_commission_minimum_is_paid_once_per_order() -> None:
    engine = MatchingEngine()
    o = order("BUY", 300)
    fills = engine.submit(o, quote(189.50, 189.51, ask_size=100)).fills
    fills += engine.on_quote(AAPL, quote(189.50, 189.51, ask_size=100)).fills
    fills += engine.on_quote(AAPL, quote(189.50, 189.51, ask_size=100)).fills
    assert [f.quantity for f in fills] == [100, 100, 100]
    assert [f.commission for f in fills] == [1.00, 0.0, 0.50]  # total 1.50 = 300 x 0.005


# --------------------------------------------------------------------------- execution


def test_market_buy_fills_at_the_ask_and_sell_at_the_bid() -> None:
    engine = MatchingEngine()
    buy = engine.submit(order("BUY", 100), quote(189.50, 189.52))
    assert [(f.quantity, f.price, f.liquidity) for f in buy.fills] == [
        (100, 189.52, REMOVED_LIQUIDITY)
    ]
    sell = engine.submit(order("SELL", 100), quote(189.50, 189.52))
    assert [(f.quantity, f.price) for f in sell.fills] == [(100, 189.50)]
    assert len(engine) == 0  # both done


def test_large_market_order_fills_displayed_size_per_quote() -> None:
    engine = MatchingEngine()
    o = order("BUY", 1200)
    first = engine.submit(o, quote(10.00, 10.01, ask_size=500))
    assert [f.quantity for f in first.fills] == [500] and o.key in engine
    second = engine.on_quote(AAPL, quote(10.01, 10.02, ask_size=400)).fills
    third = engine.on_quote(AAPL, quote(10.02, 10.03, ask_size=900)).fills
    assert [(f.quantity, f.price) for f in second + third] == [(400, 10.02), (300, 10.03)]
    assert o.remaining == 0 and o.key not in engine
    assert o.avg_fill_price == pytest.approx((500 * 10.01 + 400 * 10.02 + 300 * 10.03) / 1200)


def test_orders_on_one_quote_share_its_displayed_size() -> None:
    engine = MatchingEngine()
    q = quote(10.00, 10.01, ask_size=300)
    a, b = order("BUY", 200), order("BUY", 200)
    assert [f.quantity for f in engine.submit(a, q).fills] == [200]
    assert [f.quantity for f in engine.submit(b, q).fills] == [100]
    assert [f.quantity for f in engine.on_quote(AAPL, quote(10.00, 10.01)).fills] == [100]


def test_marketable_limit_fills_at_the_quote() -> None:
    engine = MatchingEngine()
    fills = engine.submit(order("BUY", 100, "LMT", lmt_price=190.00), quote(189.50, 189.52)).fills
    assert [(f.price, f.liquidity) for f in fills] == [(189.52, REMOVED_LIQUIDITY)]


def test_resting_limit_fills_at_its_price_when_the_market_crosses_it() -> None:
    engine = MatchingEngine()
    o = order("BUY", 800, "LMT", lmt_price=189.00)
    assert engine.submit(o, quote(189.50, 189.52)).fills == []
    assert engine.on_quote(AAPL, quote(189.20, 189.22)).fills == []
    crossed = engine.on_quote(AAPL, quote(188.80, 188.90, ask_size=500)).fills
    assert [(f.quantity, f.price, f.liquidity) for f in crossed] == [(500, 189.00, ADDED_LIQUIDITY)]
    # Still marketable at the next quote: the rest takes that quote.
    rest = engine.on_quote(AAPL, quote(188.70, 188.80)).fills
    assert [(f.quantity, f.price, f.liquidity) for f in rest] == [(300, 188.80, REMOVED_LIQUIDITY)]


def test_sell_stop_triggers_on_the_last_price_then_sells_at_the_bid() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "STP", aux_price=185.00)
    assert engine.submit(o, quote(189.50, 189.52)).fills == []
    assert engine.on_quote(AAPL, quote(185.01, 185.03, last=185.02)).fills == []
    result = engine.on_quote(AAPL, quote(184.98, 185.00, last=184.99))
    assert result.triggered == [o]
    assert [(f.quantity, f.price) for f in result.fills] == [(100, 184.98)]


def test_buy_stop_with_bid_ask_trigger_method() -> None:
    engine = MatchingEngine()
    o = order("BUY", 100, "STP", aux_price=190.00, trigger_method=4)
    engine.submit(o, quote(189.50, 189.52))
    assert engine.on_quote(AAPL, quote(189.97, 189.99, last=190.50)).fills == []  # last ignored
    assert [f.price for f in engine.on_quote(AAPL, quote(189.99, 190.00)).fills] == [190.00]


def test_stop_limit_becomes_a_limit_order() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "STP LMT", aux_price=185.00, lmt_price=184.90)
    engine.submit(o, quote(189.50, 189.52))
    # Triggered, but the bid is below the limit: it rests as a limit order.
    assert engine.on_quote(AAPL, quote(184.80, 184.85, last=184.85)).fills == []
    assert o.triggered
    fills = engine.on_quote(AAPL, quote(184.95, 184.97, last=184.96)).fills
    assert [(f.price, f.liquidity) for f in fills] == [(184.90, ADDED_LIQUIDITY)]


def test_trailing_stop_by_amount_follows_the_market_up_only() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "TRAIL", aux_price=1.00)
    engine.submit(o, quote(99.99, 100.01, last=100.00))
    assert o.trail_stop == 99.00
    engine.on_quote(AAPL, quote(101.99, 102.01, last=102.00))
    assert o.trail_stop == 101.00
    engine.on_quote(AAPL, quote(101.49, 101.51, last=101.50))
    assert o.trail_stop == 101.00  # never moves against the order
    fills = engine.on_quote(AAPL, quote(100.98, 101.00, last=100.99)).fills
    assert [(f.quantity, f.price) for f in fills] == [(100, 100.98)]


def test_trailing_stop_by_percent_for_a_buy() -> None:
    engine = MatchingEngine()
    o = order("BUY", 10, "TRAIL", trailing_percent=2.0)
    engine.submit(o, quote(99.99, 100.01, last=100.00))
    assert o.trail_stop == 102.00
    engine.on_quote(AAPL, quote(89.99, 90.01, last=90.00))
    assert o.trail_stop == 91.80
    assert engine.on_quote(AAPL, quote(91.00, 91.02, last=91.01)).fills == []
    fills = engine.on_quote(AAPL, quote(91.80, 91.82, last=91.81)).fills
    assert [f.price for f in fills] == [91.82]


def test_trailing_stop_starts_at_the_given_trail_stop_price() -> None:
    engine = MatchingEngine()
    o = order("SELL", 10, "TRAIL", aux_price=1.00, trail_stop_price=99.50)
    engine.submit(o, quote(99.99, 100.01, last=100.00))
    assert o.trail_stop == 99.50


def test_ioc_fills_what_is_there_and_expires_the_rest() -> None:
    engine = MatchingEngine()
    o = order("BUY", 1000, tif="IOC")
    result = engine.submit(o, quote(10.00, 10.01, ask_size=300))
    assert [f.quantity for f in result.fills] == [300] and result.expired
    assert o.key not in engine
    unfilled = order("BUY", 100, "LMT", lmt_price=9.00, tif="IOC")
    result = engine.submit(unfilled, quote(10.00, 10.01))
    assert result.fills == [] and result.expired


def test_modify_reprices_and_can_fill_at_once() -> None:
    engine = MatchingEngine()
    o = order("BUY", 100, "LMT", lmt_price=180.00)
    q = quote(189.50, 189.52)
    engine.submit(o, q)
    new = OrderSpec(action="BUY", quantity=Decimal(100), order_type="LMT", lmt_price=190.00)
    fills = engine.modify(o.key, new, q)
    assert [(f.quantity, f.price) for f in fills] == [(100, 189.52)]
    assert o.key not in engine


def test_cancel_and_unknown_instruments() -> None:
    engine = MatchingEngine()
    o = order("BUY", 100, "LMT", lmt_price=180.00)
    engine.submit(o, quote(189.50, 189.52))
    assert engine.cancel(o.key) is o and engine.cancel(o.key) is None
    assert engine.on_quote(AAPL, quote(170.00, 170.01)).fills == []
    assert engine.on_quote(12345, quote(1.0, 1.01)).fills == []


def test_no_fill_without_displayed_size() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100)
    assert engine.submit(o, quote(10.00, 10.01, bid_size=0)).fills == []
    assert [f.quantity for f in engine.on_quote(AAPL, quote(10.00, 10.01)).fills] == [100]


# --------------------------------------------------------------------------- advanced types


def test_mit_buy_triggers_when_the_price_falls_to_it() -> None:
    engine = MatchingEngine()
    o = order("BUY", 100, "MIT", aux_price=95.00)
    assert engine.submit(o, quote(99.99, 100.01)).fills == []
    assert engine.on_quote(AAPL, quote(101.00, 101.02)).fills == []  # the other way: nothing
    result = engine.on_quote(AAPL, quote(94.98, 95.00, last=94.99))
    assert result.triggered == [o]
    assert [(f.quantity, f.price) for f in result.fills] == [(100, 95.00)]


def test_lit_sell_triggers_when_the_price_rises_then_works_as_a_limit() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "LIT", aux_price=105.00, lmt_price=105.10)
    engine.submit(o, quote(99.99, 100.01))
    # Touched, but the bid is below the limit: it rests.
    assert engine.on_quote(AAPL, quote(105.00, 105.02, last=105.01)).fills == []
    assert o.triggered
    fills = engine.on_quote(AAPL, quote(105.20, 105.22)).fills
    assert [(f.price, f.liquidity) for f in fills] == [(105.10, ADDED_LIQUIDITY)]


def test_trail_limit_limit_is_the_stop_minus_the_offset() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "TRAIL LIMIT", aux_price=1.00, lmt_price_offset=0.10)
    engine.submit(o, quote(99.99, 100.01, last=100.00))
    engine.on_quote(AAPL, quote(101.99, 102.01, last=102.00))
    assert o.trail_stop == 101.00
    # Hit at 100.99: a sell limit at 100.90; the bid 100.80 is below it.
    assert engine.on_quote(AAPL, quote(100.80, 100.82, last=100.99)).fills == []
    assert o.triggered and o.trail_limit == 100.90
    fills = engine.on_quote(AAPL, quote(100.95, 100.97)).fills
    assert [f.price for f in fills] == [100.90]


def test_midprice_fills_at_the_midpoint_within_its_cap() -> None:
    engine = MatchingEngine()
    capped = order("BUY", 100, "MIDPRICE", lmt_price=99.00)
    assert engine.submit(capped, quote(99.99, 100.01)).fills == []
    free = order("BUY", 100, "MIDPRICE")
    fills = engine.submit(free, quote(99.99, 100.03)).fills
    assert [(f.quantity, f.price) for f in fills] == [(100, 100.01)]
    assert [f.price for f in engine.on_quote(AAPL, quote(98.97, 98.99)).fills] == [98.98]


def test_relative_order_pegs_to_the_bid_and_fills_when_the_market_comes_through() -> None:
    engine = MatchingEngine()
    o = order("BUY", 100, "REL", aux_price=0.01)
    assert engine.submit(o, quote(99.99, 100.02)).fills == []
    assert o.peg_price == 100.00  # bid + offset
    assert engine.on_quote(AAPL, quote(100.09, 100.12)).fills == []
    assert o.peg_price == 100.10  # it follows the bid up
    fills = engine.on_quote(AAPL, quote(100.05, 100.08)).fills  # the ask fell through 100.10
    assert [(f.price, f.liquidity) for f in fills] == [(100.10, ADDED_LIQUIDITY)]


def test_relative_order_cap() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "REL", aux_price=0.01, lmt_price=101.00)
    engine.submit(o, quote(99.99, 100.02))
    assert o.peg_price == 101.00  # ask - offset would be 100.01: the floor wins


def test_fok_fills_everything_or_nothing() -> None:
    engine = MatchingEngine()
    too_big = order("BUY", 1000, tif="FOK")
    result = engine.submit(too_big, quote(10.00, 10.01, ask_size=300))
    assert result.fills == [] and result.expired and too_big.filled == 0
    fits = order("BUY", 300, tif="FOK")
    result = engine.submit(fits, quote(10.00, 10.01, ask_size=300))
    assert [f.quantity for f in result.fills] == [300] and not result.expired


def test_auction_orders_wait_for_the_auction() -> None:
    engine = MatchingEngine()
    moc = order("BUY", 100, "MOC")
    loc = order("SELL", 100, "LOC", lmt_price=101.00)
    opg = order("BUY", 100, "LMT", lmt_price=99.00, tif="OPG")
    for o in (moc, loc, opg):
        assert engine.submit(o, quote(99.99, 100.01)).fills == []
    assert engine.on_quote(AAPL, quote(89.99, 90.01)).fills == []  # no continuous trading
    fills = engine.auction(AAPL, 100.50, {moc.key, loc.key}.__contains__)
    # All of it at the auction price (no size limit); the LOC's limit was not reached.
    assert [(f.order, f.quantity, f.price) for f in fills] == [(moc, 100, 100.50)]
    assert moc.key not in engine and loc.key not in engine and opg.key in engine
    assert [f.price for f in engine.auction(AAPL, 98.50, {opg.key}.__contains__)] == [98.50]


def test_held_orders_do_nothing_until_activated() -> None:
    engine = MatchingEngine()
    o = order("SELL", 100, "STP", aux_price=95.00)
    o.held = True
    engine.submit(o, quote(99.99, 100.01))
    assert engine.on_quote(AAPL, quote(89.99, 90.01, last=90.00)).fills == []
    assert not o.triggered
    fills = engine.activate(o.key, quote(89.99, 90.01, last=90.00))
    assert [(f.quantity, f.price) for f in fills] == [(100, 89.99)]


def test_on_fill_runs_before_the_next_order_so_it_can_cancel_it() -> None:
    engine = MatchingEngine()
    first = order("SELL", 100, "LMT", lmt_price=101.00)
    second = order("SELL", 100, "STP", aux_price=99.00)
    engine.submit(first, quote(99.99, 100.01))
    engine.submit(second, quote(99.99, 100.01))
    seen: list[int] = []

    def on_fill(fill: object) -> None:
        seen.append(1)
        engine.cancel(second.key)

    # One quote that would fill both (a spike through the limit, last below the stop).
    result = engine.on_quote(AAPL, quote(101.50, 101.52, last=98.00), on_fill)
    assert [f.order for f in result.fills] == [first] and seen == [1]
    engine.submit(third := order("SELL", 100, "LMT", lmt_price=200.00), quote(99.99, 100.01))
    engine.resize(third.key, Decimal(40))
    assert third.remaining == 40
    engine.resize(third.key, Decimal(0))
    assert third.key not in engine
