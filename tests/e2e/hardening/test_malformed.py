"""Request bytes that do not decode: INVALID_ARGUMENT MALFORMED_REQUEST on every RPC,
logged and counted like any other call, no traceback."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway_server.app import Gateway
from tests.e2e.conftest import rich_error
from tests.e2e.hardening.rpcs import all_rpcs
from tests.polling import wait_until

# A field tag with wire type 7 (invalid), then a truncated length-delimited field.
GARBAGE = [b"\x0f\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 11]


async def call_raw(channel: grpc.aio.Channel, path: str, streaming: bool, raw: bytes) -> None:
    if streaming:
        stream: Any = channel.unary_stream(path)
        call = stream(raw, timeout=5)
        async for _ in call:
            pass
    else:
        unary: Any = channel.unary_unary(path)
        await unary(raw, timeout=5)


@pytest.mark.parametrize("raw", GARBAGE, ids=["bad-wire-type", "truncated", "ff"])
async def test_garbage_bytes_on_every_rpc(
    gateway: Gateway, channel: grpc.aio.Channel, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rpcs = all_rpcs()
    assert len(rpcs) >= 23
    with caplog.at_level(logging.INFO):
        for rpc in rpcs:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call_raw(channel, rpc.path, rpc.server_streaming, raw)
            err = rich_error(failure.value)
            assert err.code is grpc.StatusCode.INVALID_ARGUMENT, (rpc.path, err)
            assert err.info is not None and err.info.reason == "MALFORMED_REQUEST", rpc.path
            assert err.info.domain == "ibgateway"

        def all_logged() -> bool:
            # the access log line is written just after the status is sent
            logged = [r.getMessage() for r in caplog.records if r.name == "ibgateway_server.access"]
            return all(
                any(m.startswith(rpc.path + " ") and "MALFORMED_REQUEST" in m for m in logged)
                for rpc in rpcs
            )

        assert await wait_until(all_logged, 5), "a call is missing from the access log"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    labels = {
        "grpc_service": "ibgateway.v1.OrderService",
        "grpc_method": "PlaceOrder",
        "grpc_type": "unary",
        "grpc_code": "INVALID_ARGUMENT",
    }
    registry = gateway.metrics.registry
    assert await wait_until(
        lambda: registry.get_sample_value("grpc_server_handled_total", labels) == 1, 5
    )
