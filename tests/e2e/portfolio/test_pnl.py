"""AccountService.GetPnL end to end: IB's reqPnL figures of the simulator's paper account."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import grpc.aio
import pytest
from ib_insync import IB, MarketOrder, Stock

from ibgateway.v1 import account_pb2, account_pb2_grpc, connection_pb2, connection_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error
from tests.polling import wait_until
from tws_simulator import TwsSimulator

ACCOUNT = "DU1234567"


@pytest.fixture
def accounts(channel: grpc.aio.Channel) -> account_pb2_grpc.AccountServiceAsyncStub:
    return account_pb2_grpc.AccountServiceStub(channel)


@pytest.fixture
async def trader(simulator: TwsSimulator) -> AsyncIterator[IB]:
    """Another API client of the same TWS, to trade the account."""
    ib = IB()
    await ib.connectAsync(simulator.host, simulator.port, clientId=902, timeout=5)
    yield ib
    ib.disconnect()


async def trade(ib: IB, action: str, quantity: int) -> None:
    contract = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    done = ib.placeOrder(contract, MarketOrder(action, quantity, account=ACCOUNT))
    assert await wait_until(lambda: done.orderStatus.status == "Filled" and done.fills)


def exact(text: str) -> Decimal:
    """The Decimal of a P&L figure, which TWS sends in whole cents (never a float's tail)."""
    number = Decimal(text)
    assert number == number.quantize(Decimal("0.01")), text
    return number


def figures(response: account_pb2.GetPnLResponse) -> tuple[Decimal, Decimal, Decimal]:
    return (
        exact(response.daily_pnl.value),
        exact(response.unrealized_pnl.value),
        exact(response.realized_pnl.value),
    )


async def test_pnl_before_and_after_fills(
    accounts: account_pb2_grpc.AccountServiceAsyncStub,
    trader: IB,
    simulator: TwsSimulator,
    gateway: Gateway,
) -> None:
    before = await accounts.GetPnL(account_pb2.GetPnLRequest())
    assert before.account_id == ACCOUNT
    assert figures(before) == (0, 0, 0)  # a fresh account, no positions

    await trade(trader, "BUY", 100)
    opened = await accounts.GetPnL(account_pb2.GetPnLRequest(account_id=ACCOUNT))
    _, unrealized, realized = figures(opened)
    assert unrealized != 0  # the commission is in the average cost, and prices move
    assert realized == 0

    await trade(trader, "SELL", 100)
    closed = await accounts.GetPnL(account_pb2.GetPnLRequest())
    _, unrealized, realized = figures(closed)
    assert unrealized == 0  # flat again
    assert realized != 0  # at least the commissions
    assert realized == Decimal(f"{simulator.account.realized_pnl:.2f}")
    # (the simulator's daily figure only counts open positions, so it is not checked here)

    # every read cancelled its subscription, on both sides
    assert gateway.session is not None and gateway.session.ib.pnl() == []
    assert await wait_until(lambda: not simulator.account_feed._pnl)


async def test_concurrent_reads_share_one_subscription(
    accounts: account_pb2_grpc.AccountServiceAsyncStub, simulator: TwsSimulator, gateway: Gateway
) -> None:
    responses = await asyncio.gather(
        *(accounts.GetPnL(account_pb2.GetPnLRequest()) for _ in range(8))
    )
    assert [r.account_id for r in responses] == [ACCOUNT] * 8
    assert all(figures(r) == (0, 0, 0) for r in responses)
    assert gateway.session is not None and gateway.session.ib.pnl() == []
    assert await wait_until(lambda: not simulator.account_feed._pnl)


async def test_unknown_account_is_a_field_violation(
    accounts: account_pb2_grpc.AccountServiceAsyncStub,
) -> None:
    err = await expect_error(accounts.GetPnL(account_pb2.GetPnLRequest(account_id="U7654321")))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.reason == "UNKNOWN_ACCOUNT"
    assert err.info.metadata["account"] == "U7654321"
    assert "account_id" in err.violations


async def test_not_connected_is_unavailable(
    accounts: account_pb2_grpc.AccountServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    await connection_pb2_grpc.ConnectionServiceStub(channel).Disconnect(
        connection_pb2.DisconnectRequest()
    )
    err = await expect_error(accounts.GetPnL(account_pb2.GetPnLRequest()))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.info is not None and err.info.reason == "NOT_CONNECTED"
    assert err.retry is not None
