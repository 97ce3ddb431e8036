"""The owner: an ordinary gateway (IB session, QuoteHub, OrderBook, gRPC server) that,
while it holds the owner lease, also

* publishes each quote update of every line an edge wants, once, as the Quote bytes the
  hub already encoded, on the line's subject (:class:`QuotePublisher`);
* keeps each edge's line demand as a lease that the edge renews; a dead edge's lines are
  released when its lease lapses (:class:`LineLeases`), so IB lines in use stay equal to
  the distinct contracts wanted across all live edges, within the hub's budget;
* answers forwarded calls (:class:`~ibgateway_server.cluster.forwarding.RpcBridge`);
* announces its session state on every change and every second (:class:`Beacon`): the
  edges mirror it, and its silence tells them the owner is gone.

A standby owner runs the same gateway with its IB session idle, refusing calls, until
it takes the lease (:class:`OwnerNode`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, Counter, Gauge

from ibgateway.v1 import common_pb2
from ibgateway_server import errors
from ibgateway_server.cluster import wire
from ibgateway_server.cluster.forwarding import DEADLINE_HEADER, RpcBridge, reply_error, reply_ok
from ibgateway_server.cluster.lease import OwnerLease, lease_bucket
from ibgateway_server.cluster.nats_link import connect
from ibgateway_server.cluster.order_events import ensure_stream
from ibgateway_server.cluster.order_journal import JetStreamJournal
from ibgateway_server.cluster.subjects import Subjects, line_token, parse_line_token
from ibgateway_server.config import Settings
from ibgateway_server.errors import GatewayError, from_exception
from ibgateway_server.ib import convert
from ibgateway_server.ib.session import IbSession, StateChange
from ibgateway_server.market_data.hub import Line, QuoteHub
from ibgateway_server.orders.book import OrderBook

log = logging.getLogger(__name__)

BEACON_INTERVAL = 1.0  # seconds between two beacons without a change
SWEEP_INTERVAL = 0.5


def new_node_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{secrets.token_hex(3)}"


class OwnerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.holder = Gauge(
            "ibgw_cluster_lease_holder", "1 while this owner holds the lease", registry=registry
        )
        self.published = Counter(
            "ibgw_cluster_quotes_published", "Quote updates published on NATS", registry=registry
        )
        self.edges = Gauge(
            "ibgw_cluster_edges", "Edges whose line lease is live", registry=registry
        )
        self.forwarded = Counter(
            "ibgw_cluster_forwarded_calls", "Calls answered for edges", registry=registry
        )


class QuotePublisher:
    """Publishes every update of the lines edges want, in IB order, once each."""

    def __init__(
        self, hub: QuoteHub, nc: NatsClient, subjects: Subjects, counter: Counter | None = None
    ) -> None:
        self.hub = hub
        self._counter = counter
        self.nc = nc
        self.subjects = subjects
        self.published = 0
        self._lines: dict[Line, list[Any]] = {}  # line → [subject, edges holding it]
        self._queue: list[tuple[str, bytes]] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.hub.update_listener = self._on_update
        self._task = asyncio.get_running_loop().create_task(self._run(), name="quote-publisher")

    async def stop(self) -> None:
        if self.hub.update_listener == self._on_update:
            self.hub.update_listener = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._lines.clear()
        self._queue.clear()

    def add(self, line: Line) -> None:
        entry = self._lines.get(line)
        if entry is None:
            self._lines[line] = [self.subjects.quotes(line.key), 1]
        else:
            entry[1] += 1

    def remove(self, line: Line) -> None:
        entry = self._lines.get(line)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._lines[line]

    def _on_update(self, line: Line) -> None:
        entry = self._lines.get(line)
        if entry is None:
            return
        quote = line.quote
        if quote is None:
            return
        self._queue.append((entry[0], quote))
        self._kick.set()

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch, self._queue = self._queue, []
            for subject, quote in batch:
                try:
                    await self.nc.publish(subject, quote)
                except (nats.errors.Error, OSError):
                    continue  # NATS down: edges see the owner silent and pause
            self.published += len(batch)
            if self._counter is not None:
                self._counter.inc(len(batch))


@dataclass
class EdgeDemand:
    lines: dict[str, Line] = field(default_factory=dict)
    expires: float = 0.0


class LineLeases:
    """Every edge's line demand, as leases the edges renew (``lines.want``)."""

    def __init__(
        self,
        hub: QuoteHub,
        publisher: QuotePublisher,
        nc: NatsClient,
        subjects: Subjects,
        lease_seconds: float,
        revision: Callable[[], int],
    ) -> None:
        self.hub = hub
        self.publisher = publisher
        self.nc = nc
        self.subjects = subjects
        self.lease_seconds = lease_seconds
        self._revision = revision
        self.edges: dict[str, EdgeDemand] = {}
        self._subs: list[Subscription] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subs = [
            await self.nc.subscribe(self.subjects.lines_want, cb=self._on_want),
            await self.nc.subscribe(self.subjects.lines_drop, cb=self._on_drop),
            await self.nc.subscribe(self.subjects.resolve, cb=self._on_resolve),
        ]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="line-leases")

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        for edge in list(self.edges):
            self._expire(edge)

    def _release(self, demand: EdgeDemand, token: str) -> None:
        line = demand.lines.pop(token, None)
        if line is not None:
            self.publisher.remove(line)
            self.hub.release(line)

    def _expire(self, edge: str) -> None:
        demand = self.edges.pop(edge, None)
        if demand is not None:
            for token in list(demand.lines):
                self._release(demand, token)

    def want(self, edge: str, lines: dict[str, str], *, full: bool) -> dict[str, Any]:
        """Take (or renew) an edge's lines; ``full``: these are all it wants now."""
        demand = self.edges.setdefault(edge, EdgeDemand())
        demand.expires = time.monotonic() + self.lease_seconds
        if full:
            for token in [t for t in demand.lines if t not in lines]:
                self._release(demand, token)
        results: dict[str, Any] = {}
        for token, text in lines.items():
            line = demand.lines.get(token)
            if line is not None:
                if not full:
                    results[token] = {"ok": True, "quote": wire.bytes_to_text(line.quote)}
                continue
            try:
                contract = convert.contract_from_proto(wire.contract_from_text(text))
                line = self.hub.acquire(contract, parse_line_token(token)[2])
            except GatewayError as err:
                results[token] = _refusal(err.ib_code or 101, err.message)
                continue
            if not line.alive:
                results[token] = _refusal(line.ib_code, line.message)
                self.hub.release(line)
                continue
            demand.lines[token] = line
            self.publisher.add(line)
            results[token] = {"ok": True, "quote": wire.bytes_to_text(line.quote)}
        return results

    async def _on_want(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data)
            results = self.want(request["edge"], request["lines"], full=bool(request["full"]))
            reply = {"revision": self._revision(), "lines": results}
        except Exception:
            log.exception("bad line demand")
            return
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(msg.reply, json.dumps(reply).encode())

    async def _on_resolve(self, msg: Msg) -> None:
        # the hub's shared, cached resolution; each request in its own task
        task = asyncio.get_running_loop().create_task(self._resolve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, msg: Msg) -> None:
        headers = msg.headers or {}
        wait = int(headers.get(DEADLINE_HEADER, "0") or 0) / 1000 or None
        try:
            spec = common_pb2.Contract.FromString(msg.data)
            contract = await self.hub.resolve(spec, max_wait=wait)
        except GatewayError as err:
            await reply_error(self.nc, msg, err, self._revision())
        except Exception as exc:
            failure = from_exception(exc) or errors.internal_error()
            await reply_error(self.nc, msg, failure, self._revision())
        else:
            data = convert.contract_to_proto(contract).SerializeToString()
            await reply_ok(self.nc, msg, data, self._revision())

    async def _on_drop(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            request = json.loads(msg.data)
            demand = self.edges.get(request["edge"])
            if demand is not None:
                for token in request["lines"]:
                    self._release(demand, token)

    async def _sweep(self) -> None:
        """Lapsed edges lose their lines; lines IB refused are reported and let go."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for edge, demand in list(self.edges.items()):
                if demand.expires < now:
                    log.info("edge %s did not renew its line lease: its lines are released", edge)
                    self._expire(edge)
                    continue
                for token, line in list(demand.lines.items()):
                    if not line.alive:
                        status = {"line": token, **_refusal(line.ib_code, line.message)}
                        with contextlib.suppress(nats.errors.Error):
                            await self.nc.publish(
                                self.subjects.line_status, json.dumps(status).encode()
                            )
                        self._release(demand, token)


def _refusal(ib_code: int, message: str) -> dict[str, Any]:
    return {"ok": False, "code": ib_code, "message": message}


class Beacon:
    """The holder's session status on every change and every second."""

    def __init__(
        self,
        session: IbSession,
        nc: NatsClient,
        subjects: Subjects,
        owner_id: str,
        revision: Callable[[], int],
        order_epoch: Callable[[], str] = lambda: "",
    ) -> None:
        self.session = session
        self._order_epoch = order_epoch
        self.nc = nc
        self.subjects = subjects
        self.owner_id = owner_id
        self._revision = revision
        self._changes: asyncio.Queue[StateChange | None] = asyncio.Queue()
        self._number = 0
        self._remove: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._remove = self.session.add_state_listener(self._changes.put_nowait)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="owner-beacon")

    async def stop(self) -> None:
        if self._remove is not None:
            self._remove()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            change: StateChange | None = None
            with contextlib.suppress(TimeoutError):
                change = await asyncio.wait_for(self._changes.get(), BEACON_INTERVAL)
            if change is not None:
                self._number += 1
            beacon = {
                "owner": self.owner_id,
                "revision": self._revision(),
                "number": self._number,
                "status": wire.status_to_json(self.session.status()),
                "change": wire.change_to_json(change) if change is not None else None,
                "order_epoch": self._order_epoch(),
                "time": time.time(),
            }
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.publish(self.subjects.beacon, json.dumps(beacon).encode())


class OwnerNode:
    """An owner process: waits for the lease, then serves as the holder until it loses
    the lease or IB stays down beyond the grace period."""

    def __init__(
        self,
        settings: Settings,
        session: IbSession,
        hub: QuoteHub,
        order_book: OrderBook,
        *,
        internal_target: Callable[[], str],
        registry: CollectorRegistry,
        on_holder: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.hub = hub
        self.order_book = order_book
        self.subjects = Subjects(settings.cluster)
        self.owner_id = new_node_id("owner")
        self.metrics = OwnerMetrics(registry)
        self._internal_target = internal_target
        self._on_holder = on_holder
        self.nc: NatsClient | None = None
        self.lease: OwnerLease | None = None
        self.publisher: QuotePublisher | None = None
        self.leases: LineLeases | None = None
        self._bridge: RpcBridge | None = None
        self._beacon: Beacon | None = None
        self._task: asyncio.Task[None] | None = None
        self.holding = False

    def revision(self) -> int:
        """The fencing token: the lease revision this owner took it at."""
        return self.lease.token if self.lease is not None else 0

    async def start(self) -> None:
        s = self.settings
        self.nc = await connect(s.nats_url, name=self.owner_id)
        kv = await lease_bucket(
            self.nc.jetstream(), self.subjects.lease_bucket, s.owner_lease_seconds
        )
        self.lease = OwnerLease(kv, self.owner_id, s.owner_lease_seconds)
        await ensure_stream(self.nc, self.subjects)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="owner-node")
        log.info("owner %s waiting for the lease", self.owner_id)

    async def _run(self) -> None:
        assert self.lease is not None
        while True:
            await self.lease.acquire()
            gave_up = await self._hold()
            if gave_up:
                # IB stayed down: let a standby try, do not take the lease straight back
                await asyncio.sleep(self.settings.owner_ib_grace_seconds)

    async def _hold(self) -> bool:
        """Serve as the holder; returns True when it gave the lease up over IB."""
        assert self.nc is not None and self.lease is not None
        nc, lease = self.nc, self.lease
        self.holding = True
        self.metrics.holder.set(1)
        log.info("owner %s holds the lease (revision %d)", self.owner_id, lease.token)
        self.publisher = QuotePublisher(self.hub, nc, self.subjects, self.metrics.published)
        self.leases = LineLeases(
            self.hub,
            self.publisher,
            nc,
            self.subjects,
            self.settings.line_lease_seconds,
            self.revision,
        )
        self._bridge = RpcBridge(
            nc,
            self.subjects,
            self._internal_target(),
            self.revision,
            on_answer=self.metrics.forwarded.inc,
        )
        events = self.order_book.events
        self._beacon = Beacon(
            self.session,
            nc,
            self.subjects,
            self.owner_id,
            self.revision,
            order_epoch=lambda: events.epoch,
        )
        gave_up = False
        journal: JetStreamJournal | None = None
        try:
            # continue the order events where the previous owner left them (epoch,
            # sequence, what was reported of each order) before IB says anything
            journal = await JetStreamJournal.open(nc, self.subjects, retention=events.retention)
            events.restart(journal)
            self.order_book.tracker.restart()
            self._beacon.start()
            await self.session.start()
            if self._on_holder is not None:
                await self._on_holder()
            self.publisher.start()
            await self.leases.start()
            await self._bridge.start()
            gave_up = await self._watch()
        finally:
            # fence first: no IB traffic from here on, whatever else fails
            self.holding = False
            self.metrics.holder.set(0)
            with contextlib.suppress(Exception):
                await self.session.disconnect()
            if journal is not None:
                if not lease.lost.is_set():
                    await journal.drain()  # a clean stop: what is queued still goes out
                journal.fence()
            await self._stop_serving()
            if gave_up:
                await lease.release()
        return gave_up

    async def _watch(self) -> bool:
        """Until the lease is lost (False) or IB is down beyond the grace (True)."""
        assert self.lease is not None
        down_since: float | None = None
        while not self.lease.lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lease.lost.wait(), SWEEP_INTERVAL)
            if self.leases is not None:
                self.metrics.edges.set(len(self.leases.edges))
            if self.session.connected:
                down_since = None
            elif down_since is None:
                down_since = time.monotonic()
            elif time.monotonic() - down_since > self.settings.owner_ib_grace_seconds:
                log.warning(
                    "IB down for %.0fs: handing the lease over", time.monotonic() - down_since
                )
                return True
        return False

    async def _stop_serving(self) -> None:
        for part in (self._bridge, self.leases, self.publisher, self._beacon):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
        self._bridge = self.leases = self.publisher = self._beacon = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.lease is not None:
            await self.lease.release()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


class StandbyGuard(grpc.aio.ServerInterceptor):
    """A standby owner refuses every gateway call (UNAVAILABLE, STANDBY_OWNER): only the
    lease holder may talk to IB. Sits inside the error mapper."""

    def __init__(self, holding: Callable[[], bool]) -> None:
        self._holding = holding

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or self._holding() or not method.startswith("/ibgateway."):
            return handler

        async def refuse(request: Any, context: Any) -> Any:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "STANDBY_OWNER",
                "this gateway is a standby owner; clients connect to the edges",
                retry_after=1.0,
            )

        async def refuse_stream(request: Any, context: Any) -> Any:
            await refuse(request, context)
            yield  # pragma: no cover

        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


__all__ = ["LineLeases", "OwnerNode", "QuotePublisher", "StandbyGuard", "line_token"]
