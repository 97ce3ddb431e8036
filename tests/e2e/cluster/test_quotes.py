"""Quotes through a cluster: one owner on IB (the simulator), edges serving StreamQuotes
from NATS. IB lines are observed through the simulator's count of market data lines."""

from __future__ import annotations

import grpc
import pytest

from ibgateway.v1 import market_data_pb2, market_data_pb2_grpc
from tests.e2e.cluster.conftest import Cluster
from tests.e2e.conftest import gateway_channel
from tests.e2e.market_data.test_market_data_support import StreamReader, stream_request, wait_for

pytestmark = pytest.mark.timeout(60)

AAPL, MSFT = 265598, 272093
ACTIVE = market_data_pb2.SUBSCRIPTION_STATE_ACTIVE


async def test_the_same_contract_through_two_edges_uses_one_ib_line(cluster: Cluster) -> None:
    await cluster.owner()
    edges = [await cluster.edge(), await cluster.edge()]
    async with gateway_channel(edges[0]) as ch0, gateway_channel(edges[1]) as ch1:
        readers = [
            StreamReader(market_data_pb2_grpc.MarketDataServiceStub(ch).StreamQuotes(
                stream_request("AAPL", "MSFT", heartbeat=0.5)))
            for ch in (ch0, ch1, ch0)
        ]  # fmt: skip
        try:
            await wait_for(lambda: all(len(r.latest) == 2 for r in readers), within=15)
            assert cluster.simulator.market_data.lines_in_use == 2
            for reader in readers:
                assert reader.states(0)[0] == ACTIVE and reader.states(1)[0] == ACTIVE
                assert reader.latest[AAPL].contract.symbol == "AAPL"
                assert reader.latest[AAPL].bid.value
            # quotes keep flowing, and heartbeats come when asked for
            counts = [r.quote_count for r in readers]
            await wait_for(
                lambda: all(r.quote_count > c for r, c in zip(readers, counts, strict=True))
            )
        finally:
            for reader in readers:
                await reader.close()
        # the streams are gone: the owner lets the lines go
        await wait_for(lambda: cluster.simulator.market_data.lines_in_use == 0, within=10)


async def test_unary_calls_are_answered_by_the_owner(cluster: Cluster) -> None:
    owner = await cluster.owner()
    edge = await cluster.edge()
    async with gateway_channel(edge) as channel:
        md = market_data_pb2_grpc.MarketDataServiceStub(channel)
        quotes = await md.GetQuotes(
            market_data_pb2.GetQuotesRequest(contracts=stream_request("AAPL").contracts),
            timeout=10,
        )
        assert quotes.quotes[0].contract.con_id == AAPL
        # an error comes back as the owner's own rich status
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await md.GetQuotes(market_data_pb2.GetQuotesRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert owner.node is not None and owner.node.holding
