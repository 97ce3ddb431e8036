"""Advanced orders end to end with the real ib_insync: brackets (parent / child with
transmit), OCA groups, the order types beyond the five, and the simulated clock (trading
hours, DAY expiry at the close, auctions, GTD)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from ib_insync import IB, Forex, LimitOrder, MarketOrder, Order, StopOrder, Trade

from tws_simulator import TwsSimulator
from tws_simulator.clock import EASTERN, eastern

from .conftest import Connect
from .helpers import wait_until
from .test_orders import FROZEN, Errors, aapl, done, qualify, reaches
from .test_orders_rejections import rejected

pytestmark = pytest.mark.sim_config(**FROZEN)

# A Monday afternoon in regular trading hours, on the simulated clock.
MONDAY_3PM = eastern(2026, 11, 30, 15, 0)
MONDAY_8AM = eastern(2026, 11, 30, 8, 0)
HOURS = {**FROZEN, "trading_hours": True}


async def quiet(within: float = 0.3) -> None:
    """Give the simulator time to (not) answer."""
    await wait_until(lambda: False, within)


# --------------------------------------------------------------------------- brackets


async def place_bracket(ib: IB, simulator: TwsSimulator) -> tuple[list[Trade], float]:
    contract = await aapl(ib)
    mid = simulator.market.quote(contract.conId).midpoint
    entry = round(mid - 1.00, 2)
    bracket = ib.bracketOrder("BUY", 100, entry, round(mid + 2.00, 2), round(mid - 3.00, 2))
    parent = ib.placeOrder(contract, bracket.parent)
    await quiet()
    # Untransmitted: TWS says nothing, and it is not an open order.
    assert parent.orderStatus.status == "PendingSubmit"
    assert await ib.reqAllOpenOrdersAsync() == []
    trades = [parent] + [ib.placeOrder(contract, o) for o in (bracket.takeProfit, bracket.stopLoss)]
    await reaches(parent, "Submitted")
    for child in trades[1:]:
        await reaches(child, "PreSubmitted")  # held until the parent fills
        assert child.orderStatus.parentId == parent.order.orderId
    return trades, mid


async def test_bracket_entry_then_take_profit_cancels_the_stop_loss(
    simulator: TwsSimulator, ib: IB
) -> None:
    (parent, profit, loss), mid = await place_bracket(ib, simulator)
    con_id = parent.contract.conId
    simulator.market.move_to(con_id, mid - 1.50)  # through the entry limit
    await done(parent)
    assert parent.orderStatus.status == "Filled"
    await reaches(profit, "Submitted")  # the exits work now
    assert loss.orderStatus.status == "PreSubmitted"  # a stop waits for its trigger
    simulator.market.move_to(con_id, mid + 2.50)
    await done(profit)
    await done(loss)
    assert (profit.orderStatus.status, loss.orderStatus.status) == ("Filled", "Cancelled")
    assert not loss.fills
    position = simulator.account.position(con_id)
    assert position is None or position.quantity == 0


async def test_bracket_stop_loss_cancels_the_take_profit(simulator: TwsSimulator, ib: IB) -> None:
    (parent, profit, loss), mid = await place_bracket(ib, simulator)
    con_id = parent.contract.conId
    simulator.market.move_to(con_id, mid - 1.50)
    await done(parent)
    simulator.market.move_to(con_id, mid - 3.50)
    await done(loss)
    await done(profit)
    assert (loss.orderStatus.status, profit.orderStatus.status) == ("Filled", "Cancelled")


async def test_cancelling_the_parent_cancels_its_children(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    (parent, profit, loss), _ = await place_bracket(ib, simulator)
    ib.cancelOrder(parent.order)
    for trade in (parent, profit, loss):
        await done(trade)
        assert trade.orderStatus.status == "Cancelled"
    observer = await connect(client_id=5)
    assert await observer.reqAllOpenOrdersAsync() == []
    done_orders = await observer.reqCompletedOrdersAsync(apiOnly=False)
    assert sorted(t.orderStatus.status for t in done_orders) == ["Cancelled"] * 3


async def test_untransmitted_orders_die_with_their_client(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    contract = await aapl(ib)
    held = LimitOrder("BUY", 10, 1.00, transmit=False)
    ib.placeOrder(contract, held)
    await quiet()
    ib.disconnect()
    again = await connect(client_id=1)
    assert await again.reqAllOpenOrdersAsync() == []
    # A child naming it now finds no parent.
    errors = Errors(again)
    orphan = LimitOrder("SELL", 10, 300.00, parentId=held.orderId)
    assert await rejected(again, errors, again.placeOrder(contract, orphan), 10006)


# --------------------------------------------------------------------------- OCA groups


async def test_oca_group_of_three_type_1_cancels_the_others(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    mid = simulator.market.quote(contract.conId).midpoint
    trades = [
        ib.placeOrder(
            contract, LimitOrder("BUY", 10, round(mid - step, 2), ocaGroup="g3", ocaType=1)
        )
        for step in (1.00, 2.00, 3.00)
    ]
    for trade in trades:
        await reaches(trade, "Submitted")
        assert trade.order.ocaGroup == "g3"
    simulator.market.move_to(contract.conId, mid - 1.50)  # only the first limit is reached
    for trade in trades:
        await done(trade)
    assert [t.orderStatus.status for t in trades] == ["Filled", "Cancelled", "Cancelled"]


@pytest.mark.sim_config(**FROZEN, positions={"AAPL": (100_000, 150.0)})
async def test_oca_type_2_partial_fill_reduces_the_other(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    mid = simulator.market.quote(contract.conId).midpoint
    take = LimitOrder("SELL", 50_000, round(mid + 1.00, 2), ocaGroup="exit", ocaType=2)
    stop = StopOrder("SELL", 50_000, round(mid - 5.00, 2), ocaGroup="exit", ocaType=2)
    take_trade = await reaches(ib.placeOrder(contract, take), "Submitted")
    stop_trade = await reaches(ib.placeOrder(contract, stop), "PreSubmitted")
    simulator.market.move_to(contract.conId, mid + 1.50)  # fills the displayed bid size only
    assert await wait_until(lambda: bool(take_trade.fills))
    filled = take_trade.orderStatus.filled
    assert 0 < filled < 50_000
    assert await wait_until(lambda: stop_trade.order.totalQuantity == 50_000 - filled)
    assert stop_trade.orderStatus.status == "PreSubmitted"


# --------------------------------------------------------------------------- order types


async def test_midprice_fills_at_the_midpoint(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    quote = simulator.market.quote(contract.conId)
    trade = await done(
        ib.placeOrder(contract, Order(action="BUY", totalQuantity=10, orderType="MIDPRICE"))
    )
    assert trade.orderStatus.status == "Filled"
    assert trade.fills[0].execution.price == pytest.approx(quote.midpoint)


async def test_trail_limit_reports_its_limit_offset(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    contract = await aapl(ib)
    order = Order(
        action="SELL",
        totalQuantity=10,
        orderType="TRAIL LIMIT",
        auxPrice=1.00,
        lmtPriceOffset=0.05,
    )
    await reaches(ib.placeOrder(contract, order), "PreSubmitted")
    observer = await connect(client_id=5)  # sees TWS's copy, not the placing client's
    [seen] = await observer.reqAllOpenOrdersAsync()
    assert (seen.order.orderType, seen.order.lmtPriceOffset) == ("TRAIL LIMIT", 0.05)
    assert seen.order.trailStopPrice == pytest.approx(
        simulator.market.quote(contract.conId).last - 1.00
    )


async def test_fok_fills_all_or_is_cancelled(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    size = simulator.market.quote(contract.conId).ask_size
    too_big = await done(ib.placeOrder(contract, MarketOrder("BUY", float(size) + 100, tif="FOK")))
    assert too_big.orderStatus.status == "Cancelled" and not too_big.fills
    fits = await done(ib.placeOrder(contract, MarketOrder("BUY", 100, tif="FOK")))
    assert fits.orderStatus.status == "Filled"


async def test_forex_refuses_stock_only_types(ib: IB) -> None:
    errors = Errors(ib)
    eurusd = await qualify(ib, Forex("EURUSD"))
    moc = Order(action="BUY", totalQuantity=20_000, orderType="MOC")
    assert "Unsupported order type" in await rejected(ib, errors, ib.placeOrder(eurusd, moc), 387)


async def test_gtd_expires_at_its_time_and_must_be_in_the_future(
    simulator: TwsSimulator, ib: IB
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    now = datetime.fromtimestamp(simulator.clock.now(), EASTERN)
    past = LimitOrder("BUY", 10, 1.00, tif="GTD", goodTillDate="20200101 10:00:00 US/Eastern")
    assert "in the past" in await rejected(ib, errors, ib.placeOrder(contract, past), 201)
    missing = LimitOrder("BUY", 10, 1.00, tif="GTD")
    assert "goodTillDate" in await rejected(ib, errors, ib.placeOrder(contract, missing), 201)
    until = f"{now + timedelta(minutes=5):%Y%m%d %H:%M:%S} US/Eastern"
    trade = await reaches(
        ib.placeOrder(contract, LimitOrder("BUY", 10, 1.00, tif="GTD", goodTillDate=until)),
        "Submitted",
    )
    simulator.clock.advance(4 * 60)
    await quiet(0.2)
    assert trade.orderStatus.status == "Submitted"
    simulator.clock.advance(61)
    await done(trade)
    assert trade.orderStatus.status == "Cancelled"


# --------------------------------------------------------------------------- trading hours


@pytest.mark.sim_config(**HOURS, clock_start=MONDAY_3PM)
async def test_day_orders_expire_at_the_close(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    low = round(simulator.market.quote(contract.conId).bid - 5.00, 2)
    day = await reaches(ib.placeOrder(contract, LimitOrder("BUY", 10, low)), "Submitted")
    gtc = await reaches(ib.placeOrder(contract, LimitOrder("BUY", 10, low, tif="GTC")), "Submitted")
    late = await reaches(
        ib.placeOrder(contract, LimitOrder("BUY", 10, low, outsideRth=True)), "Submitted"
    )
    simulator.clock.set(eastern(2026, 11, 30, 16, 0) + 1)
    await done(day)
    assert day.orderStatus.status == "Cancelled"
    # GTC waits for the next session; the outside-RTH order works on in after-hours.
    assert await wait_until(lambda: gtc.orderStatus.status == "PreSubmitted")
    assert late.orderStatus.status == "Submitted"
    simulator.clock.set(eastern(2026, 11, 30, 20, 0) + 1)  # the end of after-hours
    await done(late)
    assert late.orderStatus.status == "Cancelled"
    simulator.clock.set(eastern(2026, 12, 1, 9, 30) + 1)  # Tuesday's open
    await reaches(gtc, "Submitted")  # GTC does not expire


@pytest.mark.sim_config(**HOURS, clock_start=MONDAY_3PM)
async def test_moc_and_loc_execute_in_the_closing_auction(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    last = simulator.market.quote(contract.conId).last
    moc = await reaches(
        ib.placeOrder(contract, Order(action="BUY", totalQuantity=10, orderType="MOC")), "Submitted"
    )
    loc = ib.placeOrder(
        contract,
        Order(action="BUY", totalQuantity=10, orderType="LOC", lmtPrice=round(last - 5.00, 2)),
    )
    await reaches(loc, "Submitted")
    await quiet(0.2)
    assert not moc.fills  # no continuous trading for auction orders
    simulator.clock.set(eastern(2026, 11, 30, 16, 0) + 1)
    await done(moc)
    await done(loc)
    assert moc.orderStatus.status == "Filled"
    assert moc.fills[0].execution.price == pytest.approx(last)
    assert loc.orderStatus.status == "Cancelled"  # the close was above its limit


@pytest.mark.sim_config(**HOURS, clock_start=MONDAY_8AM)
async def test_pre_market_outside_rth_and_the_opening_auction(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    ask = simulator.market.quote(contract.conId).ask
    rth_only = ib.placeOrder(contract, LimitOrder("BUY", 10, round(ask + 1.00, 2)))
    await reaches(rth_only, "PreSubmitted")  # waits for regular hours
    extended = await done(
        ib.placeOrder(contract, LimitOrder("BUY", 10, round(ask + 1.00, 2), outsideRth=True))
    )
    assert extended.orderStatus.status == "Filled"
    opening = ib.placeOrder(contract, MarketOrder("BUY", 10, tif="OPG"))
    await reaches(opening, "Submitted")
    await quiet(0.2)
    assert not rth_only.fills and not opening.fills
    simulator.clock.set(eastern(2026, 11, 30, 9, 30) + 1)
    await done(opening)
    await done(rth_only)
    assert (opening.orderStatus.status, rth_only.orderStatus.status) == ("Filled", "Filled")


@pytest.mark.sim_config(**FROZEN, cash=10_000.0)
async def test_working_orders_reserve_buying_power(simulator: TwsSimulator, ib: IB) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    price = round(simulator.market.quote(contract.conId).bid - 40.00, 2)  # rests
    first = await reaches(ib.placeOrder(contract, LimitOrder("BUY", 200, price)), "Submitted")
    # 40,000 of buying power (4 x 10,000), about 30,000 of it reserved by the first order.
    second = ib.placeOrder(contract, LimitOrder("BUY", 100, price))
    assert "YOUR ORDER IS NOT ACCEPTED" in await rejected(ib, errors, second, 201)
    ib.cancelOrder(first.order)
    await done(first)
    await reaches(ib.placeOrder(contract, LimitOrder("BUY", 100, price)), "Submitted")
