"""`ibgw serve --log-format json`: one JSON object per line (time, level, logger,
message), and for each call method, peer, code, duration, request id, client_order_id."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc.aio

from ibgateway.v1 import account_pb2, account_pb2_grpc, common_pb2, orders_pb2, orders_pb2_grpc

IBGW = str(Path(sys.executable).with_name("ibgw"))


async def test_json_logs_of_a_served_gateway() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBGW_", "IBKR_"))}
    proc = await asyncio.create_subprocess_exec(
        IBGW, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--sim-seed", "7",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        address, serving = "", False
        async with asyncio.timeout(20):
            while not serving:  # listening, then connected to its simulator
                raw = await proc.stderr.readline()
                assert raw, "ibgw serve ended early"
                lines.append(json.loads(raw))
                message = lines[-1]["message"]
                if message.startswith("ibgateway listening on "):
                    address = message.split()[3]
                serving = message == "health: ibgateway services SERVING"
            async with grpc.aio.insecure_channel(address) as channel:
                await channel.channel_ready()
                accounts = account_pb2_grpc.AccountServiceStub(channel)
                await accounts.ListAccounts(account_pb2.ListAccountsRequest(), timeout=10)
                orders = orders_pb2_grpc.OrderServiceStub(channel)
                await orders.PlaceOrder(
                    orders_pb2.PlaceOrderRequest(
                        client_order_id="json-log-1",
                        contract=common_pb2.Contract(symbol="AAPL"),
                        side=orders_pb2.ORDER_SIDE_BUY,
                        order_type=orders_pb2.ORDER_TYPE_LIMIT,
                        quantity=common_pb2.Decimal(value="1"),
                        limit_price=common_pb2.Decimal(value="100"),
                    ),
                    timeout=10,
                    metadata=(("x-request-id", "req-42"),),
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 20)
    lines += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == 0

    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("+00:00")
    access = {e["method"]: e for e in lines if e["logger"] == "ibgateway_server.access"}
    listed = access["/ibgateway.v1.AccountService/ListAccounts"]
    assert listed["code"] == "OK" and listed["level"] == "INFO"
    assert listed["peer"].startswith("ipv4:127.0.0.1:") and listed["duration_ms"] >= 0
    assert "request_id" not in listed and "client_order_id" not in listed
    placed = access["/ibgateway.v1.OrderService/PlaceOrder"]
    assert placed["request_id"] == "req-42" and placed["client_order_id"] == "json-log-1"
    assert any(line["message"] == "ibgateway stopped" for line in lines)
