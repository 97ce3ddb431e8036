"""A cluster under trouble: NATS restarted while quotes stream (the streams pause and
resume, nothing ends with an error); the health of each role; edges sharing a port."""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ibgateway.v1 import market_data_pb2, market_data_pb2_grpc
from tests.e2e.cluster.conftest import Cluster, free_port
from tests.e2e.conftest import gateway_channel
from tests.e2e.market_data.test_market_data_support import StreamReader, stream_request, wait_for
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(90)

ACTIVE = market_data_pb2.SUBSCRIPTION_STATE_ACTIVE
PAUSED = market_data_pb2.SUBSCRIPTION_STATE_PAUSED
SERVICE = "ibgateway.v1.MarketDataService"


async def test_nats_restarted_under_load(cluster: Cluster) -> None:
    await cluster.owner()
    edge = await cluster.edge()
    async with gateway_channel(edge) as channel:
        md = market_data_pb2_grpc.MarketDataServiceStub(channel)
        readers = [
            StreamReader(md.StreamQuotes(stream_request("AAPL", "MSFT", "TSLA", heartbeat=0.5)))
            for _ in range(20)
        ]
        await wait_for(lambda: all(len(r.latest) == 3 for r in readers), within=15)

        await cluster.nats.stop()
        await wait_for(lambda: all(PAUSED in r.states(0) for r in readers), within=10)
        await asyncio.sleep(0.5)
        await cluster.nats.start()

        await wait_for(lambda: all(r.states(0)[-1] == ACTIVE for r in readers), within=20)
        counts = [r.quote_count for r in readers]
        await wait_for(
            lambda: all(r.quote_count > c for r, c in zip(readers, counts, strict=True)),
            within=10,
        )
        assert all(r.error is None for r in readers)
        # one IB line per contract still, whatever happened in between
        assert cluster.simulator.market_data.lines_in_use == 3
        for reader in readers:
            await reader.close()


async def health(address: str, service: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


async def test_health_per_role(cluster: Cluster) -> None:
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    edge = await cluster.edge(wait_owner=False)
    # an edge without an owner is alive but not ready
    assert await health(edge.address, "") == serving
    assert await health(edge.address, SERVICE) == not_serving
    owner = await cluster.owner()
    standby = await cluster.owner(wait_holder=False)
    assert await wait_until(lambda: edge.node.ready, 10)
    # an owner is ready while it holds the lease and IB is up; a standby is not
    statuses = {}
    for _ in range(100):
        statuses = {
            "edge": await health(edge.address, SERVICE),
            "owner": await health(owner.address, SERVICE),
            "standby": await health(standby.address, SERVICE),
        }
        if statuses == {"edge": serving, "owner": serving, "standby": not_serving}:
            break
        await asyncio.sleep(0.1)
    assert statuses == {"edge": serving, "owner": serving, "standby": not_serving}
    await cluster.stop(owner)  # a clean stop hands the lease over at once
    assert await wait_until(lambda: standby.node is not None and standby.node.holding, 10)


async def test_several_edges_share_one_port(cluster: Cluster) -> None:
    await cluster.owner()
    port = free_port()
    listen = f"127.0.0.1:{port}"
    edges = [await cluster.edge(listen=listen, reuse_port=True) for _ in range(2)]
    assert {e.port for e in edges} == {port}  # the second bind did not fail
    for _ in range(4):  # new connections land on either edge; each serves the whole API
        async with grpc.aio.insecure_channel(listen) as channel:
            md = market_data_pb2_grpc.MarketDataServiceStub(channel)
            quotes = await md.GetQuotes(
                market_data_pb2.GetQuotesRequest(contracts=stream_request("AAPL").contracts),
                timeout=10,
            )
            assert quotes.quotes[0].contract.symbol == "AAPL"
