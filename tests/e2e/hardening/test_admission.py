"""Admission control: the stream limits (total and per client) answer a clear, logged and
counted RESOURCE_EXHAUSTED and free up when streams end; the per-client unary rate limit
answers RESOURCE_EXHAUSTED with RetryInfo; an oversized request is refused likewise."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import (
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
)
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel, rich_error
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(60)


def watch(stub: Any) -> Any:
    return stub.WatchConnectionStatus(connection_pb2.WatchConnectionStatusRequest())


async def opened(call: Any) -> Any:
    assert (await asyncio.wait_for(call.read(), 5)).update.status.connected
    return call


async def test_stream_limits_refuse_then_free_up(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway(max_streams=5, max_streams_per_client=3)
    async with (
        gateway_channel(gw) as one,
        gateway_channel(gw) as two,
    ):
        first: Any = connection_pb2_grpc.ConnectionServiceStub(one)
        second: Any = connection_pb2_grpc.ConnectionServiceStub(two)
        auth = (("authorization", "Bearer other-client"),)  # another identity, same host
        mine = [await opened(watch(first)) for _ in range(3)]
        over = watch(first)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(over.read(), 5)
        err = refused.value
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        info = rich_error(err).info
        assert info is not None and info.reason == "STREAM_LIMIT_REACHED"
        assert info.metadata["scope"] == "client" and info.metadata["limit"] == "3"

        theirs = [
            await opened(second.WatchConnectionStatus(
                connection_pb2.WatchConnectionStatusRequest(), metadata=auth
            ))
            for _ in range(2)
        ]  # fmt: skip
        total = second.WatchConnectionStatus(
            connection_pb2.WatchConnectionStatusRequest(), metadata=auth
        )
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await asyncio.wait_for(total.read(), 5)
        total_info = rich_error(full.value).info
        assert total_info is not None and total_info.metadata["scope"] == "total"

        mine[0].cancel()  # a stream ends: its place is free again
        registry = gw.metrics.registry
        labels = {
            "grpc_service": "ibgateway.v1.ConnectionService",
            "grpc_method": "WatchConnectionStatus",
            "grpc_type": "server_stream",
            "grpc_code": "RESOURCE_EXHAUSTED",
        }
        assert await wait_until(
            lambda: registry.get_sample_value("grpc_server_handled_total", labels) == 2
        )

        async def reopened() -> Any:
            for _ in range(50):
                call = watch(first)
                try:
                    return await opened(call)
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
            raise AssertionError("the freed stream place was not given back")

        again = await reopened()
        for call in [*mine[1:], again, *theirs]:
            call.cancel()
    logged = [r.getMessage() for r in caplog.records if r.name == "ibgateway_server.access"]
    assert sum("RESOURCE_EXHAUSTED STREAM_LIMIT_REACHED" in m for m in logged) >= 2


async def test_unary_rate_limit_with_retry_info(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limit=5)  # bursts of 10
    async with gateway_channel(gw) as channel:
        stub = connection_pb2_grpc.ConnectionServiceStub(channel)
        request = connection_pb2.GetConnectionStatusRequest()
        results = await asyncio.gather(
            *(stub.GetConnectionStatus(request) for _ in range(15)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        # 10 in the burst, then 5 a second: a slow machine may refill one or two
        assert 1 <= len(refused) <= 5 and len(results) - len(refused) >= 10, results
        err = rich_error(refused[0])
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.info is not None and err.info.reason == "RATE_LIMITED"
        assert err.retry is not None
        delay = err.retry.retry_delay.seconds + err.retry.retry_delay.nanos / 1e9
        assert 0 < delay <= 0.2 + 1e-9
        await asyncio.sleep(delay + 0.05)
        await stub.GetConnectionStatus(request)  # after the delay it is admitted again


async def test_an_oversized_request_is_refused_and_logged(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway(max_request_bytes=2048)
    async with gateway_channel(gw) as channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        contracts = [common_pb2.Contract(symbol=f"S{n}") for n in range(500)]
        with caplog.at_level(logging.INFO):
            err = await expect_error(
                stub.GetQuotes(market_data_pb2.GetQuotesRequest(contracts=contracts))
            )
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.info is not None and err.info.reason == "REQUEST_TOO_LARGE"
        assert err.info.metadata["limit_bytes"] == "2048"
        assert await wait_until(
            lambda: any("REQUEST_TOO_LARGE" in r.getMessage() for r in caplog.records)
        )


async def test_thousands_of_streams_at_once_each_get_a_clear_answer(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(max_streams_per_client=20)
    async with gateway_channel(gw) as channel:
        stub: Any = connection_pb2_grpc.ConnectionServiceStub(channel)
        calls = [watch(stub) for _ in range(STORM)]

        async def first(call: Any) -> str:
            try:
                await asyncio.wait_for(call.read(), 30)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                return str(exc.code().name)

        outcomes = await asyncio.gather(*(first(c) for c in calls))
        for call in calls:
            call.cancel()
    # none is reset by the transport (CANCELLED): each is admitted or clearly refused
    assert outcomes.count("OK") == 20
    assert outcomes.count("RESOURCE_EXHAUSTED") == STORM - 20, sorted(set(outcomes))


STORM = 3000
