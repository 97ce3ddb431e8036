"""IbSession against the simulator: reconnect policy, watchdog, IB connectivity codes and
single-flight requests."""

from __future__ import annotations

import asyncio
import contextlib

import grpc.aio

from ibgateway.v1 import portfolio_pb2, portfolio_pb2_grpc
from ibgateway_server.app import Gateway
from ibgateway_server.ib.session import IbSession, SessionEvent, SessionState, StateChange
from tests.e2e.conftest import gateway_settings, wait_until
from tws_simulator import TwsSimulator


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling(simulator: TwsSimulator) -> None:
    session = IbSession(
        gateway_settings(simulator, reconnect_initial_delay=0.5, reconnect_max_delay=8.0)
    )
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (12, 8.0)]:
        delays = [session.backoff_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 150  # jittered, so many clients do not retry in step


async def test_events_on_drop_and_reconnect(simulator: TwsSimulator) -> None:
    session = IbSession(gateway_settings(simulator))
    changes: list[StateChange] = []
    session.add_state_listener(changes.append)
    await session.start()
    assert session.connected
    assert changes[-1].event is SessionEvent.CONNECTED and changes[-1].resubscribe

    simulator.faults.drop_all_connections()
    assert await wait_until(lambda: session.state is not SessionState.CONNECTED)
    assert await session.wait_connected(5)
    events = [c.event for c in changes]
    assert events[-4:] == [
        SessionEvent.DISCONNECTED,
        SessionEvent.RECONNECTING,
        SessionEvent.CONNECTING,
        SessionEvent.CONNECTED,
    ]
    await session.stop()
    assert changes[-1].event is SessionEvent.STOPPED


async def test_1101_asks_for_resubscription(simulator: TwsSimulator) -> None:
    session = IbSession(gateway_settings(simulator))
    changes: list[StateChange] = []
    await session.start()
    session.add_state_listener(changes.append)
    simulator.faults.go_offline()
    assert await wait_until(lambda: session.state is SessionState.CONNECTIVITY_LOST)
    assert not session.connected
    simulator.faults.come_back(data_lost=True)
    assert await wait_until(lambda: session.connected)
    restored = changes[-1]
    assert (restored.event, restored.ib_code, restored.resubscribe) == (
        SessionEvent.CONNECTIVITY_RESTORED,
        1101,
        True,
    )
    await session.stop()


async def test_gives_up_only_when_told(simulator: TwsSimulator) -> None:
    session = IbSession(
        gateway_settings(simulator, reconnect_max_attempts=2, reconnect_initial_delay=0.02)
    )
    await session.start()
    simulator.faults.refuse_connections(5)
    simulator.faults.drop_all_connections()
    assert await wait_until(lambda: session.state is SessionState.DISCONNECTED, within=5)
    assert session.status().reconnect_attempts == 2
    assert "refused" in session.status().last_error
    await session.stop()


async def test_watchdog_replaces_a_connection_that_stopped_answering(
    simulator: TwsSimulator,
) -> None:
    session = IbSession(gateway_settings(simulator, ibkr_timeout=0.2))
    session.watchdog_interval = 0.1
    await session.start()
    first_since = session.status().connected_since
    simulator.faults.set_delay(3.0)  # TWS hangs
    assert await wait_until(lambda: session.state is not SessionState.CONNECTED, within=3)
    simulator.faults.set_delay(0)
    assert await wait_until(
        lambda: session.connected and session.status().connected_since != first_since, within=10
    )
    await session.stop()


async def test_concurrent_calls_share_one_positions_request(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    responses = await asyncio.gather(
        *(stub.ListPositions(portfolio_pb2.ListPositionsRequest(), timeout=5) for _ in range(20))
    )
    assert len(responses) == 20  # none was orphaned by ib_insync's fixed request key


async def test_a_cancelled_connect_leaves_the_session_reconnecting(simulator: TwsSimulator) -> None:
    """Connect cancelled mid-attempt (client cancel / deadline) must not strand the session:
    the background reconnect takes the target over and gets there."""
    session = IbSession(gateway_settings(simulator, reconnect_initial_delay=0.1))
    simulator.faults.set_delay(1.0)  # the handshake hangs: connect() is mid-attempt
    attempt = asyncio.ensure_future(session.connect())
    await asyncio.sleep(0.2)
    attempt.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await attempt
    simulator.faults.set_delay(0.0)
    try:
        assert await session.wait_connected(10), session.state
    finally:
        await session.stop()
