"""Faults on a timer, for the standalone simulator (``--drop-every``, ``--offline-every``, …)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .faults import Faults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultSchedule:
    """Which faults to inject periodically; ``None`` periods are off."""

    delay: float = 0.0  # held back before every answer, all the time
    drop_every: float | None = None
    refuse_for: float = 0.0  # after each scheduled drop, refuse connections this long
    offline_every: float | None = None
    offline_for: float = 5.0
    data_lost: bool = False  # come back with 1101 instead of 1102
    pacing_every: float | None = None
    reject_order_every: float | None = None

    @property
    def active(self) -> bool:
        periods = (self.drop_every, self.offline_every, self.pacing_every, self.reject_order_every)
        return self.delay > 0 or any(p is not None for p in periods)


async def _every(period: float, action: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(period)
        result = action()
        if asyncio.iscoroutine(result):
            await result


async def run_schedule(faults: Faults, schedule: FaultSchedule) -> None:
    """Inject the scheduled faults until cancelled."""
    faults.set_delay(schedule.delay)

    def drop() -> None:
        faults.drop_all_connections()
        if schedule.refuse_for > 0:
            faults.refuse_connections(schedule.refuse_for)

    async def outage() -> None:
        faults.go_offline()
        await asyncio.sleep(schedule.offline_for)
        faults.come_back(data_lost=schedule.data_lost)

    loops = []
    if schedule.drop_every:
        loops.append(_every(schedule.drop_every, drop))
    if schedule.offline_every:
        loops.append(_every(schedule.offline_every, outage))
    if schedule.pacing_every:
        loops.append(_every(schedule.pacing_every, faults.pacing_violation))
    if schedule.reject_order_every:
        loops.append(_every(schedule.reject_order_every, faults.reject_order))
    if loops:
        await asyncio.gather(*loops)
