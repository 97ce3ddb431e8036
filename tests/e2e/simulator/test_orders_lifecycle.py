"""Orders end to end: modify, cancel, global cancel, several clients, orderRef round trips,
and the order/execution queries (reqOpenOrders, reqAllOpenOrders, reqCompletedOrders,
reqExecutions) reflecting the history."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from ib_insync import (
    IB,
    Contract,
    ExecutionFilter,
    Forex,
    LimitOrder,
    MarketOrder,
    StopOrder,
    Trade,
)

from tws_simulator import TwsSimulator

from .conftest import Connect
from .helpers import wait_until
from .test_orders import FROZEN, Errors, aapl, commissions, done, qualify, reaches, statuses

pytestmark = pytest.mark.sim_config(**FROZEN)


def away_from_market(simulator: TwsSimulator, con_id: int, offset: float = -5.00) -> float:
    """A limit price that rests: ``offset`` from the current bid (buy) on the tick grid."""
    return round(simulator.market.quote(con_id).bid + offset, 2)


# --------------------------------------------------------------------------- modify


async def test_modify_price_and_quantity_then_fill(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    contract = await aapl(ib)
    order = LimitOrder("BUY", 100, away_from_market(simulator, contract.conId), orderRef="m-1")
    trade = await reaches(ib.placeOrder(contract, order), "Submitted")
    perm_id = trade.orderStatus.permId

    order.lmtPrice = away_from_market(simulator, contract.conId, -3.00)
    assert ib.placeOrder(contract, order) is trade  # same order id: a modification
    # TWS acknowledges with an unchanged status, which ib_insync logs as "Modified".
    assert await wait_until(lambda: any(e.message == "Modified" for e in trade.log))
    order.totalQuantity = 150
    ib.placeOrder(contract, order)
    assert await wait_until(lambda: trade.orderStatus.remaining == 150)
    assert trade.orderStatus.permId == perm_id
    observer = await connect(client_id=2)
    [seen] = await observer.reqAllOpenOrdersAsync()
    assert (seen.order.lmtPrice, seen.order.totalQuantity) == (order.lmtPrice, 150)
    assert (seen.order.permId, seen.order.orderRef) == (perm_id, "m-1")

    ask = simulator.market.quote(contract.conId).ask
    order.lmtPrice = round(ask + 0.10, 2)  # now marketable
    ib.placeOrder(contract, order)
    await done(trade)
    assert trade.orderStatus.status == "Filled"
    assert sum(f.execution.shares for f in trade.fills) == 150
    assert all(f.execution.permId == perm_id for f in trade.fills)


async def test_modify_a_stop_price(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    base = simulator.market.quote(contract.conId).midpoint
    order = StopOrder("SELL", 100, round(base - 10.00, 2))
    trade = await reaches(ib.placeOrder(contract, order), "PreSubmitted")
    simulator.market.move_to(contract.conId, base - 2.00)
    assert trade.orderStatus.status == "PreSubmitted"
    order.auxPrice = round(base - 1.00, 2)  # the market is already through the new stop
    ib.placeOrder(contract, order)
    await done(trade)
    assert trade.orderStatus.status == "Filled"


# --------------------------------------------------------------------------- cancel


async def test_cancel_a_working_order(simulator: TwsSimulator, ib: IB) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    order = LimitOrder("BUY", 100, away_from_market(simulator, contract.conId))
    trade = await reaches(ib.placeOrder(contract, order), "Submitted")
    ib.cancelOrder(order)
    await done(trade)
    assert trade.orderStatus.status == "Cancelled" and not trade.fills
    assert await errors.wait(order.orderId, 202) == "Order Canceled - reason:"
    assert statuses(trade) == ["PendingSubmit", "Submitted", "PendingCancel", "Cancelled"]
    # The market no longer reaches it.
    simulator.market.move_to(contract.conId, order.lmtPrice - 2.00)
    assert not trade.fills

    ib.client.cancelOrder(order.orderId)  # again: TWS says it cannot
    message = await errors.wait(order.orderId, 10148)
    assert message == (
        f"OrderId {order.orderId} that needs to be cancelled cannot be cancelled, state: Cancelled."
    )
    ib.client.cancelOrder(987654)
    assert await errors.wait(987654, 10147) == (
        "OrderId 987654 that needs to be cancelled is not found."
    )


async def test_cancel_a_partially_filled_order(simulator: TwsSimulator, ib: IB) -> None:
    contract = await aapl(ib)
    displayed = int(simulator.market.quote(contract.conId).ask_size)
    order = MarketOrder("BUY", displayed + 1000)
    trade = ib.placeOrder(contract, order)
    assert await wait_until(lambda: trade.orderStatus.filled == displayed)
    ib.cancelOrder(order)
    await done(trade)
    assert trade.orderStatus.status == "Cancelled"
    assert trade.orderStatus.filled == displayed and trade.orderStatus.remaining == 1000
    simulator.market.step()
    assert sum(f.execution.shares for f in trade.fills) == displayed


async def test_global_cancel_cancels_every_clients_orders(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    other = await connect(client_id=2)
    contract = await aapl(ib)
    price = away_from_market(simulator, contract.conId)
    mine = [
        await reaches(ib.placeOrder(contract, LimitOrder("BUY", 10, price)), "Submitted")
        for _ in range(2)
    ]
    theirs = await reaches(other.placeOrder(contract, LimitOrder("BUY", 10, price)), "Submitted")
    their_errors = Errors(other)
    other.reqGlobalCancel()
    for trade in [*mine, theirs]:
        await done(trade)
        assert trade.orderStatus.status == "Cancelled"
    assert await their_errors.wait(theirs.order.orderId, 202)
    assert await ib.reqAllOpenOrdersAsync() == []


# --------------------------------------------------------------------------- several clients


async def test_clients_see_only_their_own_order_updates(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    other = await connect(client_id=2)
    other_updates: list[Trade] = []
    other.orderStatusEvent += other_updates.append
    other.openOrderEvent += other_updates.append
    other_fills: list[object] = []
    other.execDetailsEvent += lambda trade, fill: other_fills.append(fill)

    contract = await aapl(ib)
    resting = await reaches(
        ib.placeOrder(
            contract,
            LimitOrder("BUY", 10, away_from_market(simulator, contract.conId), orderRef="r1"),
        ),
        "Submitted",
    )
    await done(ib.placeOrder(contract, MarketOrder("BUY", 10)))
    await other.reqCurrentTimeAsync()  # a round trip: anything sent to `other` has arrived
    assert other_updates == [] and other_fills == []
    assert await other.reqOpenOrdersAsync() == []

    [seen] = await other.reqAllOpenOrdersAsync()
    assert (seen.order.clientId, seen.order.orderId) == (1, resting.order.orderId)
    assert (seen.order.permId, seen.order.orderRef) == (resting.orderStatus.permId, "r1")
    assert seen.orderStatus.status == "Submitted"
    mine = await ib.reqOpenOrdersAsync()
    assert [t.order.permId for t in mine] == [resting.orderStatus.permId]


async def test_order_ids_from_different_clients_do_not_collide(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    other = await connect(client_id=2)
    contract = await aapl(ib)
    price = away_from_market(simulator, contract.conId)
    a = await reaches(ib.placeOrder(contract, LimitOrder("BUY", 1, price)), "Submitted")
    b = await reaches(other.placeOrder(contract, LimitOrder("BUY", 2, price)), "Submitted")
    assert a.orderStatus.permId != b.orderStatus.permId
    ib.cancelOrder(a.order)
    await done(a)
    assert b.orderStatus.status == "Submitted"  # the other client's order is untouched


# --------------------------------------------------------------------------- orderRef


async def test_order_ref_survives_a_reconnect_and_every_query(
    simulator: TwsSimulator, connect: Connect
) -> None:
    first = await connect(client_id=3)
    contract = await aapl(first)
    resting = await reaches(
        first.placeOrder(
            contract,
            LimitOrder("BUY", 5, away_from_market(simulator, contract.conId), orderRef="idem-A"),
        ),
        "Submitted",
    )
    filled = await done(first.placeOrder(contract, MarketOrder("BUY", 5, orderRef="idem-B")))
    await commissions(filled)
    first.disconnect()
    await wait_until(lambda: simulator.client(3) is None)

    again = await connect(client_id=3)  # connect-time sync: open and completed orders, fills
    open_refs = {t.order.orderRef: t for t in again.openTrades()}
    assert set(open_refs) == {"idem-A"}
    reopened = open_refs["idem-A"]
    assert reopened.order.orderId == resting.order.orderId
    assert reopened.order.permId == resting.orderStatus.permId
    assert reopened.orderStatus.status == "Submitted"
    completed = [t for t in again.trades() if t.orderStatus.status == "Filled"]
    assert [t.order.orderRef for t in completed] == ["idem-B"]
    assert {f.execution.orderRef for f in again.fills()} == {"idem-B"}
    # The next order id is above every id the client used before.
    assert again.client.getReqId() > filled.order.orderId

    # The reopened trade keeps working: it fills when the market reaches it.
    simulator.market.move_to(contract.conId, reopened.order.lmtPrice - 1.00)
    await done(reopened)
    assert reopened.fills[0].execution.orderRef == "idem-A"


# --------------------------------------------------------------------------- history


async def test_completed_orders_reflect_fills_and_cancels(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    contract = await aapl(ib)
    filled = await done(ib.placeOrder(contract, MarketOrder("BUY", 20, orderRef="c-fill")))
    order = LimitOrder("SELL", 7, away_from_market(simulator, contract.conId, +20.00))
    order.orderRef = "c-cancel"
    cancelled = await reaches(ib.placeOrder(contract, order), "Submitted")
    ib.cancelOrder(order)
    await done(cancelled)

    observer = await connect(client_id=5)
    completed = await observer.reqCompletedOrdersAsync(apiOnly=True)
    by_ref = {t.order.orderRef: t for t in completed}
    assert list(by_ref) == ["c-fill", "c-cancel"]
    done_fill, done_cancel = by_ref["c-fill"], by_ref["c-cancel"]
    assert done_fill.orderStatus.status == "Filled" and done_fill.order.filledQuantity == 20
    assert done_fill.order.permId == filled.orderStatus.permId
    assert done_fill.contract.conId == contract.conId and done_fill.order.action == "BUY"
    assert done_cancel.orderStatus.status == "Cancelled" and done_cancel.order.filledQuantity == 0
    assert (done_cancel.order.lmtPrice, done_cancel.order.totalQuantity) == (order.lmtPrice, 7)


async def test_executions_reflect_fills_with_filters(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    other = await connect(client_id=2)
    contract = await aapl(ib)
    eur = await qualify(ib, Forex("EURUSD"))
    buy = await done(ib.placeOrder(contract, MarketOrder("BUY", 30)))
    sell = await done(ib.placeOrder(contract, MarketOrder("SELL", 10)))
    fx = await done(other.placeOrder(eur, MarketOrder("BUY", 25000)))

    exec_ids = [f.execution.execId for t in (buy, sell, fx) for f in t.fills]
    # A client connecting later gets every execution, with its commission report, in the
    # connect-time reqExecutions.
    observer = await connect(client_id=9)
    synced = observer.fills()
    assert [f.execution.execId for f in synced] == exec_ids
    assert await wait_until(lambda: all(f.commissionReport.execId for f in synced))
    assert [f.commissionReport.commission for f in synced] == [1.00, 1.00, 2.00]
    assert [f.execution.clientId for f in synced] == [1, 1, 2]
    everything = await observer.reqExecutionsAsync()
    assert [f.execution.execId for f in everything] == exec_ids

    async def ids(**filters: object) -> list[str]:
        fills = await observer.reqExecutionsAsync(ExecutionFilter(**filters))  # type: ignore[arg-type]
        return [f.execution.execId for f in fills]

    assert await ids(symbol="AAPL") == exec_ids[:2]
    assert await ids(side="SELL") == [exec_ids[1]]
    assert await ids(clientId=2) == [exec_ids[2]]
    assert await ids(secType="CASH") == [exec_ids[2]]
    assert await ids(acctCode=simulator.account.account_id) == exec_ids
    assert await ids(acctCode="DU0000000") == []
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await ids(time=later.strftime("%Y%m%d %H:%M:%S") + " UTC") == []
    earlier = datetime.fromtimestamp(time.time() - 3600, UTC)
    assert await ids(time=earlier.strftime("%Y%m%d-%H:%M:%S") + " UTC") == exec_ids


async def test_order_ref_is_returned_byte_for_byte(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    key = "gw:clé-ü-😀 " + "x" * 100 + ";=|,"  # any text an idempotency key may be
    contract = await aapl(ib)
    trade = await done(ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef=key)))
    assert trade.order.orderRef == key == trade.fills[0].execution.orderRef
    observer = await connect(client_id=4)
    [completed] = await observer.reqCompletedOrdersAsync(apiOnly=True)
    assert completed.order.orderRef == key
    assert [f.execution.orderRef for f in observer.fills()] == [key]


async def test_modify_with_a_contract_as_tws_echoed_it(simulator: TwsSimulator, ib: IB) -> None:
    """ib_insync rebuilds contracts from openOrder with right "?" (e.g. after a reconnect);
    a modification sent with such a contract is the same instrument, not error 200."""
    contract = await aapl(ib)
    order = LimitOrder("BUY", 100, away_from_market(simulator, contract.conId), orderRef="m-2")
    trade = await reaches(ib.placeOrder(contract, order), "Submitted")
    echoed = Contract(
        conId=contract.conId,
        symbol="AAPL",
        secType="STK",
        right="?",
        exchange="SMART",
        currency="USD",
    )
    order.totalQuantity = 120
    ib.placeOrder(echoed, order)
    assert await wait_until(lambda: trade.orderStatus.remaining == 120)
    assert not any(e.errorCode == 200 for e in trade.log)
