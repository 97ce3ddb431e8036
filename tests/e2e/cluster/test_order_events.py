"""Order events through a cluster: the owner's journal is JetStream, every edge serves
StreamOrderEvents from its copy, so a client resumes with its epoch and sequence on any
edge, and after a restart of everything: exactly the events it missed, then live ones,
no hole, no repeat."""

from __future__ import annotations

import pytest

from ibgateway.v1 import orders_pb2_grpc
from tests.e2e.cluster.conftest import Cluster
from tests.e2e.conftest import gateway_channel
from tests.e2e.orders.test_order_events_support import (
    EventReader,
    market_order_done,
    open_reader,
    place_market,
    stream_request,
)

pytestmark = pytest.mark.timeout(60)


async def test_a_client_resumes_its_order_events_on_another_edge(cluster: Cluster) -> None:
    owner = await cluster.owner()
    edges = [await cluster.edge(), await cluster.edge()]
    async with gateway_channel(edges[0]) as ch0, gateway_channel(edges[1]) as ch1:
        one = orders_pb2_grpc.OrderServiceStub(ch0)
        two = orders_pb2_grpc.OrderServiceStub(ch1)
        first = await open_reader(one)
        seen = []
        for n in (1, 2):
            await place_market(one, f"edge-res-{n}")  # placed through edge 1 → the owner
            seen += await first.events_until(market_order_done(f"edge-res-{n}"))
        await first.close()
        assert owner.order_book is not None
        assert seen[0].epoch == owner.order_book.events.epoch  # the owner's own sequence
        assert [e.sequence for e in seen] == list(range(seen[0].sequence, seen[-1].sequence + 1))

        # the client lost edge 1 after the 3rd event and comes back through edge 2
        cut = seen[2]
        resumed = EventReader(two, stream_request(after_sequence=cut.sequence, epoch=cut.epoch))
        replayed = [await resumed.next_event() for _ in range(len(seen) - 3)]
        assert [e.SerializeToString() for e in replayed] == [
            e.SerializeToString() for e in seen[3:]
        ]
        await place_market(two, "edge-res-3")
        live = await resumed.events_until(market_order_done("edge-res-3"))
        await resumed.close()
        assert [e.sequence for e in live] == list(
            range(seen[-1].sequence + 1, seen[-1].sequence + 1 + len(live))
        )
        assert {m.WhichOneof("event") for m in resumed.received} <= {"order_event", "heartbeat"}


async def test_order_events_survive_a_restart_of_everything(cluster: Cluster) -> None:
    owner = await cluster.owner()
    edge = await cluster.edge()
    async with gateway_channel(edge) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        reader = await open_reader(stub)
        await place_market(stub, "restart-all-1")
        seen = await reader.events_until(market_order_done("restart-all-1"))
        await reader.close()
    for gw in (edge, owner):
        await cluster.stop(gw)
    await cluster.nats.stop()
    await cluster.nats.start()  # the same JetStream directory

    await cluster.owner()
    edge = await cluster.edge()
    async with gateway_channel(edge) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        cut = seen[1]
        resumed = EventReader(stub, stream_request(after_sequence=cut.sequence, epoch=cut.epoch))
        replayed = [await resumed.next_event() for _ in range(len(seen) - 2)]
        assert [e.SerializeToString() for e in replayed] == [
            e.SerializeToString() for e in seen[2:]
        ]
        await place_market(stub, "restart-all-2")
        live = await resumed.events_until(market_order_done("restart-all-2"))
        await resumed.close()
    assert {e.epoch for e in live} == {cut.epoch}
    assert live[0].sequence == seen[-1].sequence + 1
    assert {e.order.client_order_id for e in live} == {"restart-all-2"}  # nothing repeated
