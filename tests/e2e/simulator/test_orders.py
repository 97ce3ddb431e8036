"""Orders end to end: every order type to its final state, with the fills, commissions,
positions and cash that the real ib_insync reports.

The market is frozen (one random-walk step a minute) and moved by the tests themselves
with ``market.step()`` and ``market.move_to()``, so every price below is known exactly.
The helpers at the top are shared by the other ``test_orders_*`` modules.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from ib_insync import (
    IB,
    Contract,
    Forex,
    LimitOrder,
    MarketOrder,
    Order,
    Stock,
    StopLimitOrder,
    StopOrder,
    Trade,
)

from tws_simulator import TwsSimulator

from .conftest import Connect
from .helpers import wait_until

FROZEN = {"tick_interval": 60.0}  # no market step happens unless a test asks for one
pytestmark = pytest.mark.sim_config(**FROZEN)

EXEC_ID = re.compile(r"^[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01$")


# --------------------------------------------------------------------------- helpers


async def qualify(ib: IB, contract: Contract) -> Contract:
    [qualified] = await ib.qualifyContractsAsync(contract)
    assert qualified.conId
    return qualified


async def aapl(ib: IB) -> Contract:
    return await qualify(ib, Stock("AAPL", "SMART", "USD"))


async def done(trade: Trade, within: float = 5.0) -> Trade:
    """Wait for the trade's final state (Filled / Cancelled)."""
    assert await wait_until(trade.isDone, within), f"not done: {trade.orderStatus} {trade.log}"
    return trade


async def reaches(trade: Trade, wanted: str, within: float = 5.0) -> Trade:
    assert await wait_until(lambda: trade.orderStatus.status == wanted, within), (
        f"wanted {wanted}: {trade.orderStatus} {trade.log}"
    )
    return trade


async def commissions(trade: Trade, within: float = 5.0) -> list[float]:
    """The commission of each fill, once every fill has its report."""
    assert await wait_until(
        lambda: bool(trade.fills) and all(f.commissionReport.execId for f in trade.fills), within
    )
    return [f.commissionReport.commission for f in trade.fills]


def statuses(trade: Trade) -> list[str]:
    """The distinct statuses of the trade's log, in order."""
    seen: list[str] = []
    for entry in trade.log:
        if not seen or seen[-1] != entry.status:
            seen.append(entry.status)
    return seen


class Errors:
    """ib_insync's errorEvent, recorded as (reqId, code, message)."""

    def __init__(self, ib: IB) -> None:
        self.seen: list[tuple[int, int, str]] = []
        ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        self.seen.append((req_id, code, message))

    async def wait(self, req_id: int, code: int, within: float = 5.0) -> str:
        """The message of error ``code`` for ``req_id``, once it arrived."""
        assert await wait_until(
            lambda: any(r == req_id and c == code for r, c, _ in self.seen), within
        ), self.seen
        return next(m for r, c, m in self.seen if r == req_id and c == code)

    def codes(self, req_id: int) -> list[int]:
        return [c for r, c, _ in self.seen if r == req_id]


def account_value(ib: IB, tag: str, currency: str = "USD") -> float | None:
    for value in ib.accountValues():
        if value.tag == tag and value.currency == currency:
            return float(value.value)
    return None


# --------------------------------------------------------------------------- market orders


async def test_market_buy_fills_at_the_ask_with_commission(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    quote = simulator.market.quote(contract.conId)
    assert quote.ask_size >= 100
    trade = await done(ib.placeOrder(contract, MarketOrder("BUY", 100, orderRef="mkt-1")))

    assert trade.orderStatus.status == "Filled"
    assert (trade.orderStatus.filled, trade.orderStatus.remaining) == (100, 0)
    assert trade.orderStatus.avgFillPrice == quote.ask == trade.orderStatus.lastFillPrice
    assert statuses(trade) == ["PendingSubmit", "Submitted", "Filled"]
    [fill] = trade.fills
    ex = fill.execution
    assert (ex.side, ex.shares, ex.price, ex.cumQty, ex.avgPrice) == (
        "BOT",
        100,
        quote.ask,
        100,
        quote.ask,
    )
    assert ex.orderId == trade.order.orderId and ex.clientId == 1
    assert ex.permId == trade.orderStatus.permId == trade.order.permId > 0
    assert ex.acctNumber == simulator.account.account_id and ex.orderRef == "mkt-1"
    assert EXEC_ID.match(ex.execId) and ex.exchange == "ISLAND" and ex.lastLiquidity == 2
    assert await commissions(trade) == [1.00]  # 100 x 0.005 = 0.50, the minimum is 1.00
    report = fill.commissionReport
    assert report.currency == "USD" and report.realizedPNL == 0  # opening: nothing realized


async def test_market_sell_fills_at_the_bid_and_realizes_pnl(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    buy_price = simulator.market.quote(contract.conId).ask
    await done(ib.placeOrder(contract, MarketOrder("BUY", 200)))
    simulator.market.move_to(contract.conId, buy_price + 5.00)
    quote = simulator.market.quote(contract.conId)
    trade = await done(ib.placeOrder(contract, MarketOrder("SELL", 200)))
    [fill] = trade.fills
    assert (fill.execution.side, fill.execution.price) == ("SLD", quote.bid)
    [commission] = await commissions(trade)
    assert commission == 1.00
    average_cost = (200 * buy_price + 1.00) / 200  # TWS's average cost includes commission
    expected = 200 * (quote.bid - average_cost) - commission
    assert fill.commissionReport.realizedPNL == pytest.approx(expected, abs=0.01)


async def test_a_fill_moves_cash_positions_and_account_values(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    start_cash = account_value(ib, "TotalCashValue")
    assert start_cash == simulator.config.cash
    assert not ib.positions()
    ask = simulator.market.quote(contract.conId).ask
    trade = await done(ib.placeOrder(contract, MarketOrder("BUY", 300)))
    [commission] = await commissions(trade)
    assert commission == 1.50

    cost = 300 * ask + commission
    assert await wait_until(lambda: bool(ib.positions()))
    [position] = ib.positions()
    assert position.contract.conId == contract.conId and position.position == 300
    assert position.avgCost == pytest.approx(cost / 300)
    assert await wait_until(
        lambda: account_value(ib, "TotalCashValue") == pytest.approx(start_cash - cost, abs=0.01)
    ), account_value(ib, "TotalCashValue")
    assert await wait_until(lambda: bool(ib.portfolio()))
    [item] = ib.portfolio()
    assert item.position == 300 and item.contract.conId == contract.conId
    assert account_value(ib, "GrossPositionValue") == pytest.approx(item.marketValue, abs=0.01)


async def test_large_market_order_fills_in_parts_of_the_displayed_size(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    first_quote = simulator.market.quote(contract.conId)
    displayed = int(first_quote.ask_size)
    quantity = displayed + 2550
    trade = ib.placeOrder(contract, MarketOrder("BUY", quantity))
    assert await wait_until(lambda: len(trade.fills) == 1)
    assert trade.fills[0].execution.shares == displayed
    assert trade.fills[0].execution.price == first_quote.ask
    assert await wait_until(lambda: trade.orderStatus.filled == displayed)
    assert trade.orderStatus.status == "Submitted"
    assert trade.orderStatus.remaining == quantity - displayed

    expected_prices = []
    for _ in range(50):  # each new quote offers its displayed size
        if trade.orderStatus.status == "Filled":
            break
        simulator.market.step()
        expected_prices.append(simulator.market.quote(contract.conId).ask)
        await wait_until(lambda: len(trade.fills) == 1 + len(expected_prices), 1.0)
    await done(trade)
    shares = [f.execution.shares for f in trade.fills]
    assert sum(shares) == quantity and len(shares) >= 2
    assert [f.execution.price for f in trade.fills[1:]] == expected_prices[: len(shares) - 1]
    assert [f.execution.cumQty for f in trade.fills] == [
        sum(shares[: i + 1]) for i in range(len(shares))
    ]
    total = sum(f.execution.shares * f.execution.price for f in trade.fills)
    assert trade.orderStatus.avgFillPrice == pytest.approx(total / quantity)
    # The fixed plan's per-order commission, spread over the executions.
    assert sum(await commissions(trade)) == pytest.approx(quantity * 0.005)


# --------------------------------------------------------------------------- limit orders


async def test_marketable_limit_fills_at_the_quote(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    quote = simulator.market.quote(contract.conId)
    limit = round(quote.ask + 0.50, 2)
    trade = await done(ib.placeOrder(contract, LimitOrder("BUY", 100, limit)))
    [fill] = trade.fills
    assert fill.execution.price == quote.ask < limit
    assert fill.execution.lastLiquidity == 2


async def test_resting_limit_fills_at_its_price_when_the_market_comes_through(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    limit = round(simulator.market.quote(contract.conId).bid - 5.00, 2)
    trade = await reaches(
        ib.placeOrder(contract, LimitOrder("BUY", 100, limit, tif="GTC")), "Submitted"
    )
    simulator.market.step()
    assert not trade.fills
    simulator.market.move_to(contract.conId, limit - 1.00)
    await done(trade)
    [fill] = trade.fills
    assert fill.execution.price == limit and fill.execution.lastLiquidity == 1
    assert statuses(trade) == ["PendingSubmit", "Submitted", "Filled"]


# --------------------------------------------------------------------------- stops


async def test_stop_waits_presubmitted_then_sells_at_the_bid(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    stop = round(simulator.market.quote(contract.conId).midpoint - 3.00, 2)
    trade = await reaches(ib.placeOrder(contract, StopOrder("SELL", 100, stop)), "PreSubmitted")
    simulator.market.move_to(contract.conId, stop + 0.50)
    simulator.market.step()
    assert trade.orderStatus.status == "PreSubmitted"
    quote = simulator.market.move_to(contract.conId, stop - 1.00)
    await done(trade)
    assert trade.fills[0].execution.price == quote.bid
    assert statuses(trade) == ["PendingSubmit", "PreSubmitted", "Filled"]


async def test_stop_limit_becomes_a_limit_when_triggered(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    base = simulator.market.quote(contract.conId).midpoint
    stop, limit = round(base + 3.00, 2), round(base + 3.50, 2)
    trade = await reaches(
        ib.placeOrder(contract, StopLimitOrder("BUY", 100, limit, stop)), "PreSubmitted"
    )
    quote = simulator.market.move_to(contract.conId, stop + 0.20)
    await done(trade)
    [fill] = trade.fills
    assert fill.execution.price == quote.ask <= limit


async def test_stop_limit_triggered_beyond_its_limit_keeps_working(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    base = simulator.market.quote(contract.conId).midpoint
    stop, limit = round(base - 3.00, 2), round(base - 3.20, 2)
    trade = await reaches(
        ib.placeOrder(contract, StopLimitOrder("SELL", 100, limit, stop)), "PreSubmitted"
    )
    simulator.market.move_to(contract.conId, limit - 1.00)  # gaps through stop and limit
    await reaches(trade, "Submitted")  # triggered: now a resting limit order
    assert not trade.fills
    simulator.market.move_to(contract.conId, limit + 0.50)
    await done(trade)
    assert trade.fills[0].execution.price == limit  # the market came back through it


async def test_trailing_stop_by_amount_follows_the_market(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    contract = await aapl(ib)
    base = round(simulator.market.quote(contract.conId).midpoint, 2)
    simulator.market.move_to(contract.conId, base)
    order = Order(action="SELL", totalQuantity=100, orderType="TRAIL", auxPrice=2.00)
    trade = await reaches(ib.placeOrder(contract, order), "PreSubmitted")
    simulator.market.move_to(contract.conId, base + 10.00)  # the stop follows to base + 8
    simulator.market.move_to(contract.conId, base + 8.50)  # above it: nothing happens
    # Another client sees the order as TWS describes it, with its live stop price.
    observer = await connect(client_id=2)
    [seen] = await observer.reqAllOpenOrdersAsync()
    assert seen.order.permId == trade.order.permId
    assert seen.order.trailStopPrice == pytest.approx(base + 8.00)
    assert (seen.order.auxPrice, seen.orderStatus.status) == (2.00, "PreSubmitted")
    assert trade.orderStatus.status == "PreSubmitted"
    quote = simulator.market.move_to(contract.conId, base + 7.50)
    await done(trade)
    assert trade.fills[0].execution.price == quote.bid


async def test_trailing_stop_by_percent(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    base = 180.00
    simulator.market.move_to(contract.conId, base)
    order = Order(action="BUY", totalQuantity=10, orderType="TRAIL", trailingPercent=1.0)
    trade = await reaches(ib.placeOrder(contract, order), "PreSubmitted")
    simulator.market.move_to(contract.conId, 170.00)  # stop follows down to 171.70
    simulator.market.move_to(contract.conId, 171.50)
    assert trade.orderStatus.status == "PreSubmitted"
    quote = simulator.market.move_to(contract.conId, 172.00)
    await done(trade)
    assert trade.fills[0].execution.price == quote.ask


# --------------------------------------------------------------------------- time in force


async def test_ioc_limit_that_cannot_fill_is_cancelled(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    limit = round(simulator.market.quote(contract.conId).bid - 5.00, 2)
    trade = await done(ib.placeOrder(contract, LimitOrder("BUY", 100, limit, tif="IOC")))
    assert trade.orderStatus.status == "Cancelled" and not trade.fills


async def test_ioc_market_order_fills_what_is_displayed_and_cancels_the_rest(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    displayed = int(simulator.market.quote(contract.conId).ask_size)
    trade = await done(ib.placeOrder(contract, MarketOrder("BUY", displayed + 500, tif="IOC")))
    assert trade.orderStatus.status == "Cancelled"
    assert [f.execution.shares for f in trade.fills] == [displayed]
    assert trade.orderStatus.filled == displayed and trade.orderStatus.remaining == 500


# --------------------------------------------------------------------------- other markets


async def test_forex_market_order(simulator: TwsSimulator, ib: IB) -> None:
    eur = await qualify(ib, Forex("EURUSD"))
    quote = simulator.market.quote(eur.conId)
    trade = await done(ib.placeOrder(eur, MarketOrder("BUY", 20000)))
    [fill] = trade.fills
    assert fill.execution.price == quote.ask and fill.execution.exchange == "IDEALPRO"
    assert fill.contract.localSymbol == "EUR.USD"
    assert await commissions(trade) == [2.00]  # IDEALPRO: 0.2 bp, at least USD 2.00
    assert await wait_until(lambda: any(p.contract.conId == eur.conId for p in ib.positions()))
    [position] = [p for p in ib.positions() if p.contract.conId == eur.conId]
    assert position.position == 20000


async def test_what_if_previews_margin_and_commission_without_trading(
    simulator: TwsSimulator, ib: IB
) -> None:
    contract = await aapl(ib)
    ask = simulator.market.quote(contract.conId).ask
    state = await ib.whatIfOrderAsync(contract, MarketOrder("BUY", 100))
    assert float(state.initMarginChange) == pytest.approx(0.25 * 100 * ask, abs=0.01)
    assert float(state.equityWithLoanBefore) == pytest.approx(simulator.config.cash)
    assert state.commission == 1.00 and state.commissionCurrency == "USD"
    assert not ib.openTrades() and not await ib.reqExecutionsAsync()
    assert simulator.account.position(contract.conId) is None


async def test_perm_ids_and_exec_ids_are_unique(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    trades = [ib.placeOrder(contract, MarketOrder("BUY", 10)) for _ in range(5)]
    for trade in trades:
        await done(trade)
    perm_ids = {t.orderStatus.permId for t in trades}
    exec_ids = {f.execution.execId for t in trades for f in t.fills}
    assert len(perm_ids) == 5 and len(exec_ids) == 5
    assert len({t.order.orderId for t in trades}) == 5


async def test_fractional_forex_quantity_is_accepted(simulator: TwsSimulator, ib: IB) -> None:
    eur = await qualify(ib, Forex("EURUSD"))
    trade = await done(ib.placeOrder(eur, MarketOrder("SELL", 1000.5)))
    assert trade.orderStatus.status == "Filled"
    position = simulator.account.position(eur.conId)
    assert position is not None and position.quantity == Decimal("-1000.5")
