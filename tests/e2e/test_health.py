"""grpc.health.v1: "" is the process (liveness); each ibgateway.v1 service is SERVING only
while the IB session is connected (readiness)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ibgateway.v1 import common_pb2, connection_pb2, connection_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import expect_error
from tws_simulator import TwsSimulator

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IB_SERVICES = [
    "ibgateway.v1.ConnectionService",
    "ibgateway.v1.AccountService",
    "ibgateway.v1.PortfolioService",
    "ibgateway.v1.MarketDataService",
    "ibgateway.v1.OrderService",
]


async def check(channel: grpc.aio.Channel, service: str) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return response.status


async def next_status(stream: Any, within: float = 5.0) -> Any:
    response = await asyncio.wait_for(stream.read(), within)
    assert response is not grpc.aio.EOF
    return response.status


async def test_every_service_serving_while_connected(
    channel: grpc.aio.Channel, gateway: Gateway
) -> None:
    assert await check(channel, "") == SERVING
    assert set(IB_SERVICES) <= set(gateway.ib_service_names)
    for name in gateway.ib_service_names:
        assert await check(channel, name) == SERVING, name
    stub = health_pb2_grpc.HealthStub(channel)
    err = await expect_error(stub.Check(health_pb2.HealthCheckRequest(service="no.Such")))
    assert err.code == grpc.StatusCode.NOT_FOUND


async def test_readiness_follows_a_dropped_connection(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="ibgateway.v1.AccountService"))
    assert await next_status(watch) == SERVING

    # TWS restarts: every socket drops and it refuses connections for a moment
    simulator.faults.refuse_connections(0.5)
    assert simulator.faults.drop_all_connections() == 1
    assert await next_status(watch) == NOT_SERVING
    assert await check(channel, "") == SERVING  # the process itself stays alive
    status = await connection_pb2_grpc.ConnectionServiceStub(channel).GetConnectionStatus(
        connection_pb2.GetConnectionStatusRequest()
    )
    assert status.status.state == common_pb2.CONNECTION_STATE_RECONNECTING

    # the session reconnects by itself once TWS accepts again
    assert await next_status(watch) == SERVING
    assert await check(channel, "ibgateway.v1.PortfolioService") == SERVING
    watch.cancel()


async def test_readiness_follows_tws_losing_ib(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="ibgateway.v1.ConnectionService"))
    assert await next_status(watch) == SERVING
    connection = connection_pb2_grpc.ConnectionServiceStub(channel)

    simulator.faults.go_offline()  # 1100
    assert await next_status(watch) == NOT_SERVING
    status = (
        await connection.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())
    ).status
    assert status.state == common_pb2.CONNECTION_STATE_IB_LINK_LOST

    simulator.faults.come_back(data_lost=False)  # 1102
    assert await next_status(watch) == SERVING
    watch.cancel()


async def test_requested_disconnect_is_not_serving(channel: grpc.aio.Channel) -> None:
    connection = connection_pb2_grpc.ConnectionServiceStub(channel)
    await connection.Disconnect(connection_pb2.DisconnectRequest())
    for name in IB_SERVICES:
        assert await check(channel, name) == NOT_SERVING
    assert await check(channel, "") == SERVING
    await connection.Connect(connection_pb2.ConnectRequest())
    for _ in range(100):
        if await check(channel, IB_SERVICES[0]) == SERVING:
            break
        await asyncio.sleep(0.02)
    assert await check(channel, IB_SERVICES[0]) == SERVING


async def test_shutdown_turns_everything_not_serving(make_gateway: Any) -> None:
    gw: Gateway = await make_gateway()
    async with grpc.aio.insecure_channel(gw.address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert await next_status(watch) == SERVING
        loop = asyncio.get_running_loop()
        start = loop.time()
        stopping = asyncio.ensure_future(gw.stop(grace=5.0))
        assert await next_status(watch) == NOT_SERVING
        assert await watch.read() is grpc.aio.EOF  # the watch ends cleanly ...
        assert await watch.code() == grpc.StatusCode.OK
        await stopping
        assert loop.time() - start < 2.0  # ... so it does not hold the 5 s grace
