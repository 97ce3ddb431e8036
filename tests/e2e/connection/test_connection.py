"""ConnectionService end to end: status, Connect/Disconnect, TestConnection."""

from __future__ import annotations

import socket

import grpc
import grpc.aio

from ibgateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
)
from ibgateway_server.app import Gateway
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel, wait_until
from tws_simulator import TwsSimulator

PASSED = connection_pb2.CHECK_OUTCOME_PASSED
FAILED = connection_pb2.CHECK_OUTCOME_FAILED
SKIPPED = connection_pb2.CHECK_OUTCOME_SKIPPED


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_status_reports_the_simulator_session(
    channel: grpc.aio.Channel, simulator: TwsSimulator
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
    assert not status.read_only


async def test_disconnect_then_connect(channel: grpc.aio.Channel, simulator: TwsSimulator) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    accounts = account_pb2_grpc.AccountServiceStub(channel)

    status = (await stub.Disconnect(connection_pb2.DisconnectRequest())).status
    assert not status.connected
    assert status.state == common_pb2.CONNECTION_STATE_DISCONNECTED
    assert not status.HasField("connect_time")
    assert await wait_until(lambda: not simulator.clients)

    err = await expect_error(accounts.ListAccounts(account_pb2.ListAccountsRequest()))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.info is not None and err.info.reason == "NOT_CONNECTED"
    assert "TWS" in err.message and "IBKR_PORT" in err.message  # says what to check

    status = (await stub.Connect(connection_pb2.ConnectRequest())).status
    assert status.connected and status.state == common_pb2.CONNECTION_STATE_CONNECTED
    listed = await accounts.ListAccounts(account_pb2.ListAccountsRequest())
    assert [a.account_id for a in listed.accounts] == ["DU1234567"]


async def test_connect_with_overrides_and_noop(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    first = (await stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())).status

    same = (await stub.Connect(connection_pb2.ConnectRequest())).status
    assert same.connect_time == first.connect_time  # already connected there: a no-op

    moved = (await stub.Connect(connection_pb2.ConnectRequest(client_id=7))).status
    assert moved.connected and moved.client_id == 7
    assert await wait_until(lambda: [c.client_id for c in simulator.clients] == [7])


async def test_connect_to_a_closed_port_fails_then_recovers(
    make_gateway: GatewayFactory, simulator: TwsSimulator
) -> None:
    gw = await make_gateway(connect_allow="127.0.0.1")  # any port of this host
    async with gateway_channel(gw) as channel:
        await _connect_elsewhere_then_back(channel, simulator)


async def _connect_elsewhere_then_back(channel: grpc.aio.Channel, simulator: TwsSimulator) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    err = await expect_error(
        stub.Connect(connection_pb2.ConnectRequest(host="127.0.0.1", port=free_port()))
    )
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.info is not None and err.info.reason == "NOT_CONNECTED"
    assert "refused" in err.message

    status = (await stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())).status
    assert not status.connected
    assert status.state == common_pb2.CONNECTION_STATE_RECONNECTING  # never gives up
    assert status.last_error

    back = (await stub.Connect(connection_pb2.ConnectRequest(port=simulator.port))).status
    assert back.connected and back.port == simulator.port


async def test_connect_rejects_bad_arguments(channel: grpc.aio.Channel) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    err = await expect_error(stub.Connect(connection_pb2.ConnectRequest(port=70000, client_id=-1)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(err.violations) == {"port", "client_id"}


async def test_client_id_in_use_is_unavailable_with_ib_code(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    from ibgateway_server.ib.insync import IB

    squatter = IB()
    await squatter.connectAsync(simulator.host, simulator.port, clientId=42)
    try:
        stub = connection_pb2_grpc.ConnectionServiceStub(channel)
        err = await expect_error(stub.Connect(connection_pb2.ConnectRequest(client_id=42)))
        assert err.code == grpc.StatusCode.UNAVAILABLE
        assert err.info is not None
        assert err.info.reason == "CLIENT_ID_IN_USE"
        assert err.info.metadata["ib_code"] == "326"
    finally:
        squatter.disconnect()
        await stub.Disconnect(connection_pb2.DisconnectRequest())


async def test_test_connection_passes_every_check(channel: grpc.aio.Channel) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    result = await stub.TestConnection(connection_pb2.TestConnectionRequest(sample_symbol="MSFT"))
    assert result.ok
    assert [c.name for c in result.checks] == ["connection", "account", "market_data", "positions"]
    assert all(c.outcome == PASSED for c in result.checks)
    by_name = {c.name: c for c in result.checks}
    assert "NetLiquidation" in by_name["account"].fields
    assert "MSFT" in by_name["market_data"].detail
    assert {"bid", "ask"} <= set(by_name["market_data"].fields)
    assert by_name["positions"].count == 0
    assert result.status.connected


async def test_test_connection_reports_failures_when_tws_is_down(
    channel: grpc.aio.Channel, gateway: Gateway
) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    await stub.Disconnect(connection_pb2.DisconnectRequest())
    result = await stub.TestConnection(connection_pb2.TestConnectionRequest())  # no RPC error
    assert not result.ok
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes == {
        "connection": FAILED,
        "account": SKIPPED,
        "market_data": SKIPPED,
        "positions": SKIPPED,
    }
    assert "not connected" in result.checks[0].detail


async def test_test_connection_reports_an_unknown_sample_symbol(channel: grpc.aio.Channel) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    result = await stub.TestConnection(connection_pb2.TestConnectionRequest(sample_symbol="NOPE"))
    assert not result.ok
    market = next(c for c in result.checks if c.name == "market_data")
    assert market.outcome == FAILED
    assert market.ib_code == 200
    assert [c.outcome for c in result.checks if c.name != "market_data"] == [PASSED] * 3


async def test_connect_only_to_the_configured_tws_unless_allowed(
    channel: grpc.aio.Channel, simulator: TwsSimulator
) -> None:
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    for request in (
        connection_pb2.ConnectRequest(host="127.0.0.1", port=free_port()),  # another port
        connection_pb2.ConnectRequest(host="10.1.2.3"),  # another host, same port
        connection_pb2.ConnectRequest(host="x" * 200, port=22),
    ):
        err = await expect_error(stub.Connect(request))
        assert err.code == grpc.StatusCode.PERMISSION_DENIED, request
        assert err.info is not None and err.info.reason == "CONNECT_TARGET_NOT_ALLOWED"
        assert len(err.message) < 200  # a long host is not echoed whole
    status = (await stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())).status
    assert status.connected and status.port == simulator.port  # nothing moved
    same = await stub.Connect(
        connection_pb2.ConnectRequest(host=simulator.host, port=simulator.port)
    )
    assert same.status.connected


async def test_read_only_refuses_session_control(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(read_only=True)
    async with gateway_channel(gw) as channel:
        stub = connection_pb2_grpc.ConnectionServiceStub(channel)
        for call in (
            stub.Connect(connection_pb2.ConnectRequest()),
            stub.Disconnect(connection_pb2.DisconnectRequest()),
        ):
            err = await expect_error(call)
            assert err.code == grpc.StatusCode.PERMISSION_DENIED
            assert err.info is not None and err.info.reason == "READ_ONLY_MODE"
        assert gw.session is not None and gw.session.connected
