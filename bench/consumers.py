"""Benchmark process: N quote consumers (generated stubs, full message parsing).

    python -m bench.consumers --address 127.0.0.1:50051 --streams 100 --symbols AAPL,MSFT

Prints ``{"ready": ...}`` once every stream has received quotes, then answers commands on
stdin with one JSON line each: ``mark`` (quotes, messages and conflated updates received
so far, CPU used), ``latency_reset`` / ``latency`` (receive_time → consumer, per quote),
``stop``. With ``--stalled`` it opens one stream that reads its first quotes and then
stops reading (a stalled consumer) until told to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import grpc
import grpc.aio

from bench.common import cpu_seconds, emit, latency_summary, serve_commands
from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc


class Counts:
    def __init__(self) -> None:
        self.quotes = 0
        self.messages = 0
        self.conflated = 0
        self.started = 0  # streams that have received quotes
        self.errors: list[str] = []
        self.latency = False
        self.samples: list[float] = []


async def consume(stub: Any, request: Any, counts: Counts) -> None:
    call = stub.StreamQuotes(request)
    first = True
    try:
        async for message in call:
            if message.WhichOneof("event") != "quotes":
                continue
            batch = message.quotes
            quotes = batch.quotes
            counts.quotes += len(quotes)
            counts.messages += 1
            counts.conflated += batch.conflated_updates
            if counts.latency:
                now = time.time()
                samples = counts.samples
                for quote in quotes:
                    received = quote.receive_time
                    samples.append((now - received.seconds - received.nanos * 1e-9) * 1000)
            if first:
                first = False
                counts.started += 1
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            counts.errors.append(f"{exc.code().name}: {exc.details()}")
    except asyncio.CancelledError:
        call.cancel()
        raise


async def stalled(address: str, request: Any, stop: asyncio.Event) -> None:
    # A small fixed HTTP/2 window, so the server's writes block soon after we stop reading.
    channel = grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.http2.bdp_probe", 0),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    call: Any = market_data_pb2_grpc.MarketDataServiceStub(channel).StreamQuotes(request)
    while True:
        message: Any = await call.read()
        if message is grpc.aio.EOF:
            break
        if message.WhichOneof("event") == "quotes":
            break
    emit({"ready": True, "streams": 1, "stalled": True})
    await stop.wait()
    call.cancel()
    await channel.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--symbols", required=True, help="comma-separated")
    parser.add_argument("--streams-per-channel", type=int, default=100)
    parser.add_argument("--stalled", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    request = market_data_pb2.StreamQuotesRequest(
        contracts=[common_pb2.Contract(symbol=s) for s in args.symbols.split(",")]
    )
    stop = asyncio.Event()
    counts = Counts()
    results: dict[str, Any] = {}

    def handle(command: str) -> None:
        if command == "mark":
            emit(
                {
                    "t": time.monotonic(),
                    "quotes": counts.quotes,
                    "messages": counts.messages,
                    "conflated": counts.conflated,
                    "cpu_s": cpu_seconds(),
                    "errors": counts.errors[:5],
                    "started": counts.started,
                }
            )
        elif command == "latency_reset":
            counts.samples = []
            counts.latency = True
            emit({"ok": True})
        elif command == "latency":
            counts.latency = False
            emit(latency_summary(counts.samples))
        elif command == "stop":
            stop.set()

    serve_commands(loop, handle, on_eof=stop.set)
    if args.stalled:
        await stalled(args.address, request, stop)
        return

    channels = [
        grpc.aio.insecure_channel(args.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, -(-args.streams // args.streams_per_channel)))
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 10)
    stubs = [market_data_pb2_grpc.MarketDataServiceStub(c) for c in channels]
    tasks = [
        loop.create_task(consume(stubs[n % len(stubs)], request, counts))
        for n in range(args.streams)
    ]
    start = loop.time()
    while counts.started < args.streams and not stop.is_set():
        if loop.time() - start > args.ready_timeout:
            results["error"] = f"only {counts.started}/{args.streams} streams started"
            break
        if counts.errors:
            results["error"] = counts.errors[0]
            break
        await asyncio.sleep(0.05)
    emit(
        {
            "ready": "error" not in results,
            "streams": args.streams,
            "open_s": loop.time() - start,
            **results,
        }
    )
    await stop.wait()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main())
