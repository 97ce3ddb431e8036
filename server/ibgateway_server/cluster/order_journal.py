"""The order-event journal of a cluster, in NATS: the same
:class:`~ibgateway_server.orders.journal.OrderJournal` interface as the all-in-one
gateway's SQLite file, with two stores that every owner reaches:

* the events in the JetStream stream ``IBGW_<cluster>_ORDER_EVENTS`` (the one the edges
  serve from), each with the message id ``<epoch>:<sequence>``;
* what was reported about each order, and the journal's epoch and accounts, in the KV
  bucket ``ibgw_<cluster>_orders``.

An owner opens it when it takes the lease (:meth:`JetStreamJournal.open` reads the epoch,
the last sequence, the newest events and every order state), so it continues the same
epoch and sequence as the owner before it, and its tracker reconciles with TWS against
what was reported: what changed while no owner was there is emitted once.

The interface is synchronous (the event log calls it from IB callbacks); writes are
queued and a writer task sends them in order. Each event is published expecting the
stream's last sequence to be the one this owner last wrote: if another owner wrote in
between, this one has lost the lease without knowing yet, and it stops writing
(fencing), instead of interleaving two owners' sequences.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig
from nats.js.kv import KeyValue

from ibgateway_server.cluster.order_events import (
    ACCOUNT_HEADER,
    EPOCH_HEADER,
    SEQUENCE_HEADER,
    ensure_stream,
)
from ibgateway_server.cluster.subjects import Subjects
from ibgateway_server.orders.journal import JournaledEvent, JournaledOrder, new_epoch

log = logging.getLogger(__name__)

EPOCH_KEY = "meta.epoch"
ACCOUNTS_KEY = "meta.accounts"
ORDER_PREFIX = "order."
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
WRONG_LAST_SEQUENCE = 10071


class JetStreamJournal:
    """OrderJournal over JetStream and a KV bucket (see the module docstring)."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        kv: KeyValue,
        *,
        epoch: str,
        last_sequence: int,
        stream_sequence: int,
        events: list[JournaledEvent],
        orders: dict[str, JournaledOrder],
        accounts: frozenset[str],
        restored: bool,
        retention: int,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.kv = kv
        self._epoch = epoch
        self._last = last_sequence
        self._stream_sequence = stream_sequence  # the stream's last sequence as we know it
        self._events: deque[JournaledEvent] = deque(events, maxlen=retention)
        self._orders = orders
        self._accounts = accounts
        self._restored = restored
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._fenced = False
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="order-journal-writer"
        )

    @classmethod
    async def open(cls, nc: NatsClient, subjects: Subjects, *, retention: int) -> JetStreamJournal:
        js = nc.jetstream()
        await ensure_stream(nc, subjects)
        try:
            kv = await js.create_key_value(KeyValueConfig(bucket=subjects.orders_bucket, history=1))
        except nats.js.errors.BadRequestError:
            kv = await js.key_value(subjects.orders_bucket)
        values = await _all_values(kv)
        info = await js.stream_info(subjects.order_events_stream)
        stream_sequence = info.state.last_seq
        epoch, last = "", 0
        if stream_sequence:
            newest = await js.get_last_msg(subjects.order_events_stream, subjects.order_events)
            headers = newest.headers or {}
            epoch = headers.get(EPOCH_HEADER, "")
            last = int(headers.get(SEQUENCE_HEADER, "0") or 0)
        epoch = epoch or values.get(EPOCH_KEY, b"").decode() or new_epoch()
        if EPOCH_KEY not in values:
            await kv.put(EPOCH_KEY, epoch.encode())
        events = await _newest_events(nc, subjects, stream_sequence, retention, epoch)
        orders = {}
        for key, value in values.items():
            if key.startswith(ORDER_PREFIX):
                data = json.loads(value)
                orders[key] = JournaledOrder(key[len(ORDER_PREFIX) :], data["state"], data["final"])
        accounts = frozenset(a for a in values.get(ACCOUNTS_KEY, b"").decode().split(",") if a)
        log.info(
            "order journal in NATS: epoch %s, last sequence %d, %d order(s) remembered",
            epoch,
            last,
            len(orders),
        )
        return cls(
            nc,
            subjects,
            kv,
            epoch=epoch,
            last_sequence=last,
            stream_sequence=stream_sequence,
            events=events,
            orders=orders,
            accounts=accounts,
            restored=bool(last or orders),
            retention=retention,
        )

    # ------------------------------------------------------------ the interface

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_sequence(self) -> int:
        return self._last

    @property
    def restored(self) -> bool:
        return self._restored

    @property
    def pending(self) -> bool:
        # JetStream acknowledges asynchronously; the edges' clients only ever see an
        # event once JetStream holds it (they read it from there)
        return False

    def append(self, event: JournaledEvent) -> None:
        self._last = event.sequence
        self._events.append(event)
        self._queue.put_nowait(("event", event))

    def read_after(self, sequence: int, limit: int) -> list[JournaledEvent]:
        return [e for e in self._events if e.sequence > sequence][:limit]

    def put_order(self, order: JournaledOrder) -> None:
        self._orders[ORDER_PREFIX + order.key] = order
        self._queue.put_nowait(("put", order))

    def forget_orders(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._orders.pop(ORDER_PREFIX + key, None)
            self._queue.put_nowait(("forget", key))

    def orders(self) -> list[JournaledOrder]:
        return list(self._orders.values())

    def accounts(self) -> frozenset[str]:
        return self._accounts

    def claim_accounts(self, accounts: Iterable[str]) -> bool:
        mine = frozenset(accounts)
        if self._accounts and mine and not self._accounts & mine:
            return False
        if not mine <= self._accounts:
            self._accounts = self._accounts | mine
            self._queue.put_nowait(("accounts", ",".join(sorted(self._accounts))))
        return True

    def flush(self) -> None:
        """Nothing to do here: the writer sends every write in order, as fast as NATS
        takes them (``drain`` waits for that)."""

    def close(self) -> None:
        self.fence()

    # ---------------------------------------------------------------- writing

    def fence(self) -> None:
        """Write nothing more (this owner no longer holds the lease)."""
        self._fenced = True
        self._writer.cancel()

    async def drain(self, within: float = 2.0) -> None:
        """Wait (a little) for the queued writes to be sent."""
        if not self._fenced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), within)

    async def _write_loop(self) -> None:
        while True:
            kind, item = await self._queue.get()
            while not self._fenced:
                try:
                    await self._write(kind, item)
                    self._queue.task_done()
                    break
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    if isinstance(exc, nats.js.errors.APIError) and (
                        exc.err_code == WRONG_LAST_SEQUENCE
                    ):
                        if await self._written_already(item):
                            self._queue.task_done()
                            break
                        log.error(
                            "another owner has written order events: this one stops "
                            "writing (it has lost the lease)"
                        )
                        self._fenced = True
                        return
                    log.debug("order journal write %s not done yet: %r", kind, exc)
                    await asyncio.sleep(0.2)

    async def _write(self, kind: str, item: Any) -> None:
        js = self.nc.jetstream()
        if kind == "event":
            event: JournaledEvent = item
            headers = {
                "Nats-Msg-Id": f"{self._epoch}:{event.sequence}",
                EPOCH_HEADER: self._epoch,
                SEQUENCE_HEADER: str(event.sequence),
                ACCOUNT_HEADER: event.account,
                EXPECTED_LAST_SEQUENCE: str(self._stream_sequence),
            }
            ack = await js.publish(
                self.subjects.order_events, event.message, headers=headers, timeout=2.0
            )
            self._stream_sequence = ack.seq
        elif kind == "put":
            order: JournaledOrder = item
            body = json.dumps({"state": order.state, "final": order.final}).encode()
            await self.kv.put(ORDER_PREFIX + order.key, body)
        elif kind == "forget":
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await self.kv.purge(ORDER_PREFIX + str(item))
        elif kind == "accounts":
            await self.kv.put(ACCOUNTS_KEY, str(item).encode())

    async def _written_already(self, item: Any) -> bool:
        """After a "wrong last sequence": whether the stream's newest event is this one
        (an earlier attempt went through but its acknowledgement was lost)."""
        if not isinstance(item, JournaledEvent):
            return False
        js = self.nc.jetstream()
        newest = await js.get_last_msg(
            self.subjects.order_events_stream, self.subjects.order_events
        )
        headers = newest.headers or {}
        if headers.get(EPOCH_HEADER) == self._epoch and headers.get(SEQUENCE_HEADER) == str(
            item.sequence
        ):
            self._stream_sequence = newest.seq or self._stream_sequence
            return True
        return False


async def _all_values(kv: KeyValue) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.value is not None and entry.operation is None:
                values[entry.key] = entry.value
    finally:
        await watcher.stop()
    return values


async def _newest_events(
    nc: NatsClient, subjects: Subjects, last: int, retention: int, epoch: str
) -> list[JournaledEvent]:
    """The newest ``retention`` events of ``epoch`` in the stream, oldest first."""
    if not last:
        return []
    js = nc.jetstream()
    collected: list[JournaledEvent] = []
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        headers = msg.headers or {}
        if headers.get(EPOCH_HEADER) == epoch:
            collected.append(
                JournaledEvent(
                    int(headers.get(SEQUENCE_HEADER, "0")),
                    headers.get(ACCOUNT_HEADER, ""),
                    msg.metadata.timestamp.timestamp() if msg.metadata.timestamp else 0.0,
                    bytes(msg.data),
                )
            )
        if msg.metadata.sequence.stream >= last:
            done.set()

    sub = await js.subscribe(
        subjects.order_events,
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, last - retention + 1),
        ),
    )
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await sub.unsubscribe()
    return collected[-retention:]
