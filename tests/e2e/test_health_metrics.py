"""Prometheus metrics on 127.0.0.1:IBGW_METRICS_PORT: go-grpc-prometheus' names and labels
(so existing gRPC dashboards work), and the gateway's own ibgw_* metrics."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from prometheus_client.parser import text_string_to_metric_families

from ibgateway.client import AsyncClient, OrderEvent, Quote
from ibgateway.v1 import account_pb2, account_pb2_grpc, connection_pb2, connection_pb2_grpc
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ibgateway-dashboard.json"
).read_text()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _rpc(kind: str, service: str, method: str, **more: str) -> frozenset[tuple[str, str]]:
    labels = {"grpc_type": kind, "grpc_service": f"ibgateway.v1.{service}", "grpc_method": method}
    return frozenset({**labels, **more}.items())


async def test_metrics_count_calls_and_show_the_session(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(metrics_port=0)
    assert gw.metrics_port
    async with gateway_channel(gw) as channel:
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        await accounts.ListAccounts(account_pb2.ListAccountsRequest())
        await accounts.ListAccounts(account_pb2.ListAccountsRequest())
        await expect_error(accounts.GetBalance(account_pb2.GetBalanceRequest(account_id="U1")))
        # a server stream: the current status, then heartbeats every 0.2 s; read three
        watch = connection_pb2_grpc.ConnectionServiceStub(channel).WatchConnectionStatus(
            connection_pb2.WatchConnectionStatusRequest(
                heartbeat_interval=Duration(nanos=200_000_000)
            )
        )
        for _ in range(3):
            await watch.read()
        watch.cancel()
        await asyncio.sleep(0.2)  # the server notices the cancellation

    text = await asyncio.get_running_loop().run_in_executor(None, _scrape, gw.metrics_port)
    samples = _samples(text)
    list_accounts = _rpc("unary", "AccountService", "ListAccounts")
    assert samples[("grpc_server_started_total", list_accounts)] == 2
    assert samples[("grpc_server_msg_received_total", list_accounts)] == 2
    assert samples[("grpc_server_msg_sent_total", list_accounts)] == 2
    ok = _rpc("unary", "AccountService", "ListAccounts", grpc_code="OK")
    assert samples[("grpc_server_handled_total", ok)] == 2
    bad = _rpc("unary", "AccountService", "GetBalance", grpc_code="INVALID_ARGUMENT")
    assert samples[("grpc_server_handled_total", bad)] == 1
    assert samples[("grpc_server_handling_seconds_count", list_accounts)] == 2

    watch_labels = _rpc("server_stream", "ConnectionService", "WatchConnectionStatus")
    assert samples[("grpc_server_started_total", watch_labels)] == 1
    assert samples[("grpc_server_msg_received_total", watch_labels)] == 1
    assert samples[("grpc_server_msg_sent_total", watch_labels)] >= 3
    cancelled = _rpc(
        "server_stream", "ConnectionService", "WatchConnectionStatus", grpc_code="CANCELLED"
    )
    assert samples[("grpc_server_handled_total", cancelled)] == 1

    assert samples[("ibgw_ib_connected", frozenset())] == 1
    assert samples[("ibgw_ib_session_state", frozenset({("state", "connected")}))] == 1


async def test_ib_side_and_process_metrics(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(metrics_port=0, metrics_host="127.0.0.1", quote_line_budget=50)
    assert gw.metrics_port
    async with AsyncClient(gw.address) as client:
        quotes = client.market_data.stream_quotes(["AAPL", "MSFT"])
        events = client.orders.events()
        async with asyncio.timeout(10):
            async for item in quotes:
                if isinstance(item, Quote):
                    break
            waiting = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.3)  # the event stream is open
            await client.orders.place("metrics-1", "AAPL", "BUY", 1, limit_price="100")
            assert isinstance(await waiting, OrderEvent)
        text = await asyncio.get_running_loop().run_in_executor(None, _scrape, gw.metrics_port)
        await quotes.aclose()  # type: ignore[attr-defined]
        await events.aclose()  # type: ignore[attr-defined]

    samples = _samples(text)

    def value(name: str) -> float:
        return samples[(name, frozenset())]

    assert value("ibgw_quote_line_budget") == 50
    assert value("ibgw_quote_lines") == 2 and value("ibgw_quote_lines_active") == 2
    assert value("ibgw_quote_streams") == 1 and value("ibgw_quote_subscriptions_waiting") == 0
    assert value("ibgw_quote_updates_total") >= 1
    assert value("ibgw_order_events_total") >= 1 and value("ibgw_order_event_streams") == 1
    assert value("ibgw_ib_reconnect_attempts") == 0
    assert value("ibgw_history_requests_10min_limit") > 0
    assert value("process_resident_memory_bytes") > 0
    assert ("python_gc_objects_collected_total", frozenset({("generation", "0")})) in samples

    # every metric the Grafana dashboard queries is one the gateway exposes
    exposed = {name for name, _ in samples}
    exprs = [t["expr"] for p in json.loads(DASHBOARD)["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b((?:grpc_server|ibgw|process)_\w+)", e)}
    assert len(queried) > 15 and queried <= exposed, sorted(queried - exposed)
