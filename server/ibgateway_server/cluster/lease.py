"""The owner lease: one key in a NATS KV bucket whose entries expire after a TTL.

* A candidate takes the lease with ``create`` (it succeeds only when the key is absent:
  never taken, expired, or given up); the revision it gets is its fencing token.
* The holder renews with ``update(last=revision)`` every third of the TTL. An update
  that finds another revision means someone else holds it: the holder has lost it.
* A holder that cannot renew (NATS unreachable) for half the TTL considers the lease
  lost *before* it can expire, so it has stopped talking to IB by the time a standby
  may take it: two owners never talk to IB at once (as long as clocks run at the
  same rate, which is all a TTL lease can assume).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import nats.js.errors
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from ibgateway_server.cluster.subjects import LEASE_KEY

log = logging.getLogger(__name__)


async def lease_bucket(js: Any, bucket: str, ttl: float) -> KeyValue:
    """The lease bucket, created on first use."""
    try:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=ttl, history=1))
    except nats.js.errors.BadRequestError:
        # it exists with another TTL (set by an owner with other settings): use it as is
        return await js.key_value(bucket)


class OwnerLease:
    """Taking, renewing and giving up the owner lease."""

    def __init__(self, kv: KeyValue, owner_id: str, ttl: float) -> None:
        self.kv = kv
        self.owner_id = owner_id
        self.ttl = ttl
        self.revision = 0  # the key's current revision while held (renewals raise it)
        self.token = 0  # the revision it was taken at: the fencing token; 0 when not held
        self.lost = asyncio.Event()
        self._last_renewal = 0.0
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self.revision > 0 and not self.lost.is_set()

    def _value(self) -> bytes:
        return json.dumps({"owner": self.owner_id, "time": time.time()}).encode()

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this owner holds it now."""
        try:
            self.revision = await self.kv.create(LEASE_KEY, self._value())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self.token = self.revision
        self.lost.clear()
        self._last_renewal = time.monotonic()
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(), name="owner-lease-renew"
        )
        log.info("owner lease taken (revision %d)", self.revision)
        return True

    async def acquire(self, poll: float | None = None) -> None:
        """Wait until this owner holds the lease."""
        interval = poll if poll is not None else max(0.1, self.ttl / 6)
        while True:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                if await self.try_acquire():
                    return
            await asyncio.sleep(interval)

    async def holder(self) -> str | None:
        """The owner id holding the lease now, if any."""
        try:
            entry = await self.kv.get(LEASE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return str(json.loads(entry.value).get("owner"))

    async def _renew_loop(self) -> None:
        interval = self.ttl / 3
        while not self.lost.is_set():
            await asyncio.sleep(interval)
            try:
                self.revision = await asyncio.wait_for(
                    self.kv.update(LEASE_KEY, self._value(), last=self.revision), interval
                )
                self._last_renewal = time.monotonic()
            except nats.js.errors.KeyWrongLastSequenceError:
                self._lose("another owner holds the lease")
            except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
                # cannot reach NATS: give the lease up before it could expire elsewhere
                if time.monotonic() - self._last_renewal > self.ttl / 2:
                    self._lose(f"cannot renew it ({type(exc).__name__})")

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("owner lease lost (revision %d): %s", self.revision, why)
            self.lost.set()

    async def release(self) -> None:
        """Give the lease up (a standby may take it at once)."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if self.revision and not self.lost.is_set():
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                await self.kv.delete(LEASE_KEY, last=self.revision)
        self.lost.set()
        self.revision = self.token = 0
