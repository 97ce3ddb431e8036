"""Prometheus metrics on 127.0.0.1:IBGW_METRICS_PORT: calls by method and code, latency,
IB connection state."""

from __future__ import annotations

import asyncio
import urllib.request

from ibgateway.v1 import account_pb2, account_pb2_grpc
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_metrics_count_calls_and_show_the_session(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(metrics_port=0)
    assert gw.metrics_port
    async with gateway_channel(gw) as channel:
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        await accounts.ListAccounts(account_pb2.ListAccountsRequest())
        await accounts.ListAccounts(account_pb2.ListAccountsRequest())
        await expect_error(accounts.GetBalance(account_pb2.GetBalanceRequest(account_id="U1")))

    text = await asyncio.get_running_loop().run_in_executor(None, _scrape, gw.metrics_port)
    service = 'grpc_service="ibgateway.v1.AccountService"'
    assert (
        f'ibgw_grpc_server_handled_total{{grpc_code="OK",grpc_method="ListAccounts",{service}}} 2.0'
        in text
    )
    assert (
        "ibgw_grpc_server_handled_total"
        f'{{grpc_code="INVALID_ARGUMENT",grpc_method="GetBalance",{service}}} 1.0' in text
    )
    assert "ibgw_grpc_server_handling_seconds_bucket" in text
    assert "ibgw_ib_connected 1.0" in text
    assert 'ibgw_ib_session_state{state="connected"} 1.0' in text
