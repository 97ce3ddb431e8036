"""Historical bars: one IB request per distinct query, a short cache, and IB's pacing.

* Identical queries running at the same time share one IB request.
* An answer is reused for an identical query for ``cache_seconds`` (bars ending "now")
  or ten times that (bars with an explicit end time, which do not change); IB forbids
  identical requests within 15 s anyway.
* :class:`~ibgateway_server.market_data.pacing.HistoricalPacer` decides whether a new IB
  request may go now; if the wait is short and fits the caller's deadline it waits,
  otherwise the caller gets RESOURCE_EXHAUSTED with RetryInfo. Nothing is ever queued
  beyond the caller's deadline.
* IB's own 162 errors are told apart by their text: a pacing violation (RESOURCE_EXHAUSTED,
  and the pacer holds every request for a while), "no data" (an empty answer), others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

from ibgateway.v1 import market_data_pb2
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import Contract
from ibgateway_server.ib.session import IbSession
from ibgateway_server.market_data.bars import BarSpec, bar_to_proto, zone
from ibgateway_server.market_data.pacing import HistoricalPacer, paced

log = logging.getLogger(__name__)

MAX_CACHED = 256
MAX_WAIT_FOR_PACING = 2.0  # a caller may wait this long for the pacer, within its deadline


class _HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


@dataclass(frozen=True)
class HistoryQuery:
    """One reqHistoricalData, in IB's terms."""

    contract: Contract  # qualified
    end: datetime | None  # None: now
    duration: str  # e.g. "2 D"
    spec: BarSpec
    what_to_show: str
    regular_hours: bool

    def key(self) -> tuple[Any, ...]:
        end = self.end.isoformat() if self.end is not None else ""
        return (
            self.contract.conId,
            end,
            self.duration,
            self.spec.ib_text,
            self.what_to_show,
            self.regular_hours,
        )


@dataclass(frozen=True)
class HistoryAnswer:
    bars: tuple[market_data_pb2.Bar, ...]
    time_zone: str
    cached: bool = False


class HistoryService:
    """Serves GetHistoricalBars within IB's historical-data limits."""

    def __init__(
        self,
        session: IbSession,
        *,
        requests_per_10min: int = 60,
        cache_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.cache_seconds = cache_seconds
        self.pacer = HistoricalPacer(requests_per_10min, clock=clock)
        self._clock = clock
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, HistoryAnswer]] = OrderedDict()
        self._inflight: dict[tuple[Any, ...], asyncio.Future[HistoryAnswer]] = {}
        self._zones: dict[int, str] = {}

    async def time_zone(self, contract: Contract, context: _HasTimeRemaining | None) -> str:
        """The exchange time zone of a qualified contract (asked from IB once)."""
        found = self._zones.get(contract.conId)
        if found is None:
            details = await self.session.qualify_details(contract, context=context)
            found = details.timeZoneId or "UTC"
            if len(self._zones) >= 10_000:
                self._zones.clear()
            self._zones[contract.conId] = found
        return found

    def _cached(self, key: tuple[Any, ...]) -> HistoryAnswer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if expires <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return answer

    def _store(self, query: HistoryQuery, answer: HistoryAnswer) -> None:
        ttl = self.cache_seconds * (10 if query.end is not None else 1)
        if ttl <= 0:
            return
        key = query.key()
        self._cache[key] = (self._clock() + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    async def fetch(
        self, query: HistoryQuery, time_zone: str, context: _HasTimeRemaining | None = None
    ) -> HistoryAnswer:
        """The bars of ``query``: from the cache, a running identical request, or IB."""
        key = query.key()
        found = self._cached(key)
        if found is not None:
            return HistoryAnswer(found.bars, found.time_zone, cached=True)
        running = self._inflight.get(key)
        if running is None:
            await self._wait_for_pacing(query, context)
            found = self._cached(key)  # an identical request finished while we waited
            if found is not None:
                return HistoryAnswer(found.bars, found.time_zone, cached=True)
            running = self._inflight.get(key)
        if running is None:
            self.pacer.record(*self._pacing_keys(query))
            running = asyncio.ensure_future(self._request(query, time_zone))
            self._inflight[key] = running

            def forget(done: asyncio.Future[HistoryAnswer]) -> None:
                if self._inflight.get(key) is done:
                    del self._inflight[key]
                if not done.cancelled():
                    done.exception()  # retrieved here; each waiter gets it too

            running.add_done_callback(forget)
        budget = self.session.budget(context)
        try:
            return await asyncio.wait_for(asyncio.shield(running), budget)
        except TimeoutError:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "IB_TIMEOUT",
                f"no historical data from TWS within {budget:g}s (the request keeps running; "
                "an identical request soon gets its answer from the gateway's cache)",
                metadata={"operation": "historical data"},
            ) from None

    @staticmethod
    def _pacing_keys(query: HistoryQuery) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return (query.contract.conId, query.what_to_show), query.key()

    async def _wait_for_pacing(
        self, query: HistoryQuery, context: _HasTimeRemaining | None
    ) -> None:
        contract_key, request_key = self._pacing_keys(query)
        while True:
            delay, reason = self.pacer.delay(contract_key, request_key)
            if delay <= 0:
                return
            allowed = min(MAX_WAIT_FOR_PACING, self.session.budget(context))
            if delay > allowed:
                raise paced(
                    reason,
                    _PACING_MESSAGES.get(reason, "IB's historical-data pacing")
                    + f"; retry in {delay:.1f}s",
                    delay,
                    used=str(self.pacer.used),
                    limit_per_10min=str(self.pacer.limit),
                )
            await asyncio.sleep(delay)

    async def _request(self, query: HistoryQuery, time_zone: str) -> HistoryAnswer:
        ib = self.session.ib
        what = f"historical bars of {query.contract.symbol or query.contract.conId}"
        try:
            bars = await self.session.request(
                lambda: ib.reqHistoricalDataAsync(
                    query.contract,
                    query.end or "",
                    query.duration,
                    query.spec.ib_text,
                    query.what_to_show,
                    query.regular_hours,
                    formatDate=2,
                    timeout=0,  # bounded below, and without ib_insync's silent empty list
                ),
                what=what,
                # IB may take a while for long histories; callers are bounded separately
                max_wait=max(self.session.timeout, 60.0),
            )
        except GatewayError as err:
            raise self._map_error(err) from None
        tz = zone(time_zone)
        now = datetime.now(UTC)
        converted = tuple(bar_to_proto(bar, query.spec, tz, now) for bar in bars)
        answer = HistoryAnswer(converted, time_zone)
        self._store(query, answer)
        return answer

    def _map_error(self, err: GatewayError) -> GatewayError:
        if err.ib_code != 162:
            return err
        text = err.message.lower()
        if "pacing" in text:
            self.pacer.penalize()
            err.metadata["retry_after_seconds"] = f"{err.retry_after or 0:.2f}"
            return err
        if "exceed" in text:
            return GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "HISTORY_TOO_LONG",
                err.message,
                ib_code=162,
                field_violations=[("duration", "longer than IB serves for this bar size")],
            )
        if "no data" in text or "no historical" in text:
            return GatewayError(
                grpc.StatusCode.NOT_FOUND, "NO_HISTORICAL_DATA", err.message, ib_code=162
            )
        return GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION, "HISTORICAL_DATA_ERROR", err.message, ib_code=162
        )


_PACING_MESSAGES = {
    "IB_PACING_PENALTY": "IB reported a historical-data pacing violation; requests are held",
    "HISTORY_BUDGET_EXHAUSTED": "the gateway's historical-data budget "
    "(IBGW_HISTORY_REQUESTS_PER_10MIN requests per 10 minutes, IB's limit) is used up",
    "IDENTICAL_HISTORY_REQUEST": "IB refuses an identical historical request within 15 s",
    "HISTORY_BURST": "IB refuses a 6th historical request for one contract within 2 s",
}
