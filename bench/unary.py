"""Benchmark process: unary calls as fast as they return, with a fixed number in flight.

    python -m bench.unary --address 127.0.0.1:50051 --method status --in-flight 1 --seconds 3

Methods: ``status`` (ConnectionService.GetConnectionStatus) and ``quotes``
(MarketDataService.GetQuotes of one stock). Prints one JSON line: calls/s, p50/p99 in ms
and the errors seen (generated stubs on grpc.aio: the same client for every server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import grpc.aio

from bench.common import emit, percentile
from ibgateway.v1 import (
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--method", choices=("status", "quotes"), default="status")
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    channel = grpc.aio.insecure_channel(args.address)
    await asyncio.wait_for(channel.channel_ready(), 10)
    call: Any
    if args.method == "status":
        status_stub = connection_pb2_grpc.ConnectionServiceStub(channel)
        status_request = connection_pb2.GetConnectionStatusRequest()

        def call() -> Any:
            return status_stub.GetConnectionStatus(status_request)
    else:
        quotes_stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        quotes_request = market_data_pb2.GetQuotesRequest(
            contracts=[common_pb2.Contract(symbol=args.symbol)]
        )

        def call() -> Any:
            return quotes_stub.GetQuotes(quotes_request)

    loop = asyncio.get_running_loop()
    measuring = False
    latencies: list[float] = []
    errors: list[str] = []
    end = loop.time() + args.warmup + args.seconds

    async def worker() -> None:
        while loop.time() < end:
            started = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                if len(errors) > 100:
                    return
                continue
            if measuring:
                latencies.append((time.perf_counter() - started) * 1000)

    workers = [loop.create_task(worker()) for _ in range(args.in_flight)]
    await asyncio.sleep(args.warmup)
    measuring = True
    started = loop.time()
    await asyncio.gather(*workers)
    elapsed = loop.time() - started
    await channel.close()
    values = sorted(latencies)
    emit(
        {
            "method": args.method,
            "in_flight": args.in_flight,
            "calls_per_s": len(values) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "errors": errors[:3],
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
