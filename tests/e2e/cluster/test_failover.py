"""Processes of a cluster killed for real (SIGKILL): a dead edge frees its IB lines after
its line lease; a dead owner's standby takes the lease, reconnects to IB with the same
client id, and the edges' streams go PAUSED → ACTIVE; an order retried across the
failover is not placed twice; order events go on with the same epoch and sequence."""

from __future__ import annotations

import grpc.aio
import pytest

from ibgateway.v1 import market_data_pb2, market_data_pb2_grpc, orders_pb2, orders_pb2_grpc
from tests.e2e.cluster.conftest import Cluster
from tests.e2e.conftest import gateway_channel
from tests.e2e.market_data.test_market_data_support import StreamReader, stream_request, wait_for
from tests.e2e.orders.test_order_events_support import (
    market_order_done,
    open_reader,
    place_market,
)
from tests.e2e.orders.test_orders_support import order_request, perm_ids, simulator_orders

pytestmark = pytest.mark.timeout(90)

AAPL = 265598
ACTIVE = market_data_pb2.SUBSCRIPTION_STATE_ACTIVE
PAUSED = market_data_pb2.SUBSCRIPTION_STATE_PAUSED


async def test_a_killed_edge_releases_its_lines(cluster: Cluster, spawn) -> None:
    await cluster.owner()
    edge = await spawn("edge")
    async with grpc.aio.insecure_channel(edge.address) as channel:
        md = market_data_pb2_grpc.MarketDataServiceStub(channel)
        reader = StreamReader(md.StreamQuotes(stream_request("AAPL", "MSFT")))
        await wait_for(lambda: len(reader.latest) == 2, within=20)
        assert cluster.simulator.market_data.lines_in_use == 2
        await edge.kill()  # no goodbye: only its lease lapsing frees the lines
        await wait_for(lambda: reader.error is not None, within=5)
    lease = cluster.settings("edge").line_lease_seconds
    await wait_for(lambda: cluster.simulator.market_data.lines_in_use == 0, within=lease + 5)


async def test_a_killed_owner_hands_over_to_the_standby(cluster: Cluster, spawn) -> None:
    first = await spawn("owner")
    edge = await cluster.edge()
    second = await spawn("owner")
    assert not second.log_has("holds the lease")
    async with gateway_channel(edge) as channel:
        md = market_data_pb2_grpc.MarketDataServiceStub(channel)
        orders = orders_pb2_grpc.OrderServiceStub(channel)
        reader = StreamReader(md.StreamQuotes(stream_request("AAPL", heartbeat=0.5)))
        await wait_for(lambda: AAPL in reader.latest, within=20)
        request = order_request("failover-1", orders_pb2.ORDER_TYPE_LIMIT, quantity="1",
                                limit_price="1.00")  # fmt: skip
        events = await open_reader(orders)
        placed = await orders.PlaceOrder(request, timeout=10)
        before = [await events.next_event()]  # acknowledged

        await first.kill()
        await wait_for(lambda: PAUSED in reader.states(0), within=10)
        await wait_for(lambda: second.log_has("holds the lease"), within=15)
        await wait_for(lambda: reader.states(0)[-1] == ACTIVE, within=15)
        seen = reader.quote_count
        await wait_for(lambda: reader.quote_count > seen, within=10)
        assert reader.error is None

        # the client retries (it never knew whether the first call went through):
        # the new owner finds the order by its key in TWS and places nothing
        again = await orders.PlaceOrder(request, timeout=10)
        assert again.replayed
        assert again.order.perm_id == placed.order.perm_id
        on_sim = await simulator_orders(cluster.simulator, "failover-1")
        assert perm_ids(on_sim) == {placed.order.perm_id}
        await reader.close()

        # order events: the new owner continues the same epoch and sequence; a client
        # that followed them through the failover sees no hole and no repeat
        await place_market(orders, "failover-2")
        after = await events.events_until(market_order_done("failover-2"))
        await events.close()
        assert "replay_gap" not in {m.WhichOneof("event") for m in events.received}
        sequences = [e.sequence for e in before + after]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
        assert {e.epoch for e in before + after} == {before[0].epoch}
        assert [e.order.client_order_id for e in before] == ["failover-1"] * len(before)
