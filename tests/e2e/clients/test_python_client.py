"""ibgateway.client (the typed Python client) against a real gateway: Decimal in and out,
GatewayError with reason / IB code / field violations, default deadlines, idempotent
PlaceOrder, the blocking Client."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest

from ibgateway.client import AsyncClient, Client, GatewayError, service_config
from ibgateway_server.app import Gateway
from tws_simulator import TwsSimulator


async def test_reads_come_back_as_decimals(gateway: Gateway) -> None:
    async with AsyncClient(gateway.address) as gw:
        status = await gw.connection.status()
        assert status.connected
        assert await gw.accounts.list() == ["DU1234567"]
        balance = await gw.accounts.balance()
        assert isinstance(balance.net_liquidation, Decimal) and balance.net_liquidation > 0
        assert balance.account_id == "DU1234567"

        snapshot = await gw.market_data.get_quotes(["AAPL", "NOSUCH"])
        [quote] = list(snapshot)
        assert quote.symbol == "AAPL" and quote.con_id == 265598
        assert quote.bid is not None and quote.ask is not None
        assert isinstance(quote.bid, Decimal) and quote.bid < quote.ask
        assert str(quote.bid) == quote.proto.bid.value  # exact: the gateway's text, as is
        [failure] = snapshot.failures
        assert failure.contract.symbol == "NOSUCH" and failure.ib_code == 200


@pytest.mark.sim_config(positions={"MSFT": (30, 410.5)})
async def test_positions_and_pnl(gateway: Gateway) -> None:
    async with AsyncClient(gateway.address) as gw:
        [position] = await gw.portfolio.positions()
        assert position.symbol == "MSFT" and position.quantity == Decimal(30)
        assert position.average_cost == Decimal("410.5")
        pnl = await gw.accounts.pnl()
        assert pnl.account_id == "DU1234567"


async def test_orders_with_decimals_and_one_key(gateway: Gateway) -> None:
    async with AsyncClient(gateway.address) as gw:
        placed = await gw.orders.place(
            "pyc-1", "AAPL", "BUY", Decimal("10"), limit_price=Decimal("100.05")
        )
        assert placed.order_type == "LIMIT" and placed.side == "BUY"
        assert placed.limit_price == Decimal("100.05") and placed.quantity == Decimal(10)
        assert placed.status == "SUBMITTED" and not placed.replayed and not placed.done
        again = await gw.orders.place(
            "pyc-1", "AAPL", "BUY", Decimal("10"), limit_price=Decimal("100.05")
        )
        assert again.replayed and again.order_id == placed.order_id
        assert [o.client_order_id for o in await gw.orders.list()] == ["pyc-1"]
        modified = await gw.orders.modify("pyc-1", limit_price="100.10")
        assert modified.limit_price == Decimal("100.10")
        cancelled = await gw.orders.cancel(placed.order_id)
        assert cancelled.status in ("CANCELLED", "PENDING_CANCEL")
        with pytest.raises(TypeError, match="decimal"):
            await gw.orders.place("pyc-2", "AAPL", "BUY", 10.5)  # type: ignore[arg-type]


async def test_errors_are_one_type_with_the_rich_status(
    gateway: Gateway, simulator: TwsSimulator
) -> None:
    async with AsyncClient(gateway.address) as gw:
        with pytest.raises(GatewayError) as unknown:
            await gw.accounts.balance("U1")
        err = unknown.value
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.reason == "UNKNOWN_ACCOUNT" and err.domain == "ibgateway"
        assert "account_id" in err.violations
        assert str(err).startswith("INVALID_ARGUMENT UNKNOWN_ACCOUNT: ")

        with pytest.raises(GatewayError) as bad:
            await gw.orders.place("pyc-bad", "AAPL", "BUY", Decimal("-5"), limit_price="1")
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in bad.value.field_violations] == ["quantity"]

        simulator.faults.reject_order()
        with pytest.raises(GatewayError) as rejected:
            await gw.orders.place("pyc-rej", "AAPL", "BUY", Decimal(1))
        assert rejected.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert rejected.value.reason == "ORDER_REJECTED" and rejected.value.ib_code == 201


async def test_unary_calls_have_a_default_deadline(
    gateway: Gateway, simulator: TwsSimulator
) -> None:
    simulator.faults.set_delay(3.0)
    async with AsyncClient(gateway.address, timeout=0.5) as gw:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(GatewayError) as late:
            await gw.portfolio.positions()  # asks TWS each time
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - start < 2.0
    simulator.faults.set_delay(0)


def test_service_config_retries_idempotent_calls_only() -> None:
    import json

    config = json.loads(service_config(10))
    retried, once = config["methodConfig"]
    names = {(n["service"].split(".")[-1], n["method"]) for n in retried["name"]}
    assert ("OrderService", "PlaceOrder") in names and ("AccountService", "GetBalance") in names
    assert retried["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert {n["method"] for n in once["name"]} == {
        "Connect",
        "Disconnect",
        "ModifyOrder",
        "CancelAllOrders",
    }
    assert "retryPolicy" not in once and once["timeout"] == "10.000s"


async def test_the_blocking_client(gateway: Gateway) -> None:
    def blocking() -> tuple[list[str], Decimal | None, str, GatewayError]:
        with Client(gateway.address) as gw:
            gw.wait_ready(5)
            accounts = gw.accounts.list()
            [quote] = gw.market_data.get_quotes(["MSFT"])
            order = gw.orders.place("pyc-sync", "MSFT", "SELL", "3", limit_price="999")
            try:
                gw.orders.get("no-such-key")
            except GatewayError as err:
                missing = err
            return accounts, quote.ask, order.status, missing

    accounts, ask, status, missing = await asyncio.to_thread(blocking)
    assert accounts == ["DU1234567"] and isinstance(ask, Decimal)
    assert status == "SUBMITTED"
    assert missing.code == grpc.StatusCode.NOT_FOUND and missing.reason
