"""Benchmark baseline: a bare grpc.aio server, the ceiling the gateway is compared with.

    python -m bench.baseline_server --instruments 100 --cpu 0

StreamQuotes: after one ACTIVE status per contract (as the gateway opens a stream), every
stream writes the same pre-serialized ``StreamQuotesResponse`` of ``--instruments`` quotes
(the fields the gateway sends), as fast as gRPC takes them: no IB, no hub, no encoding,
nothing per send but the write. GetConnectionStatus and GetQuotes answer a fixed response
(built once; gRPC serializes it per call, as it does the gateway's): the bare cost of a
unary call. Commands on stdin, one JSON line each: ``stats`` (quotes and messages written,
CPU, RSS), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from typing import Any

import grpc
import grpc.aio

from bench.common import cpu_seconds, emit, instruments, rss_kb, serve_commands
from ibgateway.v1 import common_pb2, connection_pb2, market_data_pb2
from ibgateway_server.market_data.convert import price_text, size_text

MARKET_DATA = "ibgateway.v1.MarketDataService"
CONNECTION = "ibgateway.v1.ConnectionService"
Context = grpc.aio.ServicerContext[Any, Any]


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


def _decimal(value: float, *, size: bool = False) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=size_text(value) if size else price_text(value))


def quote(inst: Any) -> market_data_pb2.Quote:
    """A quote with every field the gateway fills."""
    now = time.time()
    price = inst.start_price
    stamp = {"seconds": int(now), "nanos": int(now % 1 * 1e9)}
    return market_data_pb2.Quote(
        contract=_contract(inst),
        bid=_decimal(round(price - 0.01, 2)),
        ask=_decimal(round(price + 0.01, 2)),
        last=_decimal(round(price, 2)),
        bid_size=_decimal(300.0, size=True),
        ask_size=_decimal(500.0, size=True),
        last_size=_decimal(100.0, size=True),
        volume=_decimal(1_234_500.0, size=True),
        high=_decimal(round(price * 1.01, 2)),
        low=_decimal(round(price * 0.99, 2)),
        close=_decimal(round(price * 0.995, 2)),
        open=_decimal(round(price * 1.002, 2)),
        tick_time=stamp,  # type: ignore[arg-type]
        receive_time=stamp,  # type: ignore[arg-type]
        market_data_type=common_pb2.MARKET_DATA_TYPE_LIVE,
    )


class Baseline:
    def __init__(self, count: int) -> None:
        self.instruments = instruments(count)
        quotes = [quote(inst) for inst in self.instruments]
        self.per_message = len(quotes)
        self.message = market_data_pb2.StreamQuotesResponse(
            quotes=market_data_pb2.QuoteBatch(quotes=quotes)
        ).SerializeToString()
        self.by_symbol = {q.contract.symbol: q.contract for q in quotes}
        self.quotes_response = market_data_pb2.GetQuotesResponse(quotes=quotes[:1])
        self.status_response = connection_pb2.GetConnectionStatusResponse(
            status=connection_pb2.ConnectionStatus(
                connected=True,
                state=common_pb2.CONNECTION_STATE_CONNECTED,
                host="127.0.0.1",
                port=7497,
                client_id=1,
                server_version=176,
                accounts=["DU1234567"],
            )
        )
        self.messages = 0
        self.streams = 0

    async def stream_quotes(
        self, request: market_data_pb2.StreamQuotesRequest, context: Context
    ) -> None:
        for index, spec in enumerate(request.contracts):
            status = market_data_pb2.SubscriptionStatus(
                index=index,
                contract=self.by_symbol.get(spec.symbol, spec),
                state=market_data_pb2.SUBSCRIPTION_STATE_ACTIVE,
            )
            await context.write(
                market_data_pb2.StreamQuotesResponse(subscription_status=status).SerializeToString()
            )
        self.streams += 1
        message = self.message
        try:
            while True:
                await context.write(message)
                self.messages += 1
        finally:
            self.streams -= 1

    async def get_quotes(
        self, request: market_data_pb2.GetQuotesRequest, context: Context
    ) -> market_data_pb2.GetQuotesResponse:
        return self.quotes_response

    async def get_status(
        self, request: connection_pb2.GetConnectionStatusRequest, context: Context
    ) -> connection_pb2.GetConnectionStatusResponse:
        return self.status_response

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        md = market_data_pb2
        market_data: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "StreamQuotes": grpc.unary_stream_rpc_method_handler(
                self.stream_quotes,
                request_deserializer=md.StreamQuotesRequest.FromString,
                response_serializer=lambda data: data,
            ),
            "GetQuotes": grpc.unary_unary_rpc_method_handler(
                self.get_quotes,
                request_deserializer=md.GetQuotesRequest.FromString,
                response_serializer=md.GetQuotesResponse.SerializeToString,
            ),
        }
        connection: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "GetConnectionStatus": grpc.unary_unary_rpc_method_handler(
                self.get_status,
                request_deserializer=connection_pb2.GetConnectionStatusRequest.FromString,
                response_serializer=connection_pb2.GetConnectionStatusResponse.SerializeToString,
            )
        }
        return [
            grpc.method_handlers_generic_handler(MARKET_DATA, market_data),
            grpc.method_handlers_generic_handler(CONNECTION, connection),
        ]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.get_running_loop()
    baseline = Baseline(args.instruments)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(baseline.handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    done = asyncio.Event()

    def handle(command: str) -> None:
        if command == "stats":
            emit(
                {
                    "quotes_sent": baseline.messages * baseline.per_message,
                    "quote_messages": baseline.messages,
                    "streams": baseline.streams,
                    "rss_kb": rss_kb(),
                    "cpu_s": cpu_seconds(),
                }
            )
        elif command == "quit":
            done.set()

    serve_commands(loop, handle, on_eof=done.set)
    emit({"address": f"127.0.0.1:{port}", "pid": os.getpid()})
    await done.wait()
    await server.stop(0.5)
    emit({"bye": True})


if __name__ == "__main__":
    asyncio.run(main())
