"""An unexpected exception in a servicer: INTERNAL (never UNKNOWN) with a generic message
and a request id, the same id on the one server log line that has the details."""

from __future__ import annotations

import logging

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import connection_pb2, connection_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error


async def test_unexpected_error_is_internal_with_a_request_id(
    gateway: Gateway,
    channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert gateway.session is not None

    def broken() -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(gateway.session, "status", broken)
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    with caplog.at_level(logging.ERROR, logger="ibgateway_server.api.interceptors"):
        err = await expect_error(
            stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest(), timeout=5)
        )
    assert err.code is grpc.StatusCode.INTERNAL
    assert err.info is not None and err.info.reason == "INTERNAL"
    request_id = err.info.metadata["request_id"]
    assert len(request_id) == 16 and request_id in err.message
    assert "secret" not in err.message
    lines = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None
