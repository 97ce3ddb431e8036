"""Everything that shapes one simulator run; the defaults behave like a fresh paper account."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .instruments import DEFAULT_INSTRUMENTS, Instrument
from .versions import MAX_SERVER_VERSION


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of a :class:`~tws_simulator.TwsSimulator`.

    ``tick_interval`` is the time between two market steps; every step moves every
    instrument, so the universe changes ``len(universe) / tick_interval`` quotes a second.
    ``step_size`` > 0 makes a step move only that many instruments, round robin (the way
    IB's feed looks: updates spread out in time, a contract at a time); the rate is then
    ``step_size / tick_interval`` quote changes a second.
    ``positions`` maps a symbol ("AAPL", "EUR.USD") to (quantity, average cost).
    ``instruments`` replaces the built-in universe (e.g. to add an ambiguous twin).
    ``clock_start`` (epoch seconds) starts the simulated clock at another moment than now;
    it then runs at the wall clock's pace (tests move it with ``sim.clock``).
    ``trading_hours`` enforces each instrument's sessions (see ``clock.py``): orders work
    in regular hours (extended hours only with outside-RTH), DAY orders expire at the
    close, OPG / MOC / LOC orders execute in the open / close auctions. Off (the default)
    the market never closes, as before: DAY orders do not expire and auctions never run.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port (read it back from ``sim.port``)
    seed: int | None = None
    tick_interval: float = 0.25
    step_size: int = 0  # instruments moved per step; 0: all of them
    cash: float = 1_000_000.0
    positions: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    account_id: str = "DU1234567"
    line_limit: int = 100  # simultaneous market data lines over all clients
    depth_line_limit: int = 3  # simultaneous market depth requests (IB's default is 3)
    depth_permission: bool = True  # False: like an account without level II data (354)
    live_market_data: bool = True  # False: like an account without market data subscriptions
    max_server_version: int = MAX_SERVER_VERSION
    account_update_interval: float = 1.0  # how often portfolios and values follow prices
    pnl_interval: float = 1.0  # how often reqPnL / reqPnLSingle subscribers get an update
    first_order_id: int = 1  # nextValidId of the first connection
    # IB's historical-data pacing: requests per client within 10 minutes (0: unlimited),
    # and the seconds within which an identical request is a violation.
    history_requests_per_10min: int = 60
    history_identical_window: float = 15.0
    history_update_interval: float = 1.0  # keepUpToDate: how often the open bar is re-sent
    instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS
    clock_start: float | None = None
    trading_hours: bool = False
    # IB's limit on what one API client may send: more messages than this within one
    # second are refused with error 100 (0: unlimited, the default for tests that blast).
    max_messages_per_second: int = 0
