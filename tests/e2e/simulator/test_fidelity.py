"""Simulator fidelity found by client tests written elsewhere: orders without an
exchange are refused as TWS refuses them (321), not as an unknown contract (200)."""

from __future__ import annotations

import asyncio

from ib_insync import IB, Contract, LimitOrder, MarketOrder

from tws_simulator import TwsSimulator


async def test_an_order_without_exchange_is_missing_its_exchange(
    simulator: TwsSimulator, ib: IB
) -> None:
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, message, contract: errors.append((req_id, code, message))
    trade = ib.placeOrder(Contract(conId=265598), MarketOrder("BUY", 1))
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.02)
    assert errors and errors[0][0] == trade.order.orderId
    assert errors[0][1] == 321 and "Missing order exchange" in errors[0][2]
    assert trade.orderStatus.status == "Cancelled"
    assert not await ib.reqAllOpenOrdersAsync()
    # a what-if is checked the same way
    errors.clear()
    await asyncio.wait_for(
        ib.whatIfOrderAsync(Contract(symbol="AAPL", secType="STK"), LimitOrder("BUY", 1, 100)),
        5,
    )
    assert errors and errors[0][1] == 321
