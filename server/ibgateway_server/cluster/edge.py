"""The edge: the whole gRPC API for clients, with no IB connection of its own.

The edge runs the ordinary servicers and the ordinary :class:`QuoteHub`, over stand-ins
for the two things they use from IB:

* :class:`RemoteSession` stands in for the IB session. Its state mirrors the owner's,
  announced by the owner's beacon; when the beacon falls silent (the owner died) it is
  RECONNECTING, and when a new owner takes over it is CONNECTED again with
  ``resubscribe``: the hub and the streams see PAUSED → ACTIVE, as on an IB reconnect.
  Contract resolution is a forwarded ResolveContract.
* :class:`QuoteFeed` stands in for IB's market data (``reqMktData``/``cancelMktData``,
  ``pendingTickersEvent``, ``errorEvent``): a line is a lease on the owner plus a NATS
  subscription to the line's subject, and each message is the Quote bytes the owner
  encoded, handed to the hub unchanged (:class:`PassThroughEncoder`). So conflation,
  per-subscription status, heartbeats and line waiting are the hub's own.

Calls that need IB go to the owner (:mod:`.forwarding`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server import errors
from ibgateway_server.cluster import wire
from ibgateway_server.cluster.forwarding import Forwarder, no_owner
from ibgateway_server.cluster.nats_link import connect
from ibgateway_server.cluster.order_events import EventMirror
from ibgateway_server.cluster.owner import new_node_id
from ibgateway_server.cluster.subjects import LineKey, Subjects, line_token, parse_line_token
from ibgateway_server.config import Settings
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import Contract, ContractDetails, Ticker
from ibgateway_server.ib.session import (
    SessionEvent,
    SessionState,
    SessionStatus,
    StateChange,
    StateListener,
    deadline_margin,
)
from ibgateway_server.market_data.convert import QuoteEncoder

log = logging.getLogger(__name__)

LAG_SAMPLE_EVERY = 64  # quote messages between two lag measurements
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.owner_live = Gauge(
            "ibgw_cluster_owner_live", "1 while an owner's beacon is heard", registry=registry
        )
        self.received = Counter(
            "ibgw_cluster_quotes_received", "Quote updates received from NATS", registry=registry
        )
        self.lag = Histogram(
            "ibgw_cluster_quote_lag_seconds",
            "Owner receive time → edge receive time of a quote (sampled)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )


class Event:
    """The ``+=`` / ``-=`` / emit of ib_insync's events, for the hub's listeners."""

    def __init__(self) -> None:
        self._handlers: list[Callable[..., Any]] = []

    def __iadd__(self, handler: Callable[..., Any]) -> Event:
        self._handlers.append(handler)
        return self

    def __isub__(self, handler: Callable[..., Any]) -> Event:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handler)
        return self

    def emit(self, *args: Any) -> None:
        for handler in list(self._handlers):
            handler(*args)


class RemoteTicker:
    """What the hub gets from ``reqMktData`` on an edge: the newest Quote bytes of a line.
    (No prices of its own: snapshots, which need them, are forwarded to the owner.)"""

    __slots__ = ("contract", "quote")

    bid = ask = last = close = math.nan
    time = _EPOCH  # (the Quote bytes carry the owner's receive time)
    rtTime = None
    marketDataType = 0

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.quote = b""


class PassThroughEncoder(QuoteEncoder):
    """The edge's Quote "encoding": the owner's bytes, unchanged."""

    def encode(self, ticker: Ticker, receive_time: datetime) -> bytes:
        return ticker.quote  # type: ignore[attr-defined]


class QuoteFeed:
    """IB's market data, as the hub uses it, over NATS (see the module docstring)."""

    def __init__(self, node: EdgeNode) -> None:
        self.node = node
        self.pendingTickersEvent = Event()
        self.errorEvent = Event()
        self._md_type = 1
        self._lines: dict[LineKey, RemoteTicker] = {}
        self._keys: dict[int, LineKey] = {}  # id(contract) → key
        self._subs: dict[LineKey, asyncio.Task[Subscription | None]] = {}
        self._dirty: dict[RemoteTicker, None] = {}
        self._flush_scheduled = False
        self._messages = 0

    # --- what the hub calls

    def isConnected(self) -> bool:
        return self.node.owner_live

    def reqMarketDataType(self, md_type: int) -> None:
        self._md_type = md_type

    def reqMktData(self, contract: Contract, generic_ticks: str = "") -> RemoteTicker:
        key: LineKey = (contract.conId, contract.exchange or "", self._md_type)
        old = self._lines.get(key)
        if old is not None:
            self._keys.pop(id(old.contract), None)
        ticker = RemoteTicker(contract)
        self._lines[key] = ticker
        self._keys[id(contract)] = key
        if key not in self._subs:
            self._subs[key] = asyncio.ensure_future(self._subscribe(key))
        self.node.want_line(key, contract)
        return ticker

    def cancelMktData(self, contract: Contract) -> None:
        key = self._keys.pop(id(contract), None)
        if key is None:
            return
        ticker = self._lines.get(key)
        if ticker is not None and ticker.contract is contract:
            del self._lines[key]
            self._unsubscribe(key)
            self.node.drop_line(key)

    # --- the edge's side

    def forget_all(self) -> None:
        """The owner is gone: like IB after a lost socket, forget every subscription
        (the hub asks for its live lines again when an owner is back)."""
        for key in list(self._subs):
            self._unsubscribe(key)
        self._lines.clear()
        self._keys.clear()
        self._dirty.clear()

    def wanted(self) -> dict[LineKey, Contract]:
        return {key: ticker.contract for key, ticker in self._lines.items()}

    def _unsubscribe(self, key: LineKey) -> None:
        pending = self._subs.pop(key, None)
        if pending is None:
            return

        async def unsubscribe() -> None:
            with contextlib.suppress(BaseException):
                sub = await pending
                if sub is not None:
                    await sub.unsubscribe()

        self.node.background(unsubscribe())

    async def _subscribe(self, key: LineKey) -> Subscription | None:
        nc = self.node.nc
        if nc is None:
            return None

        async def on_quote(msg: Msg) -> None:
            ticker = self._lines.get(key)
            if ticker is not None:
                self.deliver(ticker, msg.data)

        try:
            return await nc.subscribe(self.node.subjects.quotes(key), cb=on_quote)
        except (nats.errors.Error, OSError):
            return None

    def deliver(self, ticker: RemoteTicker, quote: bytes) -> None:
        """A quote for the hub; updates that arrive in the same loop turn are handed
        over together, as IB's pendingTickers are."""
        ticker.quote = quote
        self._dirty[ticker] = None
        self._messages += 1
        metrics = self.node.metrics
        metrics.received.inc()
        if self._messages % LAG_SAMPLE_EVERY == 1:
            metrics.lag.observe(quote_lag(quote))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def deliver_key(self, key: LineKey, quote: bytes) -> None:
        ticker = self._lines.get(key)
        if ticker is not None:
            self.deliver(ticker, quote)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        if dirty:
            self.pendingTickersEvent.emit(set(dirty))

    def refuse(self, key: LineKey, code: int, message: str) -> None:
        """The owner could not (or can no longer) serve a line: IB's error, as IB would
        have sent it to the hub."""
        ticker = self._lines.get(key)
        if ticker is not None:
            self.errorEvent.emit(0, code, message, ticker.contract)


def quote_lag(quote: bytes) -> float:
    """Seconds since the owner received this quote from IB (its receive_time)."""
    parsed = market_data_pb2.Quote.FromString(quote)
    sent = parsed.receive_time.seconds + parsed.receive_time.nanos / 1e9
    return max(0.0, time.time() - sent)


class RemoteSession:
    """The edge's stand-in for :class:`~ibgateway_server.ib.session.IbSession` (the
    part the hub, the health check and the connection servicer use)."""

    def __init__(self, settings: Settings, node: EdgeNode) -> None:
        self.settings = settings
        self.node = node
        self.ib = node.feed
        self.read_only = settings.read_only
        self.live_trading_enabled = settings.allow_live_trading
        self.timeout = settings.ibkr_timeout
        self.host = ""
        self.port = 0
        self.client_id = settings.ibkr_client_id
        self._state = SessionState.RECONNECTING
        self._status: SessionStatus | None = None
        self._listeners: list[StateListener] = []

    # --- IbSession's interface

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is SessionState.CONNECTED and self.node.owner_live

    @property
    def accounts(self) -> list[str]:
        return list(self._status.accounts) if self._status else []

    def status(self) -> SessionStatus:
        if self._status is not None and self.node.owner_live:
            return self._status
        return SessionStatus(
            connected=False,
            state=self._state,
            host=self._status.host if self._status else "",
            port=self._status.port if self._status else 0,
            client_id=self.client_id,
            server_version=0,
            accounts=tuple(self.accounts),
            connected_since=None,
            last_error="no gateway owner is live",
            last_error_code=None,
            reconnect_attempts=0,
        )

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    @property
    def state_listener_count(self) -> int:
        return len(self._listeners)

    def require_connected(self) -> None:
        if self.connected:
            return
        if not self.node.owner_live:
            raise no_owner("no owner beacon")
        raise errors.not_connected(f"the gateway owner's IB session is {self._state.value}")

    def budget(self, context: Any = None) -> float:
        limit = self.timeout
        if context is not None:
            remaining = context.time_remaining()
            if remaining is not None:
                limit = min(limit, max(0.0, remaining - deadline_margin(remaining)))
        return limit

    async def qualify(self, contract: Contract) -> Contract:
        # the owner's hub resolves (and caches) it; no client identity is involved: the
        # edge has already authorised its client
        spec = convert.contract_to_proto(contract).SerializeToString()
        data = await self.node.forwarder.call(self.node.subjects.resolve, spec, within=self.timeout)
        return convert.contract_from_proto(common_pb2.Contract.FromString(data))

    def resolve_account(self, account: str, *, field: str = "account") -> str:
        """As IbSession's, over the accounts the owner announced."""
        managed = tuple(self.accounts)
        if account and managed and account not in managed:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "UNKNOWN_ACCOUNT",
                f"account {account!r} is not managed by this login (managed: {', '.join(managed)})",
                metadata={"account": account, "managed_accounts": ",".join(managed)},
                field_violations=[(field, f"unknown account {account!r}")],
            )
        if account:
            return account
        if self.settings.ibkr_account:
            return self.settings.ibkr_account
        if managed:
            return managed[0]
        self.require_connected()
        raise GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION, "NO_ACCOUNT", "TWS reported no managed account"
        )

    async def qualify_details(self, contract: Contract, **_: Any) -> ContractDetails:
        raise GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL", "forwarded to the owner")

    async def start(self) -> None:
        await self.node.start()

    async def stop(self) -> None:
        self.change(
            StateChange(SessionEvent.STOPPED, SessionState.STOPPED, "edge stopping"),
        )
        await self.node.stop()

    # --- mirroring the owner

    def change(self, change: StateChange, status: SessionStatus | None = None) -> None:
        if status is not None:
            self._status = status
        self._state = change.state
        if change.state is not SessionState.CONNECTED and change.event in (
            SessionEvent.DISCONNECTED,
            SessionEvent.RECONNECTING,
            SessionEvent.STOPPED,
        ):
            self.node.feed.forget_all()
        log.info("owner session %s: %s", change.event.value, change.message)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("state listener %r failed", listener)


class EdgeNode:
    """An edge's NATS side: the owner's beacon, the line lease, quote subscriptions."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.cluster)
        self.edge_id = new_node_id("edge")
        self.metrics = EdgeMetrics(registry)
        self.feed = QuoteFeed(self)
        self.session = RemoteSession(settings, self)
        self.mirror = EventMirror(lambda: self.nc, self.subjects)
        self.mirror.on_ready = lambda: self.on_ready_change()
        self.session.add_state_listener(self.mirror.session_changed)
        self.nc: NatsClient | None = None
        self.forwarder: Forwarder = None  # type: ignore[assignment]  # set in start()
        self.owner_id = ""
        self.revision = 0  # the newest lease revision seen (stale owners are ignored)
        self._beacon_number = 0
        self._last_beacon = 0.0
        self._nats_up = False
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._want_now: dict[LineKey, Contract] = {}
        self._want_kick = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()
        self.on_ready_change: Callable[[], None] = lambda: None

    def background(self, work: Any) -> None:
        """Run a coroutine on its own (kept referenced until it ends; errors ignored)."""
        future = asyncio.ensure_future(work)
        self._background.add(future)
        future.add_done_callback(self._background_done)

    def _background_done(self, future: asyncio.Future[Any]) -> None:
        self._background.discard(future)
        if not future.cancelled():
            future.exception()

    @property
    def owner_live(self) -> bool:
        return (
            self._nats_up
            and bool(self.owner_id)
            and time.monotonic() - self._last_beacon < self.settings.owner_lease_seconds
        )

    @property
    def ready(self) -> bool:
        """NATS up, an owner live (whatever its IB session does) and the order events
        caught up with JetStream."""
        return self.owner_live and self.mirror.ready

    async def start(self) -> None:
        self.nc = await connect(self.settings.nats_url, name=self.edge_id, on_change=self._on_nats)
        self._nats_up = True
        self.forwarder = Forwarder(self.nc, self.subjects, revision=lambda: self.revision)
        self._subs = [
            await self.nc.subscribe(self.subjects.beacon, cb=self._on_beacon),
            await self.nc.subscribe(self.subjects.line_status, cb=self._on_line_status),
        ]
        self.mirror.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch_owner(), name="edge-owner-watch"),
            loop.create_task(self._renew_lines(), name="edge-line-lease"),
        ]
        log.info(
            "edge %s on NATS %s (cluster %s)",
            self.edge_id,
            self.settings.nats_url,
            self.settings.cluster,
        )

    async def stop(self) -> None:
        await self.mirror.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self._send_demand({}, full=True, within=0.5)
            with contextlib.suppress(Exception):
                await self.nc.close()

    def _on_nats(self, up: bool) -> None:
        self._nats_up = up
        if not up:
            self._owner_lost("NATS connection lost")
        self.on_ready_change()

    # --- the owner

    async def _on_beacon(self, msg: Msg) -> None:
        beacon = json.loads(msg.data)
        revision = int(beacon["revision"])
        if revision < self.revision:
            return  # a stale owner that has not noticed it lost the lease
        status = wire.status_from_json(beacon["status"])
        was_live = self.owner_live
        new_owner = beacon["owner"] != self.owner_id or revision != self.revision
        self.revision = revision
        self._last_beacon = time.monotonic()
        self.mirror.adopt_epoch(str(beacon.get("order_epoch", "")))
        session = self.session
        if new_owner or not was_live:
            self.owner_id = beacon["owner"]
            self._beacon_number = int(beacon["number"])
            self.metrics.owner_live.set(1)
            log.info("owner %s is live (lease revision %d)", self.owner_id, revision)
            event = SessionEvent.CONNECTED if status.connected else SessionEvent.RECONNECTING
            session.change(
                StateChange(
                    event,
                    status.state,
                    f"gateway owner {self.owner_id} serving",
                    resubscribe=True,
                ),
                status,
            )
            self._want_kick.set()  # tell the new owner every line at once
            self.on_ready_change()
            return
        number = int(beacon["number"])
        change = beacon.get("change")
        if change is not None and number > self._beacon_number:
            self._beacon_number = number
            session.change(wire.change_from_json(change), status)
        else:
            session._status = status

    def _owner_lost(self, why: str) -> None:
        if not self.owner_id:
            return
        log.warning("gateway owner %s lost (%s)", self.owner_id, why)
        self.owner_id = ""
        self.metrics.owner_live.set(0)
        self.session.change(
            StateChange(
                SessionEvent.RECONNECTING,
                SessionState.RECONNECTING,
                f"gateway owner lost ({why}); waiting for a standby to take over",
            )
        )
        self.on_ready_change()

    async def _watch_owner(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.owner_id and not self.owner_live:
                self._owner_lost("no beacon")

    async def _on_line_status(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError, KeyError):
            status = json.loads(msg.data)
            key = _key_of(status["line"], self.feed.wanted())
            if key is not None:
                self.feed.refuse(key, int(status["code"]), str(status["message"]))

    # --- line demand

    def want_line(self, key: LineKey, contract: Contract) -> None:
        self._want_now[key] = contract
        self._want_kick.set()

    def drop_line(self, key: LineKey) -> None:
        self._want_now.pop(key, None)
        if self.nc is None or not self.owner_live:
            return
        body = json.dumps({"edge": self.edge_id, "lines": [line_token(key)]}).encode()
        self.background(self.nc.publish(self.subjects.lines_drop, body))

    async def _renew_lines(self) -> None:
        """New lines at once; every line each third of the lease (the renewal)."""
        interval = self.settings.line_lease_seconds / 3
        next_full = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._want_kick.wait(), interval)
            self._want_kick.clear()
            if not self.owner_live:
                continue
            full = time.monotonic() >= next_full
            lines = self.feed.wanted() if full else dict(self._want_now)
            self._want_now.clear()
            if not lines and not full:
                continue
            try:
                await self._send_demand(lines, full=full, within=2.0)
                if full:
                    next_full = time.monotonic() + interval
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.debug("line demand not delivered: %r", exc)
                self._want_now.update(lines)  # try again

    async def _send_demand(
        self, lines: dict[LineKey, Contract], *, full: bool, within: float
    ) -> None:
        assert self.nc is not None
        body = {
            "edge": self.edge_id,
            "full": full,
            "lines": {
                line_token(key): wire.contract_to_text(convert.contract_to_proto(contract))
                for key, contract in lines.items()
            },
        }
        reply = await self.nc.request(
            self.subjects.lines_want, json.dumps(body).encode(), timeout=within
        )
        results = json.loads(reply.data)["lines"]
        for token, result in results.items():
            key = _key_of(token, lines)
            if key is None:
                continue
            if result.get("ok"):
                quote = wire.bytes_from_text(result.get("quote"))
                if quote:
                    self.feed.deliver_key(key, quote)
            else:
                self.feed.refuse(key, int(result.get("code") or 0), str(result.get("message")))


def _key_of(token: str, keys: Any) -> LineKey | None:
    try:
        key = parse_line_token(token)
    except ValueError:
        return None
    return key if key in keys else None


__all__ = ["EdgeNode", "PassThroughEncoder", "QuoteFeed", "RemoteSession", "common_pb2"]
