"""Bearer tokens with read/trade/admin scopes: refusals are rich statuses; probes stay open."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ibgateway.v1 import account_pb2, account_pb2_grpc, connection_pb2, connection_pb2_grpc
from ibgateway_server.config import ConfigError, load
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel

READER = "reader-token-0123456789"
TRADER = "trader-token-0123456789"
ADMIN = "admin-token-0123456789ab"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def secured(make_gateway: GatewayFactory, tmp_path: Any) -> Any:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# trader\n{TRADER}:trade\n# operator\n{ADMIN}:admin\n")
    return await make_gateway(auth_tokens=f"{READER}:read", auth_tokens_file=tokens_file)


async def test_tokens_and_scopes(secured: Any) -> None:
    async with gateway_channel(secured) as channel:
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        connection = connection_pb2_grpc.ConnectionServiceStub(channel)
        request = account_pb2.ListAccountsRequest()

        err = await expect_error(accounts.ListAccounts(request))
        assert err.code == grpc.StatusCode.UNAUTHENTICATED
        assert err.info is not None and err.info.reason == "MISSING_TOKEN"

        err = await expect_error(accounts.ListAccounts(request, metadata=bearer("x" * 20)))
        assert err.code == grpc.StatusCode.UNAUTHENTICATED
        assert err.info is not None and err.info.reason == "INVALID_TOKEN"

        listed = await accounts.ListAccounts(request, metadata=bearer(READER))
        assert listed.accounts[0].account_id == "DU1234567"

        # session control needs the admin scope: neither read nor trade will do
        for token in (READER, TRADER):
            for call in (
                connection.Disconnect(connection_pb2.DisconnectRequest(), metadata=bearer(token)),
                connection.Connect(connection_pb2.ConnectRequest(), metadata=bearer(token)),
            ):
                err = await expect_error(call)
                assert err.code == grpc.StatusCode.PERMISSION_DENIED
                assert err.info is not None and err.info.metadata["required_scope"] == "admin"
        await connection.Connect(connection_pb2.ConnectRequest(), metadata=bearer(ADMIN))
        await accounts.ListAccounts(request, metadata=bearer(TRADER))  # trade implies read
        await accounts.ListAccounts(request, metadata=bearer(ADMIN))  # so does admin

        # probes and schema discovery need no token
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1


def test_malformed_tokens_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load(auth_tokens="abcdefghijklmnopqrstuvwxyz:root")
    assert "abcdefghijklmnop" not in str(caught.value)
    with pytest.raises(ConfigError):
        load(auth_tokens="short:read")


async def test_live_trading_on_an_open_plaintext_port_does_not_start(
    simulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from ibgateway_server.app import Gateway
    from tests.e2e.conftest import gateway_settings

    # refused before anything is bound: nothing listens on 0.0.0.0 here
    settings = gateway_settings(simulator, listen="0.0.0.0:0", allow_live_trading=True)
    gateway = Gateway(settings)
    with pytest.raises(ConfigError) as refused:
        await gateway.start()
    assert "IBGW_ALLOW_UNSAFE_EXPOSURE" in str(refused.value)
    assert gateway.server is None and gateway.session is None
    assert any(r.levelname == "CRITICAL" for r in caplog.records)
