"""Connecting to NATS: one client per gateway process, reconnecting forever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

log = logging.getLogger(__name__)


async def connect(
    url: str,
    *,
    name: str,
    on_change: Callable[[bool], None] = lambda up: None,
    retry: float = 0.5,
) -> NatsClient:
    """A connected client; waits (retrying every ``retry`` s) until NATS answers.
    ``on_change(up)`` is called when the connection drops and when it is back."""

    async def disconnected() -> None:
        log.warning("NATS connection lost; reconnecting")
        on_change(False)

    async def reconnected() -> None:
        log.info("NATS connection restored")
        on_change(True)

    async def error(exc: Exception) -> None:
        log.debug("NATS: %r", exc)

    attempt = 0
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=retry,
                connect_timeout=2,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
            )
        except (nats.errors.Error, OSError) as exc:
            attempt += 1
            if attempt == 1 or attempt % 20 == 0:
                log.warning("cannot reach NATS at %s (%r); retrying", url, exc)
            await asyncio.sleep(retry)
