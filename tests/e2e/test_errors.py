"""Errors end to end: every failure is a google.rpc.Status with ErrorInfo; never UNKNOWN,
never a traceback; deadlines are honoured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import portfolio_pb2, portfolio_pb2_grpc
from ibgateway_server.api.interceptors import (
    AccessLogInterceptor,
    ErrorMappingInterceptor,
    GatewayMetrics,
    MetricsInterceptor,
)
from ibgateway_server.app import Gateway
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import RequestError
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel
from tws_simulator import TwsSimulator


async def _raise(exc: BaseException) -> Any:
    raise exc


def _unary(exc: BaseException) -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return await _raise(exc)

    return grpc.unary_unary_rpc_method_handler(behavior)


async def _abort_directly(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.ALREADY_EXISTS, "servicer's own status")
    return b""


async def _fail_mid_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"first"
    raise KeyError("secret internal detail")


@pytest.fixture
async def error_channel() -> AsyncIterator[grpc.aio.Channel]:
    """A real grpc.aio server with the gateway's interceptor chain and failing handlers."""
    handlers = {
        "Internal": _unary(RuntimeError("database password is hunter2")),
        "NoSecurity": _unary(RequestError(7, 200, "No security definition has been found")),
        "Pacing": _unary(RequestError(8, 100, "Max rate of messages per second exceeded")),
        "Timeout": _unary(TimeoutError()),
        "Lost": _unary(ConnectionError("Socket disconnect")),
        "Violations": _unary(
            GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
                "bad",
                field_violations=[("quantity", "must be greater than 0")],
            )
        ),
        "Abort": grpc.unary_unary_rpc_method_handler(_abort_directly),
        "Stream": grpc.unary_stream_rpc_method_handler(_fail_mid_stream),
    }
    server = grpc.aio.server(
        interceptors=[
            MetricsInterceptor(GatewayMetrics()),
            AccessLogInterceptor(),
            ErrorMappingInterceptor(),
        ]
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Svc", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


def _call(channel: grpc.aio.Channel, name: str) -> Any:
    method: Any = channel.unary_unary(f"/test.Svc/{name}")
    return method(b"")


async def test_unexpected_exception_is_internal_without_details(
    error_channel: grpc.aio.Channel,
) -> None:
    err = await expect_error(_call(error_channel, "Internal"))
    assert err.code == grpc.StatusCode.INTERNAL
    assert err.info is not None and err.info.reason == "INTERNAL"
    assert "hunter2" not in err.message and "Traceback" not in err.message


@pytest.mark.parametrize(
    ("name", "code", "reason", "ib_code"),
    [
        ("NoSecurity", grpc.StatusCode.NOT_FOUND, "CONTRACT_NOT_FOUND", "200"),
        ("Pacing", grpc.StatusCode.RESOURCE_EXHAUSTED, "PACING_VIOLATION", "100"),
        ("Timeout", grpc.StatusCode.DEADLINE_EXCEEDED, "IB_TIMEOUT", None),
        ("Lost", grpc.StatusCode.UNAVAILABLE, "NOT_CONNECTED", None),
    ],
)
async def test_known_failures_map_to_canonical_codes(
    error_channel: grpc.aio.Channel,
    name: str,
    code: grpc.StatusCode,
    reason: str,
    ib_code: str | None,
) -> None:
    err = await expect_error(_call(error_channel, name))
    assert err.code == code
    assert err.info is not None
    assert (err.info.reason, err.info.domain) == (reason, "ibgateway")
    assert err.info.metadata.get("ib_code") == ib_code
    if name == "Pacing":
        assert err.retry is not None and err.retry.retry_delay.seconds >= 1


async def test_field_violations_are_bad_request_details(error_channel: grpc.aio.Channel) -> None:
    err = await expect_error(_call(error_channel, "Violations"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.violations == {"quantity": "must be greater than 0"}


async def test_a_servicer_abort_passes_through(error_channel: grpc.aio.Channel) -> None:
    err = await expect_error(_call(error_channel, "Abort"))
    assert err.code == grpc.StatusCode.ALREADY_EXISTS
    assert err.message == "servicer's own status"


async def test_a_stream_failing_midway_ends_with_a_status(error_channel: grpc.aio.Channel) -> None:
    method: Any = error_channel.unary_stream("/test.Svc/Stream")
    call = method(b"")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for item in call:
            received.append(item)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")


async def test_ib_timeout_is_deadline_exceeded(
    simulator: TwsSimulator, make_gateway: GatewayFactory
) -> None:
    gw: Gateway = await make_gateway(ibkr_timeout=0.3)
    async with gateway_channel(gw) as channel:
        stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        simulator.faults.set_delay(1.0)
        err = await expect_error(stub.ListPositions(portfolio_pb2.ListPositionsRequest()))
        assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert err.info is not None and err.info.reason == "IB_TIMEOUT"
        assert err.info.metadata["operation"] == "positions"
        simulator.faults.set_delay(0)
        await asyncio.sleep(1.1)  # let the delayed answer arrive and settle
        await stub.ListPositions(portfolio_pb2.ListPositionsRequest())  # recovers


async def test_client_deadline_is_honoured(
    simulator: TwsSimulator, channel: grpc.aio.Channel
) -> None:
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    simulator.faults.set_delay(2.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    err = await expect_error(stub.ListPositions(portfolio_pb2.ListPositionsRequest(), timeout=1.0))
    assert loop.time() - start < 1.5
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # the gateway answers just before the deadline, with its own rich status
    assert err.info is not None and err.info.reason == "IB_TIMEOUT"
