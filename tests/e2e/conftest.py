"""End-to-end fixtures: a real TWS simulator, a real gateway, a real gRPC channel.

    async def test_x(channel):             # gateway over a fresh simulator, both on port 0
        stub = connection_pb2_grpc.ConnectionServiceStub(channel)

    async def test_y(simulator, make_gateway):
        gw = await make_gateway(read_only=True)     # any Settings field as an override
        async with gateway_channel(gw) as ch: ...

Everything binds to 127.0.0.1 on an OS-chosen port; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ibgateway_server.app import Gateway
from ibgateway_server.config import Settings
from ibgateway_server.ib.session import SessionState
from tests.polling import wait_until
from tws_simulator import SimulatorConfig, TwsSimulator

SIM_SEED = 20240611

GatewayFactory = Callable[..., Awaitable[Gateway]]


def sim_config(**overrides: Any) -> SimulatorConfig:
    """A seeded, fast-ticking simulator on 127.0.0.1:0."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "seed": SIM_SEED,
        "tick_interval": 0.05,
    }
    values.update(overrides)
    return SimulatorConfig(**values)


def gateway_settings(sim: TwsSimulator, **overrides: Any) -> Settings:
    """Settings for a gateway on 127.0.0.1:0 talking to ``sim`` as if it were a real TWS.

    Everything the tests depend on is given explicitly, so the developer's IBKR_* / IBGW_*
    environment cannot change the outcome.
    """
    values: dict[str, Any] = {
        "backend": "tws",
        "ibkr_host": sim.host,
        "ibkr_port": sim.port,
        "ibkr_client_id": 1,
        "ibkr_timeout": 5.0,
        "ibkr_account": "",
        "listen": "127.0.0.1:0",
        "read_only": False,
        "allow_live_trading": False,
        "quote_line_budget": 100,
        "heartbeat_seconds": 1.0,
        "shutdown_grace": 2.0,
        "metrics_port": None,
        "reconnect_initial_delay": 0.05,
        "reconnect_max_delay": 0.5,
        "reconnect_max_attempts": 0,
        "auth_tokens": None,
        "auth_tokens_file": None,
        "tls_cert": None,
        "tls_key": None,
        "tls_client_ca": None,
        "order_journal": "off",
    }
    values.update(overrides)
    return Settings(**values)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sim_config(**kw): SimulatorConfig overrides for the `simulator` fixture, "
        "e.g. @pytest.mark.sim_config(positions={'AAPL': (100, 150.0)})",
    )


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[TwsSimulator]:
    """A running, seeded TWS simulator on 127.0.0.1 (OS-chosen port).

    Tune it per test with ``@pytest.mark.sim_config(...)``.
    """
    marker = request.node.get_closest_marker("sim_config")
    overrides = dict(marker.kwargs) if marker else {}
    async with TwsSimulator(sim_config(**overrides)) as sim:
        yield sim


@pytest.fixture
async def make_gateway(simulator: TwsSimulator) -> AsyncIterator[GatewayFactory]:
    """Start gateways over ``simulator`` with Settings overrides; all stopped at teardown.

    The returned gateway's IB session is connected (unless ``wait_connected=False``).
    """
    started: list[Gateway] = []

    async def factory(*, wait_connected: bool = True, **overrides: Any) -> Gateway:
        gw = Gateway(gateway_settings(simulator, **overrides))
        await gw.start()
        started.append(gw)
        if wait_connected:
            assert gw.session is not None
            assert await gw.session.wait_connected(10), "gateway did not connect to the simulator"
        return gw

    yield factory
    for gw in reversed(started):
        await gw.stop(0.5)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    """A running gateway on 127.0.0.1:0, connected to ``simulator``."""
    return await make_gateway()


@contextlib.asynccontextmanager
async def gateway_channel(gw: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure grpc.aio channel to ``gw`` (closed on exit)."""
    channel = grpc.aio.insecure_channel(gw.address)
    try:
        await asyncio.wait_for(channel.channel_ready(), 5)
        yield channel
    finally:
        await channel.close()


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    """A grpc.aio channel to ``gateway``."""
    async with gateway_channel(gateway) as ch:
        yield ch


async def wait_for_state(gw: Gateway, *states: SessionState, within: float = 5.0) -> bool:
    """Wait until the gateway's session is in one of ``states``."""
    assert gw.session is not None
    session = gw.session
    return await wait_until(lambda: session.state in states, within)


@dataclass
class RichError:
    """The decoded google.rpc.Status of a failed call."""

    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None

    @property
    def violations(self) -> dict[str, str]:
        if self.bad_request is None:
            return {}
        return {v.field: v.description for v in self.bad_request.field_violations}


def rich_error(exc: grpc.aio.AioRpcError) -> RichError:
    """Decode ErrorInfo / BadRequest / RetryInfo the way any gRPC client would."""
    status = rpc_status.from_call(exc)
    found: dict[str, Any] = {}
    if status is not None:
        for detail in status.details:
            for name, cls in (
                ("info", error_details_pb2.ErrorInfo),
                ("bad_request", error_details_pb2.BadRequest),
                ("retry", error_details_pb2.RetryInfo),
            ):
                if detail.Is(cls.DESCRIPTOR):
                    msg = cls()
                    detail.Unpack(msg)
                    found[name] = msg
    return RichError(
        code=exc.code(),
        message=exc.details() or "",
        info=found.get("info"),
        bad_request=found.get("bad_request"),
        retry=found.get("retry"),
    )


async def expect_error(awaitable: Awaitable[Any]) -> RichError:
    """Await a call that must fail; its decoded rich status."""
    try:
        await awaitable
    except grpc.aio.AioRpcError as exc:
        return rich_error(exc)
    raise AssertionError("the call succeeded but an error was expected")
