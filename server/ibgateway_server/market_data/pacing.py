"""The gateway's own budget for IB's historical-data pacing rules.

IB (https://interactivebrokers.github.io/tws-api/historical_limitations.html):

* no more than 60 historical requests within any 10 minutes;
* no identical request within 15 seconds;
* no 6 or more requests for the same contract, exchange and tick type within 2 seconds.

A request that would break a rule is not sent. The caller either waits (a short wait that
fits its deadline) or gets RESOURCE_EXHAUSTED with the delay after which it would pass.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable

import grpc

from ibgateway_server.errors import GatewayError

WINDOW = 600.0
IDENTICAL_WINDOW = 15.0
BURST_WINDOW = 2.0
BURST_MAX = 5  # IB's violation is the 6th within 2 s
# After IB itself reports a pacing violation (162), send nothing for this long.
IB_PENALTY = 15.0


def paced(reason: str, message: str, retry_after: float, **metadata: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason,
        message,
        retry_after=max(0.05, retry_after),
        metadata={"retry_after_seconds": f"{max(0.05, retry_after):.2f}", **metadata},
    )


class HistoricalPacer:
    """Counts the historical requests sent to IB and says when the next one may go."""

    def __init__(
        self, per_10_minutes: int = 60, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = per_10_minutes
        self._clock = clock
        self._sent: deque[float] = deque()
        self._by_contract: dict[Hashable, deque[float]] = {}
        self._identical: dict[Hashable, float] = {}
        self._blocked_until = 0.0

    @property
    def used(self) -> int:
        """Requests counted in the current 10-minute window."""
        self._trim(self._clock())
        return len(self._sent)

    def _trim(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= WINDOW:
            self._sent.popleft()
        for key in [k for k, at in self._identical.items() if now - at >= IDENTICAL_WINDOW]:
            del self._identical[key]
        for key in list(self._by_contract):
            times = self._by_contract[key]
            while times and now - times[0] >= BURST_WINDOW:
                times.popleft()
            if not times:
                del self._by_contract[key]

    def delay(self, contract_key: Hashable, request_key: Hashable) -> tuple[float, str]:
        """(seconds until this request may be sent, the rule that holds it) — 0 if now."""
        now = self._clock()
        self._trim(now)
        if self._blocked_until > now:
            return self._blocked_until - now, "IB_PACING_PENALTY"
        if self.limit and len(self._sent) >= self.limit:
            return self._sent[0] + WINDOW - now, "HISTORY_BUDGET_EXHAUSTED"
        sent_at = self._identical.get(request_key)
        if sent_at is not None:
            return sent_at + IDENTICAL_WINDOW - now, "IDENTICAL_HISTORY_REQUEST"
        burst = self._by_contract.get(contract_key)
        if burst is not None and len(burst) >= BURST_MAX:
            return burst[0] + BURST_WINDOW - now, "HISTORY_BURST"
        return 0.0, ""

    def record(self, contract_key: Hashable, request_key: Hashable) -> None:
        """A request is being sent to IB now."""
        now = self._clock()
        self._sent.append(now)
        self._identical[request_key] = now
        self._by_contract.setdefault(contract_key, deque()).append(now)

    def penalize(self, seconds: float = IB_PENALTY) -> None:
        """IB reported a pacing violation anyway (another client of the same login, or
        limits tighter than ours): hold every request for a while."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
