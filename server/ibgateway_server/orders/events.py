"""OrderEventLog: the gateway's one sequence of order events, and the streams reading it.

* Every event gets the next ``sequence`` (1, 2, 3, ... without holes) of the log, whose
  ``epoch`` is a token chosen when the log was created (UTC time plus random hex), so a
  client can tell a new log (new epoch, sequences start again) from a gap. With a
  journal on disk (``orders/journal.py``) the log, its epoch and its sequence survive a
  restart; without one every run is a new epoch.
* The log holds the newest ``retention`` events (:data:`DEFAULT_RETENTION`); older ones
  are dropped, so memory stays bounded whatever the clients do.
* Each event is converted to its ``StreamOrderEventsResponse`` once, when it is appended;
  every stream sends that same message.
* A stream (:class:`OrderEventStream`) is only a position in the log: replaying held
  events and following new ones are the same loop reading the log at its position, so
  an event appended during a replay is sent exactly once, in order. A stream that falls
  so far behind that the log has dropped its next event ends with RESOURCE_EXHAUSTED
  (``ORDER_EVENTS_CONSUMER_TOO_SLOW``); resuming with the last sequence it received then
  starts with a ReplayGap. A stalled stream never holds more than its position.
* Connection-state changes of the IB session are not sequenced; each is kept (the newest
  :data:`MAX_CONNECTION_CHANGES`) with the sequence it followed, and a stream sends it
  once it has sent every event before it.

Everything runs on the gateway's event loop; nothing here talks to IB.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import grpc

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.errors import GatewayError, invalid_argument
from ibgateway_server.ib import convert
from ibgateway_server.orders.journal import JournaledEvent, MemoryJournal, OrderJournal

log = logging.getLogger(__name__)

DEFAULT_RETENTION = 10_000  # events held for resuming streams
MAX_CONNECTION_CHANGES = 16  # connection-state changes held for streams that lag

EventType: TypeAlias = orders_pb2.OrderEventType.ValueType
Writer = Callable[[orders_pb2.StreamOrderEventsResponse], Awaitable[None]]


@dataclass(frozen=True)
class LoggedEvent:
    """One event as held by the log: its sequence, its account and its message."""

    sequence: int
    account: str
    message: orders_pb2.StreamOrderEventsResponse


@dataclass(frozen=True)
class _ConnectionChange:
    number: int  # counts every change of this log
    after_sequence: int  # the last event sequence when it happened
    message: orders_pb2.StreamOrderEventsResponse


@dataclass(frozen=True)
class Resume:
    """Where a new stream starts reading, and whether it must be told of a gap first."""

    next_sequence: int
    gap: bool


@dataclass(frozen=True)
class OrderEventStats:
    """The log's observable state (for tests, logs and metrics)."""

    epoch: str
    first_sequence: int  # the oldest event held (last_sequence + 1 when none is held)
    last_sequence: int  # the newest event (0 before the first)
    held: int
    retention: int
    streams: int
    max_lag: int  # events the slowest stream has not sent yet (beyond retention: it ends)


def plan_resume(
    *, after_sequence: int, epoch: str, current_epoch: str, first: int, last: int
) -> Resume:
    """Decide where a stream starts (``first``..``last``: the sequences held).

    * no epoch and after_sequence 0: from the next event on, no gap;
    * another epoch (or none with a sequence): a gap, then from the next event on
      (sequences of another run mean nothing here);
    * this epoch: the held events after ``after_sequence`` (0: from the first of the
      epoch), with a gap first when some of them are no longer held;
    * this epoch and a sequence never issued: INVALID_ARGUMENT.
    """
    if not epoch and after_sequence == 0:
        return Resume(last + 1, gap=False)
    if epoch != current_epoch:
        return Resume(last + 1, gap=True)
    if after_sequence > last:
        raise invalid_argument(
            [
                (
                    "after_sequence",
                    f"{after_sequence} is beyond the latest sequence {last} of epoch "
                    f"{current_epoch}",
                )
            ]
        )
    if after_sequence + 1 < first:
        return Resume(first, gap=True)
    return Resume(after_sequence + 1, gap=False)


class OrderEventLog:
    """The bounded, sequenced log of order events and the streams that read it."""

    def __init__(
        self,
        *,
        retention: int | None = None,
        epoch: str | None = None,
        journal: OrderJournal | None = None,
    ) -> None:
        size = DEFAULT_RETENTION if retention is None else retention
        if size < 1:
            raise ValueError("retention must be at least 1")
        self.retention = size
        self._events: deque[LoggedEvent] = deque(maxlen=size)
        self._last = 0
        self._load(journal or MemoryJournal(epoch))
        self._changes: deque[_ConnectionChange] = deque(maxlen=MAX_CONNECTION_CHANGES)
        self._change_count = 0
        self._connection = common_pb2.ConnectionStateChange(
            state=common_pb2.CONNECTION_STATE_DISCONNECTED, message="not connected to TWS yet"
        )
        self._connection.change_time.GetCurrentTime()
        self._streams: set[OrderEventStream] = set()
        self._closed = False

    def _load(self, journal: OrderJournal) -> None:
        """Continue the journal's epoch and sequence, holding its newest events."""
        self.journal = journal
        self.epoch = journal.epoch
        self._last = journal.last_sequence
        self._published = self._last  # the newest event streams may send (it is durable)
        self._publish_scheduled = False
        self._events.clear()
        start = max(0, self._last - self.retention)
        for held in journal.read_after(start, self.retention):
            message = orders_pb2.StreamOrderEventsResponse.FromString(held.message)
            self._events.append(LoggedEvent(held.sequence, held.account, message))

    def restart(self, journal: OrderJournal) -> None:
        """Start over on another journal (e.g. a new one after the old was set aside):
        its epoch; the streams open now end (they resume into a ReplayGap)."""
        self._load(journal)
        for stream in list(self._streams):
            stream.end()

    # ---------------------------------------------------------------- writing

    @property
    def last_sequence(self) -> int:
        return self._last

    @property
    def first_sequence(self) -> int:
        """The oldest sequence held; ``last_sequence + 1`` while none is."""
        return self._events[0].sequence if self._events else self._last + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def append(
        self,
        event_type: EventType,
        order: orders_pb2.Order,
        *,
        fill: orders_pb2.Fill | None = None,
        message: str = "",
        ib_code: int = 0,
        time: datetime | None = None,
    ) -> LoggedEvent:
        """Add an event (the order as it is after it) and wake every stream."""
        self._last += 1
        event = orders_pb2.OrderEvent(
            sequence=self._last,
            epoch=self.epoch,
            type=event_type,
            order=order,
            message=message,
            ib_code=ib_code,
        )
        if fill is not None:
            event.fill.CopyFrom(fill)
        moment = time or datetime.now(UTC)
        event.event_time.FromDatetime(moment)
        logged = LoggedEvent(
            self._last,
            order.account_id,
            orders_pb2.StreamOrderEventsResponse(order_event=event),
        )
        # journaled first: its commit is queued ahead of the streams' wake-ups
        try:
            self.journal.append(
                JournaledEvent(
                    self._last,
                    order.account_id,
                    moment.timestamp(),
                    logged.message.SerializeToString(),
                )
            )
        except Exception as exc:
            # A full disk must not stop the events: they go on, in memory only.
            log.error("order journal: cannot write event %d (%s); in memory only", self._last, exc)
        self._events.append(logged)
        if self.journal.pending:
            self._schedule_publish()
        else:
            self._published = self._last
            self._wake_all()
        return logged

    def _schedule_publish(self) -> None:
        """Let streams send the new events once the journal has committed them: the
        commit was queued on the loop first, so this runs after it. A client never sees
        an event that a crash could take back."""
        if self._publish_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.journal.flush()
            self._publish()
            return
        self._publish_scheduled = True
        loop.call_soon(self._publish)

    def _publish(self) -> None:
        self._publish_scheduled = False
        if self.journal.pending:
            self.journal.flush()
        self._published = self._last
        self._wake_all()

    def replicate(
        self, sequence: int, account: str, message: orders_pb2.StreamOrderEventsResponse
    ) -> None:
        """Add an event that already has its sequence: a copy of another log's (an edge
        of a cluster mirrors the owner's). A sequence already held is ignored; one past a
        hole starts the held events afresh (a stream that needed the hole is told, as a
        stream that fell behind the retention is)."""
        if sequence <= self._last:
            return
        if sequence != self._last + 1:
            self._events.clear()
        self._last = self._published = sequence  # (a replica's copy is as durable)
        self._events.append(LoggedEvent(sequence, account, message))
        self._wake_all()

    @property
    def connection(self) -> common_pb2.ConnectionStateChange:
        """The IB session's state as the streams know it."""
        return self._connection

    def connection_changed(self, change: common_pb2.ConnectionStateChange) -> None:
        """Tell every stream about a new IB session state (a repeated state is not)."""
        if change.state == self._connection.state:
            return
        self._connection = change
        self._change_count += 1
        message = orders_pb2.StreamOrderEventsResponse(connection_state=change)
        self._changes.append(_ConnectionChange(self._change_count, self._last, message))
        self._wake_all()

    def close(self) -> None:
        """End every stream (the gateway is shutting down); new streams are refused."""
        self._closed = True
        for stream in list(self._streams):
            stream.end()

    # ---------------------------------------------------------------- reading

    def stats(self) -> OrderEventStats:
        return OrderEventStats(
            epoch=self.epoch,
            first_sequence=self.first_sequence,
            last_sequence=self._last,
            held=len(self._events),
            retention=self.retention,
            streams=len(self._streams),
            max_lag=max((self._last + 1 - s.next_sequence for s in self._streams), default=0),
        )

    def event(self, sequence: int) -> LoggedEvent | None:
        """The held event with this sequence, if the log still has it."""
        first = self.first_sequence
        if not first <= sequence <= self._last:
            return None
        return self._events[sequence - first]

    def open_stream(
        self,
        *,
        after_sequence: int = 0,
        epoch: str = "",
        account: str = "",
        heartbeat: float = 5.0,
    ) -> OrderEventStream:
        """A stream positioned as :func:`plan_resume` decides; close it when done."""
        if self._closed:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "SHUTTING_DOWN",
                "the gateway is shutting down; reconnect to its successor",
                retry_after=1.0,
            )
        resume = plan_resume(
            after_sequence=after_sequence,
            epoch=epoch,
            current_epoch=self.epoch,
            first=self.first_sequence,
            last=self._last,
        )
        opening: list[orders_pb2.StreamOrderEventsResponse] = []
        if resume.gap:
            opening.append(
                orders_pb2.StreamOrderEventsResponse(
                    replay_gap=orders_pb2.ReplayGap(
                        epoch=self.epoch, first_available_sequence=self.first_sequence
                    )
                )
            )
        if self._connection.state != common_pb2.CONNECTION_STATE_CONNECTED:
            # A stream opened while IB is away learns it at once, not at the next change.
            opening.append(orders_pb2.StreamOrderEventsResponse(connection_state=self._connection))
        stream = OrderEventStream(
            self,
            next_sequence=resume.next_sequence,
            account=account,
            heartbeat=heartbeat,
            opening=opening,
            next_change=self._change_count + 1,
        )
        self._streams.add(stream)
        return stream

    def _next_change(self, number: int) -> _ConnectionChange | None:
        """The oldest held connection change numbered ``number`` or later."""
        for change in self._changes:
            if change.number >= number:
                return change
        return None

    def _remove(self, stream: OrderEventStream) -> None:
        self._streams.discard(stream)

    def _wake_all(self) -> None:
        for stream in self._streams:
            stream.wake()


class OrderEventStream:
    """One StreamOrderEvents call: a position in the log, its opening messages (a
    ReplayGap, the connection state), its account filter and its heartbeat."""

    def __init__(
        self,
        log: OrderEventLog,
        *,
        next_sequence: int,
        account: str,
        heartbeat: float,
        opening: list[orders_pb2.StreamOrderEventsResponse],
        next_change: int,
    ) -> None:
        self.log = log
        self.next_sequence = next_sequence
        self.account = account
        self.heartbeat = heartbeat
        self._opening = deque(opening)
        self._next_change = next_change
        self._wake: asyncio.Future[None] | None = None
        self._ended = False
        self._closed = False

    def wake(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def end(self) -> None:
        """Finish the stream: :meth:`run` returns."""
        self._ended = True
        self.wake()

    def close(self) -> None:
        """Leave the log (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        self.log._remove(self)
        self.wake()

    def next_message(self) -> orders_pb2.StreamOrderEventsResponse | None:
        """The next message to send, or None when there is nothing new.

        Raises RESOURCE_EXHAUSTED when the log has dropped the next event this stream
        needs (it fell more than the retention behind).
        """
        if self._opening:
            return self._opening.popleft()
        log = self.log
        while True:
            change = log._next_change(self._next_change)
            if change is not None and change.after_sequence < self.next_sequence:
                self._next_change = change.number + 1
                return change.message
            if self.next_sequence > log._published:
                return None
            event = log.event(self.next_sequence)
            if event is None:
                raise self._overrun()
            self.next_sequence += 1
            if not self.account or event.account == self.account:
                return event.message

    def _overrun(self) -> GatewayError:
        log = self.log
        missed = self.next_sequence
        return GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "ORDER_EVENTS_CONSUMER_TOO_SLOW",
            f"this stream fell more than {log.retention} events behind: event {missed} of "
            f"epoch {log.epoch} is no longer held (the oldest is {log.first_sequence}); "
            f"resume with after_sequence {missed - 1} and re-sync with ListOrders after "
            "the ReplayGap",
            metadata={
                "epoch": log.epoch,
                "next_sequence": str(missed),
                "first_available_sequence": str(log.first_sequence),
                "retention": str(log.retention),
            },
        )

    async def run(self, write: Writer) -> None:
        """Send messages until the stream ends (or the caller is cancelled): held and
        new events in order, connection changes, and a heartbeat after silence."""
        loop = asyncio.get_running_loop()
        last_send = loop.time()
        while not self._ended:
            message = self.next_message()
            if message is None:
                quiet = loop.time() - last_send
                if quiet < self.heartbeat:
                    self._wake = loop.create_future()
                    try:
                        await asyncio.wait({self._wake}, timeout=self.heartbeat - quiet)
                    finally:
                        self._wake = None
                    continue
                message = orders_pb2.StreamOrderEventsResponse(heartbeat=convert.heartbeat_now())
            await write(message)
            last_send = loop.time()
