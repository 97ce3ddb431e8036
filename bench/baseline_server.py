"""Benchmark baseline: a bare grpc.aio server streaming the same messages, no IB, no hub.

    python -m bench.baseline_server --instruments 100 --tick-interval 0.1

A producer moves every instrument at every step (like the simulator's market), builds one
``StreamQuotesResponse`` with all the step's quotes (the same fields the gateway sends),
serializes it once and queues the bytes to every open stream, which writes them. This is
the best a plain server does: batched, serialized once, no per-subscriber state beyond an
unbounded queue. Same command protocol as ``bench.gateway_server``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from bench.common import cpu_seconds, emit, instruments, rss_kb, serve_commands
from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.market_data.convert import price_text, size_text

SERVICE = "ibgateway.v1.MarketDataService"


def _contract(inst: Any) -> common_pb2.Contract:
    return common_pb2.Contract(
        con_id=inst.con_id,
        symbol=inst.symbol,
        sec_type=common_pb2.SECURITY_TYPE_STOCK,
        exchange=inst.exchange,
        primary_exchange=inst.primary_exchange,
        currency=inst.currency,
        local_symbol=inst.local_symbol,
        trading_class=inst.trading_class,
    )


class _Walk:
    """A random walk with the fields of a quote."""

    def __init__(self, inst: Any, rng: random.Random) -> None:
        self.contract = _contract(inst)
        self.rng = rng
        self.mid = inst.start_price
        self.close = self.open = self.high = self.low = inst.start_price
        self.volume = 100.0 * rng.randint(1_000, 50_000)
        self.last = inst.start_price
        self.last_size = 100.0

    def step(self) -> tuple[float, float, float, float]:
        rng = self.rng
        self.mid = max(0.05, self.mid * (1 + 0.0003 * rng.gauss(0, 1)))
        bid = round(self.mid - 0.005, 2)
        ask = round(bid + 0.01 * (1 + (rng.random() > 0.7)), 2)
        if rng.random() < 0.4:
            self.last = bid if rng.random() < 0.5 else ask
            self.last_size = 100.0 * rng.randint(1, 5)
            self.volume += self.last_size
            self.high, self.low = max(self.high, self.last), min(self.low, self.last)
        return bid, ask, 100.0 * rng.randint(1, 20), 100.0 * rng.randint(1, 20)


def _decimal(value: float, *, size: bool = False) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=size_text(value) if size else price_text(value))


class Producer:
    """Moves the market on a timer and hands each step's message to every stream."""

    def __init__(self, count: int, tick_interval: float, seed: int) -> None:
        rng = random.Random(seed)
        self.walks = [_Walk(i, random.Random(rng.getrandbits(64))) for i in instruments(count)]
        self.tick_interval = tick_interval
        self.queues: set[asyncio.Queue[bytes]] = set()
        self.produced = 0  # quotes made (and sent to every open stream)

    def message(self) -> bytes:
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        quotes = []
        for walk in self.walks:
            bid, ask, bid_size, ask_size = walk.step()
            quotes.append(
                market_data_pb2.Quote(
                    contract=walk.contract,
                    bid=_decimal(bid),
                    ask=_decimal(ask),
                    last=_decimal(walk.last),
                    bid_size=_decimal(bid_size, size=True),
                    ask_size=_decimal(ask_size, size=True),
                    last_size=_decimal(walk.last_size, size=True),
                    volume=_decimal(walk.volume, size=True),
                    high=_decimal(walk.high),
                    low=_decimal(walk.low),
                    close=_decimal(walk.close),
                    open=_decimal(walk.open),
                    tick_time=now,
                    receive_time=now,
                    market_data_type=common_pb2.MARKET_DATA_TYPE_LIVE,
                )
            )
        response = market_data_pb2.StreamQuotesResponse(
            quotes=market_data_pb2.QuoteBatch(quotes=quotes)
        )
        return response.SerializeToString()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.tick_interval
        next_time = loop.time() + interval
        while True:
            delay = next_time - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_time += interval
            if not self.queues:
                continue
            data = self.message()
            self.produced += len(self.walks)
            for queue in self.queues:
                queue.put_nowait(data)

    def statuses(self, request: market_data_pb2.StreamQuotesRequest) -> list[bytes]:
        """One ACTIVE status per requested contract, as the gateway opens a stream."""
        by_symbol = {w.contract.symbol: w.contract for w in self.walks}
        out = []
        for index, spec in enumerate(request.contracts):
            contract = by_symbol.get(spec.symbol, spec)
            status = market_data_pb2.SubscriptionStatus(
                index=index, contract=contract, state=market_data_pb2.SUBSCRIPTION_STATE_ACTIVE
            )
            out.append(
                market_data_pb2.StreamQuotesResponse(subscription_status=status).SerializeToString()
            )
        return out


def handlers(producer: Producer) -> grpc.GenericRpcHandler:
    async def stream_quotes(
        request: market_data_pb2.StreamQuotesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        producer.queues.add(queue)
        try:
            for status in producer.statuses(request):
                await context.write(status)
            while True:
                await context.write(await queue.get())
        finally:
            producer.queues.discard(queue)

    method = grpc.unary_stream_rpc_method_handler(
        stream_quotes,
        request_deserializer=market_data_pb2.StreamQuotesRequest.FromString,
        response_serializer=lambda data: data,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"StreamQuotes": method})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--tick-interval", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.get_running_loop()
    producer = Producer(args.instruments, args.tick_interval, args.seed)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handlers(producer),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    task = loop.create_task(producer.run())
    done = asyncio.Event()
    started = time.time()

    def handle(command: str) -> None:
        if command == "stats":
            emit(
                {
                    "lines": 0,
                    "source_quotes": producer.produced,
                    "streams": len(producer.queues),
                    "backlog": sum(q.qsize() for q in producer.queues),
                    "rss_kb": rss_kb(),
                    "cpu_s": cpu_seconds(),
                    "uptime_s": time.time() - started,
                }
            )
        elif command == "quit":
            done.set()

    serve_commands(loop, handle, on_eof=done.set)
    emit({"address": f"127.0.0.1:{port}", "pid": os.getpid()})
    await done.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await server.stop(0.5)
    emit({"bye": True})


if __name__ == "__main__":
    asyncio.run(main())
