"""The gateway paces its own requests to TWS under IB's 50 messages a second: a burst of
client calls reaches a TWS that enforces the limit without a single error 100."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import GatewayFactory, gateway_channel, rich_error
from tws_simulator import TwsSimulator

pytestmark = [pytest.mark.sim_config(max_messages_per_second=50), pytest.mark.timeout(60)]

BURST = 110


async def burst(gw: Gateway) -> list[grpc.StatusCode]:
    """BURST concurrent ResolveContract calls, each one reqContractDetails to TWS."""
    async with gateway_channel(gw) as channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        calls = [
            stub.ResolveContract(
                market_data_pb2.ResolveContractRequest(
                    contract=common_pb2.Contract(con_id=900_000 + n)
                ),
                timeout=20,
            )
            for n in range(BURST)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    codes = []
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError), result  # no such con_id
        codes.append(rich_error(result).code)
    return codes


async def test_a_burst_is_paced_under_the_tws_limit(
    make_gateway: GatewayFactory, simulator: TwsSimulator
) -> None:
    # Paced well below the limit: TWS counts arrivals, and a busy machine delivers
    # messages sent a second apart closer together.
    gw = await make_gateway(ibkr_timeout=15.0, tws_max_messages_per_second=30)
    assert gw.session is not None
    codes = await burst(gw)
    assert set(codes) == {grpc.StatusCode.NOT_FOUND}, codes  # never RESOURCE_EXHAUSTED
    assert [c.rate_violations for c in simulator.clients] == [0]
    assert gw.session.throttled >= 1  # the pacing held messages back


async def test_without_pacing_the_same_burst_trips_the_limit(
    make_gateway: GatewayFactory, simulator: TwsSimulator
) -> None:
    gw = await make_gateway(ibkr_timeout=15.0)
    assert gw.session is not None
    gw.session.ib.client.MaxRequests = 0  # what the gateway would do without its pacing
    codes = await burst(gw)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert sum(c.rate_violations for c in simulator.clients) > 0
