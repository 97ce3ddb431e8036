"""Fault injection: the things that go wrong with a real TWS, on demand.

Every fault is a method on :class:`Faults` (``sim.faults``); the CLI schedules the same
methods from flags (see ``schedule.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger(__name__)

CONNECTIVITY_LOST = (1100, "Connectivity between IB and Trader Workstation has been lost.")
RESTORED_DATA_LOST = (
    1101,
    "Connectivity between IB and Trader Workstation has been restored - data lost.",
)
RESTORED_DATA_MAINTAINED = (
    1102,
    "Connectivity between IB and Trader Workstation has been restored - data maintained.",
)
# What TWS reports about its data farms while the link to IB is down, and once it is back.
FARMS_BROKEN = (
    (2103, "Market data farm connection is broken:usfarm"),
    (2105, "HMDS data farm connection is broken:ushmds"),
    (2157, "Sec-def data farm connection is broken:secdefnj"),
)
FARMS_OK = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
PACING_VIOLATION = (100, "Max rate of messages per second has been exceeded:max=50 rec=51 (1)")
DEFAULT_ORDER_REJECTION = (
    201,
    "Order rejected - reason:Rejected by the simulator (injected fault)",
)


class Faults:
    """Faults to inject into a running simulator; attributes are read by the request paths."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        # Read (and cleared) by the order side when the next placeOrder arrives.
        self.reject_next_order: tuple[int, str] | None = None
        self.delay = 0.0  # seconds added before every message sent to a client
        self.offline = False
        self.pacing_violations = 0  # how many upcoming requests get error 100 instead
        self.refusing = False
        self._reopen: asyncio.TimerHandle | None = None

    def drop_all_connections(self) -> int:
        """Close every client socket at once, like a TWS restart; returns how many."""
        clients = list(self._sim.clients)
        for conn in clients:
            conn.close()
        log.info("fault: dropped %d connection(s)", len(clients))
        return len(clients)

    def go_offline(self) -> None:
        """TWS loses its link to IB: error 1100 to every client, market data stops."""
        if self.offline:
            return
        self.offline = True
        self._sim.market.paused = True
        self._sim.broadcast_error(*CONNECTIVITY_LOST)
        for code, text in FARMS_BROKEN:
            self._sim.broadcast_error(code, text)
        log.info("fault: offline")

    def come_back(self, *, data_lost: bool = False) -> None:
        """The link is back: 1102 (subscriptions kept) or 1101 (clients must resubscribe)."""
        if not self.offline:
            return
        self.offline = False
        self._sim.market.paused = False
        if data_lost:
            self._sim.drop_market_data_subscriptions()
            self._sim.broadcast_error(*RESTORED_DATA_LOST)
        else:
            self._sim.broadcast_error(*RESTORED_DATA_MAINTAINED)
        for code, text in FARMS_OK:
            self._sim.broadcast_error(code, text)
        log.info("fault: back online (%s)", "data lost" if data_lost else "data maintained")

    def set_delay(self, seconds: float) -> None:
        """Hold every answer back by ``seconds`` (order of messages is kept)."""
        self.delay = max(0.0, float(seconds))

    def reject_order(
        self, code: int = DEFAULT_ORDER_REJECTION[0], text: str = DEFAULT_ORDER_REJECTION[1]
    ) -> None:
        """Make the next placeOrder fail with this IB error (sets ``reject_next_order``)."""
        self.reject_next_order = (code, text)

    def pacing_violation(self, count: int = 1) -> None:
        """The next ``count`` requests are refused with error 100 instead of being served."""
        self.pacing_violations += max(0, count)

    def refuse_connections(self, seconds: float) -> None:
        """Stop listening (connections are refused) for ``seconds``; existing ones stay."""
        if self._reopen is not None:
            self._reopen.cancel()
        self.refusing = True
        self._sim.stop_listening()
        log.info("fault: refusing connections for %.1fs", seconds)
        self._reopen = asyncio.get_running_loop().call_later(seconds, self._accept_again)

    def _accept_again(self) -> None:
        self._reopen = None
        self._sim.spawn(self._listen_again(), name="accept-again")

    async def _listen_again(self) -> None:
        await self._sim.start_listening()
        self.refusing = False
        log.info("fault: accepting connections again")

    def cancel_pending(self) -> None:
        """Forget scheduled fault work (the simulator is stopping)."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
