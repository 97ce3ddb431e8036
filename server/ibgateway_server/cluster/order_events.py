"""Order events through JetStream: the owner appends, every edge serves them.

* The owner's order-event journal is the JetStream stream ``IBGW_<cluster>_ORDER_EVENTS``
  (:mod:`.order_journal`): each event with the message id ``<epoch>:<sequence>``, so a
  re-publish is dropped by JetStream's de-duplication rather than stored twice, and an
  owner that takes over continues the same epoch and sequence.
* Each edge keeps a copy of the newest events (:class:`EventMirror`): one ordered
  JetStream consumer per edge (not one per client stream: an edge may serve thousands of
  streams, and they all read the same events), feeding an ordinary
  :class:`~ibgateway_server.orders.events.OrderEventLog` with the owner's epoch and
  sequences. The edge's OrderService serves StreamOrderEvents from it unchanged, so a
  client resumes with its epoch and sequence on any edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from ibgateway.v1 import orders_pb2
from ibgateway_server.cluster.subjects import Subjects
from ibgateway_server.ib import convert
from ibgateway_server.ib.session import StateChange
from ibgateway_server.orders.events import DEFAULT_RETENTION, OrderEventLog

log = logging.getLogger(__name__)

EPOCH_HEADER = "Ibgw-Epoch"
SEQUENCE_HEADER = "Ibgw-Sequence"
ACCOUNT_HEADER = "Ibgw-Account"
MAX_EVENTS = 100_000  # kept in JetStream
MAX_AGE_SECONDS = 7 * 86_400
DEDUP_WINDOW_SECONDS = 600.0


async def ensure_stream(nc: NatsClient, subjects: Subjects) -> None:
    """Create the order-event stream if it does not exist yet."""
    js = nc.jetstream()
    config = StreamConfig(
        name=subjects.order_events_stream,
        subjects=[subjects.order_events],
        storage=StorageType.FILE,
        max_msgs=MAX_EVENTS,
        max_age=MAX_AGE_SECONDS,
        duplicate_window=DEDUP_WINDOW_SECONDS,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(subjects.order_events_stream)  # it exists (other settings)


class EventMirror:
    """The edge's side: the newest events of the JetStream stream in an OrderEventLog
    (a new log when the epoch changes: its streams end, and resume into a ReplayGap)."""

    def __init__(self, nc_of: Callable[[], NatsClient | None], subjects: Subjects) -> None:
        self._nc_of = nc_of
        self.subjects = subjects
        self.retention = DEFAULT_RETENTION
        self.events = OrderEventLog(retention=self.retention)
        self.ready = False
        self.on_ready: Callable[[], None] = lambda: None
        self._caught_up_at = 0
        self._task: asyncio.Task[None] | None = None
        self._sub: object | None = None
        self._connection = self.events.connection

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="order-events-mirror")

    async def close(self) -> None:
        self.events.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def adopt_epoch(self, epoch: str) -> None:
        """The owner's epoch (from its beacon), before any of its events arrive."""
        if epoch and self.events.last_sequence == 0 and self.events.epoch != epoch:
            self._new_log(epoch)

    def session_changed(self, change: StateChange) -> None:
        self._connection = convert.state_change_to_proto(change)
        self.events.connection_changed(self._connection)

    def _new_log(self, epoch: str) -> None:
        old = self.events
        self.events = OrderEventLog(retention=self.retention, epoch=epoch)
        self.events.connection_changed(self._connection)
        old.close()

    async def _run(self) -> None:
        """Subscribe once the owner has created the stream; the ordered consumer then
        survives NATS reconnects by itself."""
        while True:
            nc = self._nc_of()
            if nc is not None:
                try:
                    await self._subscribe(nc)
                    return
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    log.debug("order events not mirrored yet: %r", exc)
            await asyncio.sleep(0.5)

    async def _subscribe(self, nc: NatsClient) -> None:
        js = nc.jetstream()
        info = await js.stream_info(self.subjects.order_events_stream)
        last = info.state.last_seq
        self._caught_up_at = last
        start = max(1, last - self.retention + 1)
        if last == 0:
            self._set_ready()
        self._sub = await js.subscribe(
            self.subjects.order_events,
            cb=self._on_event,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            epoch = headers[EPOCH_HEADER]
            sequence = int(headers[SEQUENCE_HEADER])
            message = orders_pb2.StreamOrderEventsResponse.FromString(msg.data)
        except (KeyError, ValueError):
            log.warning("an order event without its headers in JetStream: skipped")
            return
        if epoch != self.events.epoch:
            self._new_log(epoch)
        self.events.replicate(sequence, headers.get(ACCOUNT_HEADER, ""), message)
        if not self.ready and msg.metadata.sequence.stream >= self._caught_up_at:
            self._set_ready()

    def _set_ready(self) -> None:
        self.ready = True
        self.on_ready()


class EdgeOrderBook:
    """What the OrderService uses of the order book on an edge: the event log (the
    mirror's current one); every other order call is forwarded to the owner."""

    def __init__(self, mirror: EventMirror) -> None:
        self._mirror = mirror

    @property
    def events(self) -> OrderEventLog:
        return self._mirror.events
