"""Orders end to end: each rejection with IB's code and text, as ib_insync reports it
(errorEvent, and the trade's final log entry), and nothing booked afterwards."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, Forex, LimitOrder, MarketOrder, Order, Stock, StopOrder, Trade

from tws_simulator import TwsSimulator
from tws_simulator.faults import DEFAULT_ORDER_REJECTION

from .conftest import Connect
from .helpers import RawClient, wait_until
from .test_orders import FROZEN, Errors, aapl, done, qualify, reaches

pytestmark = pytest.mark.sim_config(**FROZEN)


# Codes ib_insync 0.9.86 logs as warnings: it leaves such a trade in PendingSubmit.
IB_INSYNC_WARNINGS = {110, 434}


async def rejected(ib: IB, errors: Errors, trade: Trade, code: int) -> str:
    """The error text of a rejected order, once ib_insync has handled it: for an error it
    cancels the trade (logging the code), for a "warning" code it leaves it pending."""
    message = await errors.wait(trade.order.orderId, code)
    if code in IB_INSYNC_WARNINGS:
        assert trade.orderStatus.status == "PendingSubmit"
    else:
        await done(trade)
        assert trade.orderStatus.status == "Cancelled"
        assert trade.log[-1].errorCode == code
    assert not trade.fills
    return message


async def nothing_placed(simulator: TwsSimulator, connect: Connect) -> None:
    """No order exists and nothing was booked: a fresh client sees an empty book."""
    observer = await connect(client_id=99)
    assert await observer.reqAllOpenOrdersAsync() == []
    assert await observer.reqCompletedOrdersAsync(apiOnly=False) == []
    assert observer.fills() == []
    assert simulator.account.cash == simulator.config.cash


async def test_unknown_contract_is_error_200(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(Stock("ZZZZ", "SMART", "USD"), MarketOrder("BUY", 1))
    message = await rejected(ib, errors, trade, 200)
    assert message == "No security definition has been found for the request"
    by_con_id = ib.placeOrder(Contract(conId=424242, exchange="SMART"), MarketOrder("BUY", 1))
    await rejected(ib, errors, by_con_id, 200)
    await nothing_placed(simulator, connect)


async def test_price_off_the_tick_grid_is_error_110(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    trade = ib.placeOrder(contract, LimitOrder("BUY", 10, 150.005))
    message = await errors.wait(trade.order.orderId, 110)
    assert message == "The price does not conform to the minimum price variation for this contract."
    stop = ib.placeOrder(contract, StopOrder("SELL", 10, 150.001))
    await errors.wait(stop.order.orderId, 110)
    eur = await qualify(ib, Forex("EURUSD"))
    fx = ib.placeOrder(eur, LimitOrder("BUY", 20000, 1.08731))  # the grid is half a pip
    await errors.wait(fx.order.orderId, 110)
    # ib_insync treats 110 as a warning: the trades stay PendingSubmit, and TWS has no order.
    assert trade.orderStatus.status == stop.orderStatus.status == "PendingSubmit"
    await nothing_placed(simulator, connect)


@pytest.mark.parametrize(
    ("quantity", "code", "text"),
    [
        (0, 434, "The order size cannot be zero."),
        (-5, 434, "The order size cannot be zero."),
        (
            1.5,
            10243,
            "Fractional-sized order cannot be placed via API. "
            "Please use desktop version to place this order.",
        ),
    ],
)
async def test_invalid_quantities(
    simulator: TwsSimulator, ib: IB, connect: Connect, quantity: float, code: int, text: str
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    trade = ib.placeOrder(contract, MarketOrder("BUY", quantity))
    assert await rejected(ib, errors, trade, code) == text
    await nothing_placed(simulator, connect)


@pytest.mark.sim_config(cash=10_000.0, **FROZEN)
async def test_insufficient_buying_power_is_error_201_with_a_reason(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    trade = ib.placeOrder(contract, MarketOrder("BUY", 1000))  # ~190k on 10k of cash
    message = await rejected(ib, errors, trade, 201)
    assert message.startswith(
        "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED "
        "POSITION YOUR EQUITY WITH LOAN VALUE [10000.00 USD] MUST EXCEED THE INITIAL MARGIN"
    )
    await nothing_placed(simulator, connect)
    # Within the buying power (4x the available funds) it goes through.
    await done(ib.placeOrder(contract, MarketOrder("BUY", 100)))


@pytest.mark.parametrize(
    ("order", "code", "text"),
    [
        (
            Order(action="BUY", totalQuantity=10, orderType="LMT"),
            107,
            "Cannot transmit incomplete order.",
        ),
        (
            Order(action="BUY", totalQuantity=10, orderType="STP"),
            107,
            "Cannot transmit incomplete order.",
        ),
        (
            Order(action="BUY", totalQuantity=10, orderType="TRAIL"),
            158,
            "You must specify an offset amount or a percent offset value.",
        ),
        (
            Order(action="SELL", totalQuantity=10, orderType="TRAIL", trailingPercent=120.0),
            159,
            "The percent offset value must be between 0% and 100%.",
        ),
        (
            Order(action="BUY", totalQuantity=10, orderType="PEG BENCH"),
            387,
            "Unsupported order type for this exchange and security type.",
        ),
        (
            StopOrder("SELL", 10, 100.0, tif="IOC"),
            111,
            "The TIF (Tif type) and the order type are incompatible.",
        ),
    ],
    ids=[
        "lmt-without-price",
        "stp-without-stop",
        "trail-without-offset",
        "trail-120pct",
        "peg-bench",
        "ioc-stop",
    ],
)
async def test_incomplete_and_unsupported_orders(
    ib: IB, order: Order, code: int, text: str
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    assert await rejected(ib, errors, ib.placeOrder(contract, order), code) == text


async def test_features_the_simulator_does_not_simulate_are_rejected(
    simulator: TwsSimulator, ib: IB
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    price = round(simulator.market.quote(contract.conId).bid - 5, 2)
    algo = LimitOrder("BUY", 10, price, algoStrategy="Adaptive")
    assert "not supported by the simulator" in await rejected(
        ib, errors, ib.placeOrder(contract, algo), 201
    )
    orphan = LimitOrder("SELL", 10, price + 10, parentId=999_999)
    assert await rejected(ib, errors, ib.placeOrder(contract, orphan), 10006) == (
        "Missing parent order."
    )
    wrong_account = MarketOrder("BUY", 1, account="DU9999999")
    message = await rejected(ib, errors, ib.placeOrder(contract, wrong_account), 201)
    assert "DU9999999" in message


async def test_injected_rejection_hits_only_the_next_order(simulator: TwsSimulator, ib: IB) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    simulator.faults.reject_order()
    trade = ib.placeOrder(contract, MarketOrder("BUY", 10))
    assert await rejected(ib, errors, trade, 201) == DEFAULT_ORDER_REJECTION[1]
    simulator.faults.reject_order(203, "The security is not available or allowed for this account.")
    other = ib.placeOrder(contract, MarketOrder("BUY", 10))
    assert await rejected(ib, errors, other, 203) == (
        "The security is not available or allowed for this account."
    )
    assert simulator.faults.reject_next_order is None
    await done(ib.placeOrder(contract, MarketOrder("BUY", 10)))


async def test_modifying_a_done_order_is_refused(simulator: TwsSimulator, ib: IB) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    filled_order = MarketOrder("BUY", 10)
    await done(ib.placeOrder(contract, filled_order))
    filled_order.totalQuantity = 20
    # ib_insync refuses to modify a done trade itself, so send the placeOrder directly.
    ib.client.placeOrder(filled_order.orderId, contract, filled_order)
    assert await errors.wait(filled_order.orderId, 104) == "Can't modify a filled order."

    price = round(simulator.market.quote(contract.conId).bid - 5, 2)
    cancelled_order = LimitOrder("BUY", 10, price)
    trade = await reaches(ib.placeOrder(contract, cancelled_order), "Submitted")
    ib.cancelOrder(cancelled_order)
    await done(trade)
    ib.client.placeOrder(cancelled_order.orderId, contract, cancelled_order)
    assert await errors.wait(cancelled_order.orderId, 103) == "Duplicate order id"


async def test_a_modification_must_match_the_original_order(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    price = round(simulator.market.quote(contract.conId).bid - 5, 2)
    order = LimitOrder("BUY", 10, price)
    await reaches(ib.placeOrder(contract, order), "Submitted")
    order.action = "SELL"
    ib.client.placeOrder(order.orderId, contract, order)
    message = await errors.wait(order.orderId, 105)
    assert message == "Order being modified does not match original order."
    # ib_insync cancels its trade on any order error, but the order keeps working in TWS.
    observer = await connect(client_id=2)
    [seen] = await observer.reqAllOpenOrdersAsync()
    assert (seen.order.action, seen.orderStatus.status) == ("BUY", "Submitted")
    order.action = "BUY"
    order.lmtPrice = price + 0.001  # a modification is validated like a new order
    ib.client.placeOrder(order.orderId, contract, order)
    await errors.wait(order.orderId, 110)


async def test_an_unreadable_place_order_is_answered_and_harmless(
    simulator: TwsSimulator, ib: IB
) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=8)
    try:
        await raw.send(3, 77, 0, "AAPL", "STK")  # cut short
        error = await raw.expect("4", lambda f: f[3] == "320")
        assert error[2] == "77"
        assert error[4].startswith("Server error when reading an API client request.")
    finally:
        await raw.close()
    contract = await aapl(ib)
    await done(ib.placeOrder(contract, MarketOrder("BUY", 1)))
    assert await wait_until(lambda: simulator.client(8) is None)


async def test_a_new_order_id_must_be_above_the_clients_earlier_ones(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    errors = Errors(ib)
    contract = await aapl(ib)
    first = await done(ib.placeOrder(contract, MarketOrder("BUY", 1)))
    stale_id = first.order.orderId - 1
    ib.client.placeOrder(stale_id, contract, MarketOrder("BUY", 1))
    assert await errors.wait(stale_id, 103) == "Duplicate order id"
    # Order ids are per client: another client may use the same numbers.
    other = await connect(client_id=2)
    await done(other.placeOrder(contract, MarketOrder("BUY", 1, orderId=stale_id)))
