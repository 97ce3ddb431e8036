"""What every kind of shared IB subscription (depth books, live bars) does the same way.

One IB line per key, shared by the streams that want it; the hub follows the session
(IB's error messages, connection changes) from its first use until it is closed, and at
close ends its streams, cancels its background work and releases every line.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from ibgateway_server.ib.session import IbSession, StateChange


class EndableStream(Protocol):
    def end(self) -> None: ...


KeyT = TypeVar("KeyT", bound=Hashable)
LineT = TypeVar("LineT")
StreamT = TypeVar("StreamT", bound=EndableStream)


class SharedLines(ABC, Generic[KeyT, LineT, StreamT]):
    """The bookkeeping of a hub of shared lines; subclasses subscribe, cancel and react."""

    def __init__(self, session: IbSession) -> None:
        self.session = session
        self._lines: dict[KeyT, LineT] = {}
        self._streams: set[StreamT] = set()
        self._tasks: set[asyncio.Future[None]] = set()  # background work, cancelled at close
        self._started = False
        self._remove_listener: Callable[[], None] | None = None

    @property
    def ib(self) -> Any:
        return self.session.ib

    @property
    def line_count(self) -> int:
        return len(self._lines)

    def start(self) -> None:
        """Follow IB's messages and the session's state (idempotent)."""
        if self._started:
            return
        self._started = True
        self.ib.errorEvent += self._on_error
        self._remove_listener = self.session.add_state_listener(self._on_state)

    async def close(self) -> None:
        for stream in list(self._streams):
            stream.end()
        for task in list(self._tasks):
            task.cancel()
        for line in list(self._lines.values()):
            self._cancel(line)
        self._lines.clear()
        if self._started:
            self.ib.errorEvent -= self._on_error
            if self._remove_listener is not None:
                self._remove_listener()
            self._started = False

    def register(self, stream: StreamT) -> None:
        self._streams.add(stream)

    def unregister(self, stream: StreamT) -> None:
        self._streams.discard(stream)

    @abstractmethod
    def _cancel(self, line: LineT) -> None:
        """Release the line's IB subscription."""

    @abstractmethod
    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        """An IB error message (ib_insync's errorEvent)."""

    @abstractmethod
    def _on_state(self, change: StateChange) -> None:
        """A change of the IB session (lost, restored, reconnected...)."""
