"""ConnectionService end to end: status, Connect/Disconnect, TestConnection."""

from __future__ import annotations

import grpc
import grpc.aio

from ibgateway.v1 import common_pb2, connection_pb2, connection_pb2_grpc
from ibgateway_server.app import Gateway
from tws_simulator import TwsSimulator


async def test_status_reports_the_simulator_session(
    channel: grpc.aio.Channel, gateway: Gateway, simulator: TwsSimulator
) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    status = (await stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())).status
    assert status.connected
    assert status.state == common_pb2.CONNECTION_STATE_CONNECTED
    assert (status.host, status.port, status.client_id) == (simulator.host, simulator.port, 1)
    assert status.server_version >= 157
    assert list(status.accounts) == ["DU1234567"]
    assert status.connect_time.seconds > 0
    assert status.backend == connection_pb2.BACKEND_TWS
