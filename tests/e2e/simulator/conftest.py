"""Fixtures for the simulator's end-to-end tests: a real simulator, real ib_insync clients.

async def test_x(simulator, ib):          # ib is connected to simulator (clientId 1)
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))

@pytest.mark.sim_config(line_limit=2)      # SimulatorConfig overrides for this test
async def test_y(simulator, connect): ib2 = await connect(client_id=7)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from ib_insync import IB

from tws_simulator import SimulatorConfig, TwsSimulator

SEED = 1234
Connect = Callable[..., Awaitable[IB]]


def simulator_config(**overrides: Any) -> SimulatorConfig:
    """Seeded and fast-ticking, on 127.0.0.1 with an OS-chosen port."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "seed": SEED,
        "tick_interval": 0.02,
        "account_update_interval": 0.1,
        "pnl_interval": 0.1,
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[TwsSimulator]:
    """A running simulator; tune it with ``@pytest.mark.sim_config(**overrides)``."""
    marker = request.node.get_closest_marker("sim_config")
    overrides = dict(marker.kwargs) if marker else {}
    async with TwsSimulator(simulator_config(**overrides)) as sim:
        yield sim


@pytest.fixture
async def connect(simulator: TwsSimulator) -> AsyncIterator[Connect]:
    """Connect more ib_insync clients to ``simulator``; all disconnected at teardown."""
    clients: list[IB] = []

    async def factory(client_id: int = 1, within: float = 5.0, **kwargs: Any) -> IB:
        ib = IB()
        clients.append(ib)
        await ib.connectAsync(
            simulator.host, simulator.port, clientId=client_id, timeout=within, **kwargs
        )
        return ib

    yield factory
    for ib in clients:
        ib.disconnect()


@pytest.fixture
async def ib(connect: Connect) -> IB:
    """An ib_insync client connected to ``simulator`` with clientId 1."""
    return await connect(client_id=1)


@pytest.fixture
def ib_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """ib_insync's log records (INFO and up) of the test."""
    caplog.set_level(logging.INFO, logger="ib_insync")
    return caplog
