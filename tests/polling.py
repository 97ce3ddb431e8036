"""Polling for end-to-end tests: wait for observable state instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    predicate: Callable[[], object], within: float = 5.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate`` until it is truthy or ``within`` seconds pass."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not predicate():
        if loop.time() >= end:
            return False
        await asyncio.sleep(interval)
    return True
