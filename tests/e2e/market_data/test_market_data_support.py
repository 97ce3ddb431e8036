"""Shared fixtures and helpers of the market-data e2e tests (no tests of its own).

``quotes_gateway`` is a real gateway (conftest's ``make_gateway``) over the ``simulator``
fixture; it serves MarketDataService through its QuoteHub (``hub_of(gateway)``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from ibgateway_server.app import Gateway
from ibgateway_server.market_data.hub import QuoteHub
from tests.e2e.conftest import GatewayFactory, gateway_channel, wait_until

SYMBOLS = ("AAPL", "MSFT", "TSLA", "GOOGL", "AMZN", "NVDA", "SPY", "QQQ")


QuotesGateway = Gateway  # the gateway serves MarketDataService through its QuoteHub


def hub_of(gateway: Gateway) -> QuoteHub:
    assert gateway.hub is not None, "the gateway has no QuoteHub"
    return gateway.hub


@pytest.fixture
async def make_quotes_gateway(make_gateway: GatewayFactory) -> GatewayFactory:
    """Gateways over ``simulator`` (Settings overrides as keyword arguments)."""
    return make_gateway


@pytest.fixture
async def quotes_gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


@pytest.fixture
async def md_stub(
    quotes_gateway: QuotesGateway,
) -> AsyncIterator[market_data_pb2_grpc.MarketDataServiceStub]:
    async with gateway_channel(quotes_gateway) as channel:
        yield market_data_pb2_grpc.MarketDataServiceStub(channel)


def contracts(*symbols: str) -> list[common_pb2.Contract]:
    return [common_pb2.Contract(symbol=s) for s in symbols]


def stream_request(*symbols: str, heartbeat: float = 0.0, **kw: Any) -> Any:
    request = market_data_pb2.StreamQuotesRequest(contracts=contracts(*symbols), **kw)
    if heartbeat:
        request.heartbeat_interval.FromNanoseconds(int(heartbeat * 1e9))
    return request


class StreamReader:
    """Reads one StreamQuotes call in the background and keeps what it saw."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.statuses: list[market_data_pb2.SubscriptionStatus] = []
        self.connection: list[common_pb2.ConnectionStateChange] = []
        self.heartbeats: list[float] = []
        self.batches: list[market_data_pb2.QuoteBatch] = []
        self.latest: dict[int, market_data_pb2.Quote] = {}  # con_id → newest quote
        self.events: list[str] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.call:
                kind = message.WhichOneof("event")
                self.events.append(kind)
                if kind == "quotes":
                    self.batches.append(message.quotes)
                    for quote in message.quotes.quotes:
                        self.latest[quote.contract.con_id] = quote
                elif kind == "subscription_status":
                    self.statuses.append(message.subscription_status)
                elif kind == "connection_state":
                    self.connection.append(message.connection_state)
                elif kind == "heartbeat":
                    self.heartbeats.append(loop.time())
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    @property
    def quote_count(self) -> int:
        return sum(len(b.quotes) for b in self.batches)

    def states(self, index: int) -> list[int]:
        return [s.state for s in self.statuses if s.index == index]

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    assert await wait_until(predicate, within), "condition not reached in time"
