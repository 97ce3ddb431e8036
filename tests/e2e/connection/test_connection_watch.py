"""ConnectionService.WatchConnectionStatus end to end: the first status, one update per
session change (drop and reconnect, IB link lost and restored, Disconnect/Connect RPCs),
heartbeats, a slow consumer, cleanup on cancel and on shutdown. Real gateway, real
ib_insync, the TWS simulator and its fault injection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, connection_pb2, connection_pb2_grpc
from ibgateway_server.app import Gateway
from tests.e2e.conftest import GatewayFactory, expect_error, gateway_channel, wait_until
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)

CONNECTED = common_pb2.CONNECTION_STATE_CONNECTED
DISCONNECTED = common_pb2.CONNECTION_STATE_DISCONNECTED
RECONNECTING = common_pb2.CONNECTION_STATE_RECONNECTING
IB_LINK_LOST = common_pb2.CONNECTION_STATE_IB_LINK_LOST


def watch_request(heartbeat: float = 0.0) -> connection_pb2.WatchConnectionStatusRequest:
    request = connection_pb2.WatchConnectionStatusRequest()
    if heartbeat:
        request.heartbeat_interval.FromNanoseconds(int(heartbeat * 1e9))
    return request


class WatchReader:
    """Reads one WatchConnectionStatus call in the background and keeps what it saw."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.updates: list[connection_pb2.ConnectionUpdate] = []
        self.heartbeats: list[float] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.call:
                if message.WhichOneof("event") == "update":
                    self.updates.append(message.update)
                else:
                    self.heartbeats.append(loop.time())
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    @property
    def changes(self) -> list[common_pb2.ConnectionStateChange]:
        return [u.change for u in self.updates if u.HasField("change")]

    def states(self) -> list[int]:
        return [c.state for c in self.changes]

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    assert await wait_until(predicate, within), "condition not reached in time"


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> Any:
    return connection_pb2_grpc.ConnectionServiceStub(channel)


def assert_consistent(update: connection_pb2.ConnectionUpdate) -> None:
    """The status in an update is the one after its change, and the change is complete."""
    change = update.change
    assert update.status.state == change.state
    assert update.status.connected == (change.state == CONNECTED)
    assert change.message
    assert change.change_time.seconds > 0


async def test_first_message_is_the_current_status_without_a_change(
    stub: Any, gateway: Gateway
) -> None:
    call = stub.WatchConnectionStatus(watch_request())
    first = await asyncio.wait_for(call.read(), 5)
    assert first.WhichOneof("event") == "update"
    assert not first.update.HasField("change")
    status = first.update.status
    assert status.connected and status.state == CONNECTED
    assert status.accounts == ["DU1234567"]
    assert status.connect_time.seconds > 0
    assert gateway.session is not None and status.port == gateway.session.port
    # the same status GetConnectionStatus reports
    current = await stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())
    assert status == current.status
    call.cancel()


async def test_dropped_connection_reports_reconnecting_then_connected(
    stub: Any, simulator: TwsSimulator
) -> None:
    reader = WatchReader(stub.WatchConnectionStatus(watch_request()))
    try:
        await wait_for(lambda: len(reader.updates) == 1)
        assert simulator.faults.drop_all_connections() == 1
        await wait_for(lambda: CONNECTED in reader.states(), within=10)
        states = reader.states()
        # lost (reconnecting by itself), each attempt, then back
        assert states[0] == RECONNECTING
        assert states[-1] == CONNECTED and set(states[:-1]) == {RECONNECTING}
        assert "lost" in reader.changes[0].message
        for update in reader.updates[1:]:
            assert_consistent(update)
        assert reader.updates[-1].status.connect_time.seconds > 0
        times = [c.change_time.ToNanoseconds() for c in reader.changes]
        assert times == sorted(times)
    finally:
        await reader.close()


@pytest.mark.parametrize(("data_lost", "code"), [(False, 1102), (True, 1101)])
async def test_ib_link_lost_and_restored(
    stub: Any, simulator: TwsSimulator, data_lost: bool, code: int
) -> None:
    reader = WatchReader(stub.WatchConnectionStatus(watch_request()))
    try:
        await wait_for(lambda: len(reader.updates) == 1)
        simulator.faults.go_offline()
        await wait_for(lambda: IB_LINK_LOST in reader.states())
        lost = reader.changes[-1]
        assert lost.ib_code == 1100
        assert not reader.updates[-1].status.connected
        simulator.faults.come_back(data_lost=data_lost)
        await wait_for(lambda: reader.states()[-1] == CONNECTED)
        assert reader.states() == [IB_LINK_LOST, CONNECTED]
        assert reader.changes[-1].ib_code == code
        assert str(code) in reader.changes[-1].message
        for update in reader.updates[1:]:
            assert_consistent(update)
    finally:
        await reader.close()


async def test_disconnect_and_connect_rpcs_are_seen_in_the_stream(stub: Any) -> None:
    reader = WatchReader(stub.WatchConnectionStatus(watch_request()))
    try:
        await wait_for(lambda: len(reader.updates) == 1)
        await stub.Disconnect(connection_pb2.DisconnectRequest())
        await wait_for(lambda: DISCONNECTED in reader.states())
        assert reader.states() == [DISCONNECTED]
        assert "on request" in reader.changes[0].message
        assert not reader.updates[-1].status.connected
        await stub.Connect(connection_pb2.ConnectRequest())
        await wait_for(lambda: reader.states()[-1] == CONNECTED)
        # the explicit attempt (reported as RECONNECTING), then connected
        assert reader.states() == [DISCONNECTED, RECONNECTING, CONNECTED]
        for update in reader.updates[1:]:
            assert_consistent(update)
    finally:
        await reader.close()


async def test_heartbeats_after_silence(stub: Any, gateway: Gateway) -> None:
    fast = WatchReader(stub.WatchConnectionStatus(watch_request(heartbeat=0.2)))
    default = WatchReader(stub.WatchConnectionStatus(watch_request()))  # 1 s (fixture)
    try:
        await wait_for(lambda: len(fast.heartbeats) >= 4, within=5)
        gaps = [b - a for a, b in zip(fast.heartbeats, fast.heartbeats[1:], strict=False)]
        assert all(0.1 < gap < 0.6 for gap in gaps), gaps
        await wait_for(lambda: len(default.heartbeats) >= 1, within=3)
        assert len(default.heartbeats) <= 2
        assert len(fast.updates) == len(default.updates) == 1  # nothing changed meanwhile
    finally:
        await fast.close()
        await default.close()


@pytest.mark.parametrize("seconds", [0.01, 7200.0])
async def test_out_of_range_heartbeat_is_invalid_argument(stub: Any, seconds: float) -> None:
    call = stub.WatchConnectionStatus(watch_request(heartbeat=seconds))
    err = await expect_error(call.read())
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat_interval" in err.violations


async def test_cancelled_watch_leaves_no_listener_behind(stub: Any, gateway: Gateway) -> None:
    session = gateway.session
    assert session is not None
    before = session.state_listener_count
    readers = [WatchReader(stub.WatchConnectionStatus(watch_request())) for _ in range(5)]
    await wait_for(lambda: all(len(r.updates) == 1 for r in readers))
    assert session.state_listener_count == before + 5
    for reader in readers:
        await reader.close()
    await wait_for(lambda: session.state_listener_count == before)
    # the session keeps working for everyone else
    after = WatchReader(stub.WatchConnectionStatus(watch_request()))
    try:
        await wait_for(lambda: len(after.updates) == 1)
        assert session.state_listener_count == before + 1
        await stub.Disconnect(connection_pb2.DisconnectRequest())
        await wait_for(lambda: DISCONNECTED in after.states())
    finally:
        await after.close()


async def test_slow_consumer_gets_the_final_state(
    simulator: TwsSimulator, gateway: Gateway
) -> None:
    """A consumer that does not read while the link flaps 40 times ends up with the
    final state, having been sent fewer updates than there were changes."""
    # a small, fixed HTTP/2 window: not reading soon stops the server's writes
    slow_channel = grpc.aio.insecure_channel(
        gateway.address,
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    try:
        slow: Any = connection_pb2_grpc.ConnectionServiceStub(slow_channel).WatchConnectionStatus(
            watch_request(heartbeat=3600)
        )
        first = await asyncio.wait_for(slow.read(), 5)
        assert first.update.status.state == CONNECTED
        async with gateway_channel(gateway) as channel:
            fast = WatchReader(
                connection_pb2_grpc.ConnectionServiceStub(channel).WatchConnectionStatus(
                    watch_request()
                )
            )
            await wait_for(lambda: len(fast.updates) == 1)
            flaps = 40
            for flap in range(flaps):
                simulator.faults.go_offline()
                await wait_for(lambda n=flap: len(fast.changes) == 2 * n + 1)
                simulator.faults.come_back()
                await wait_for(lambda n=flap: len(fast.changes) == 2 * n + 2)
            # a reader that keeps up sees every change, in order
            assert fast.states() == [IB_LINK_LOST, CONNECTED] * flaps
            await fast.close()
        final = fast.changes[-1]
        received: list[connection_pb2.ConnectionUpdate] = []
        while not received or received[-1].change != final:
            message = await asyncio.wait_for(slow.read(), 5)
            received.append(message.update)
        assert received[-1].status.state == CONNECTED
        assert len(received) < 2 * flaps  # older updates were dropped, not queued
        slow.cancel()
    finally:
        await slow_channel.close()


async def test_open_watch_ends_with_ok_on_shutdown(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with gateway_channel(gw) as channel:
        stub: Any = connection_pb2_grpc.ConnectionServiceStub(channel)
        call = stub.WatchConnectionStatus(watch_request())
        first = await asyncio.wait_for(call.read(), 5)
        assert first.update.status.connected
        loop = asyncio.get_running_loop()
        start = loop.time()
        stopping = asyncio.ensure_future(gw.stop(grace=5.0))
        while await asyncio.wait_for(call.read(), 5) is not grpc.aio.EOF:
            pass  # drain: the stream must end, not hang or fail
        assert await call.code() == grpc.StatusCode.OK
        await stopping
        assert loop.time() - start < 3.0  # ended by the gateway, not by the grace timeout
