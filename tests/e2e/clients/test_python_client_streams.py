"""The client's self-healing streams: StreamQuotes re-opens itself after the gateway is
restarted mid-stream; StreamOrderEvents resumes after its last sequence when the
connection is cut (nothing lost, nothing repeated)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

from ibgateway.client import AsyncClient, OrderEvent, Quote, Reconnect, StreamRestarted
from ibgateway.v1 import orders_pb2
from tests.e2e.conftest import GatewayFactory


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 whose connections can be cut at once (a network break)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def _next_of(items: AsyncIterator[object], kind: type, within: float = 10.0) -> list:
    """Items up to and including the next one of ``kind``."""
    seen: list[object] = []
    async with asyncio.timeout(within):
        async for item in items:
            seen.append(item)
            if isinstance(item, kind):
                return seen
    raise AssertionError(f"stream ended before a {kind.__name__}: {seen}")


async def test_quote_stream_reopens_after_a_gateway_restart(make_gateway: GatewayFactory) -> None:
    first = await make_gateway()
    port = first.port
    async with AsyncClient(first.address) as gw:
        quotes = gw.market_data.stream_quotes(
            ["AAPL"], reconnect=Reconnect(initial_delay=0.05, max_delay=0.2)
        )
        before = await _next_of(quotes, Quote)
        assert isinstance(before[-1], Quote) and before[-1].symbol == "AAPL"

        await first.stop(0.5)  # ends the stream (OK), then the port goes away
        second = await make_gateway(listen=f"127.0.0.1:{port}")
        assert second.port == port

        # quotes sent before the stop may still arrive; then the stream says it re-opened
        restart = (await _next_of(quotes, StreamRestarted, within=15))[-1]
        assert isinstance(restart, StreamRestarted) and restart.attempt >= 1
        after = await _next_of(quotes, Quote)
        quote = after[-1]
        assert isinstance(quote, Quote) and quote.symbol == "AAPL"
        assert isinstance(quote.bid, Decimal)
        assert second.hub is not None and second.hub.stats().streams == 1  # the new gateway
        await quotes.aclose()  # type: ignore[attr-defined]


async def test_order_events_resume_after_a_cut_without_loss_or_repeat(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    proxy = CuttableProxy(gateway.port)
    await proxy.start()
    try:
        async with (
            AsyncClient(f"127.0.0.1:{proxy.port}") as via_proxy,
            AsyncClient(gateway.address) as trader,
        ):
            events = via_proxy.orders.events(reconnect=Reconnect(initial_delay=0.05))
            waiting = asyncio.ensure_future(_next_of(events, OrderEvent))
            await asyncio.sleep(0.3)  # the stream is open
            await trader.orders.place("ev-1", "AAPL", "BUY", 1, limit_price="100")
            first = (await waiting)[-1]
            assert isinstance(first, OrderEvent) and first.order.client_order_id == "ev-1"

            proxy.cut()  # the client's connection breaks...
            for key in ("ev-2", "ev-3"):  # ...while orders go on
                await trader.orders.place(key, "MSFT", "BUY", 2, limit_price="100")

            got: list[OrderEvent] = [first]
            restarted: list[StreamRestarted] = []
            async with asyncio.timeout(15):
                async for item in events:
                    if isinstance(item, StreamRestarted):
                        restarted.append(item)
                    elif isinstance(item, OrderEvent):
                        got.append(item)
                        if {"ev-2", "ev-3"} <= {e.order.client_order_id for e in got}:
                            break
                    else:
                        assert not isinstance(item, orders_pb2.ReplayGap), item
            await events.aclose()  # type: ignore[attr-defined]
    finally:
        await proxy.stop()

    assert restarted, "the stream did not notice the cut"
    sequences = [e.sequence for e in got]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))  # no gap/dup
    assert len({e.epoch for e in got}) == 1
