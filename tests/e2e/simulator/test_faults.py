"""Fault injection, seen from a real ib_insync client."""

from __future__ import annotations

import asyncio
import time

import pytest
from ib_insync import IB, MarketOrder, Stock, Ticker

from tws_simulator import TwsSimulator

from .conftest import Connect
from .helpers import contract_of, wait_until


def collect_errors(ib: IB) -> list[tuple[int, int, str]]:
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code, msg))
    return errors


async def streaming_ticker(ib: IB, symbol: str = "AAPL") -> tuple[Ticker, list[Ticker]]:
    [contract] = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
    updates: list[Ticker] = []
    ticker = ib.reqMktData(contract)
    ticker.updateEvent += updates.append
    assert await wait_until(lambda: len(updates) >= 3)
    return ticker, updates


async def test_drop_every_connection(simulator: TwsSimulator, connect: Connect) -> None:
    one, two = await connect(client_id=1), await connect(client_id=2)
    dropped: list[int] = []
    one.disconnectedEvent += lambda: dropped.append(1)
    two.disconnectedEvent += lambda: dropped.append(2)
    assert simulator.faults.drop_all_connections() == 2
    assert await wait_until(lambda: sorted(dropped) == [1, 2])
    assert not one.isConnected() and not two.isConnected()
    assert await wait_until(lambda: simulator.clients == [])
    # The same client ids can connect again at once.
    again = await connect(client_id=1)
    assert await again.reqCurrentTimeAsync()


async def test_offline_then_back_with_data_maintained(ib: IB, simulator: TwsSimulator) -> None:
    errors = collect_errors(ib)
    _ticker, updates = await streaming_ticker(ib)
    simulator.faults.go_offline()
    assert await wait_until(lambda: any(code == 1100 for _, code, _ in errors))
    await asyncio.sleep(0.05)
    count = len(updates)
    await asyncio.sleep(0.2)  # ten market steps: nothing arrives while offline
    assert len(updates) == count
    assert {2103, 2105, 2157} <= {code for _, code, _ in errors}  # the farms are down
    simulator.faults.come_back(data_lost=False)
    assert await wait_until(lambda: any(code == 1102 for _, code, _ in errors))
    assert await wait_until(lambda: [c for _, c, _ in errors][-3:] == [2104, 2106, 2158])
    assert await wait_until(lambda: len(updates) > count + 2)  # the same subscription resumes
    assert ib.isConnected()


async def test_offline_then_back_with_data_lost(ib: IB, simulator: TwsSimulator) -> None:
    errors = collect_errors(ib)
    _ticker, updates = await streaming_ticker(ib)
    simulator.faults.go_offline()
    simulator.faults.come_back(data_lost=True)
    assert await wait_until(lambda: any(code == 1101 for _, code, _ in errors))
    assert simulator.market_data.lines_in_use == 0
    await asyncio.sleep(0.05)
    count = len(updates)
    await asyncio.sleep(0.2)
    assert len(updates) == count  # subscriptions must be made again
    ticker, _ = await streaming_ticker(ib)
    assert ticker.bid > 0


async def test_delayed_answers(ib: IB, simulator: TwsSimulator) -> None:
    simulator.faults.set_delay(0.3)
    start = time.monotonic()
    await ib.reqCurrentTimeAsync()
    assert time.monotonic() - start >= 0.3
    # Order is kept: several requests come back in the order asked.
    details = await asyncio.gather(
        *(ib.reqContractDetailsAsync(Stock(s, "SMART", "USD")) for s in ("AAPL", "MSFT", "TSLA"))
    )
    assert [contract_of(d[0]).symbol for d in details] == ["AAPL", "MSFT", "TSLA"]
    simulator.faults.set_delay(0)
    start = time.monotonic()
    await ib.reqCurrentTimeAsync()
    assert time.monotonic() - start < 0.3


async def test_reject_the_next_order(ib: IB, simulator: TwsSimulator) -> None:
    errors = collect_errors(ib)
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    simulator.faults.reject_order(201, "Order rejected - reason:Simulated outage")
    assert simulator.faults.reject_next_order == (201, "Order rejected - reason:Simulated outage")
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    assert await wait_until(lambda: any(code == 201 for _, code, _ in errors))
    assert await wait_until(trade.isDone)
    assert trade.orderStatus.status == "Cancelled"
    assert simulator.faults.reject_next_order is None  # consumed: the next one goes through
    second = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    assert await wait_until(lambda: second.orderStatus.status == "Filled")


async def test_pacing_violation_answers_the_next_request_with_100(
    ib: IB, simulator: TwsSimulator
) -> None:
    errors = collect_errors(ib)
    simulator.faults.pacing_violation()
    assert await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD")) == []
    assert [code for _, code, _ in errors] == [100]
    assert errors[0][0] > 0  # it names the request, so the caller's future fails at once
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    assert aapl.conId == 265598


async def test_refuse_new_connections_for_a_while(
    simulator: TwsSimulator, ib: IB, connect: Connect
) -> None:
    simulator.faults.refuse_connections(0.5)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(simulator.host, simulator.port)
    assert ib.isConnected() and await ib.reqCurrentTimeAsync()  # existing clients stay
    assert await wait_until(lambda: not simulator.faults.refusing, within=3)
    assert await wait_until(lambda: simulator.is_listening, within=3)
    again = await connect(client_id=2)
    assert again.isConnected()
