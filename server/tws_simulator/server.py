"""The TCP side of the simulator: handshake, framing, client sessions and request dispatch.

:class:`Simulator` is the running application: it owns the universe, the market, the
account and the faults, accepts connections, and routes each request to the handler its
message id is registered with. Feature modules (session, contracts, market data, account
feed, orders) register their handlers at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime
from types import TracebackType
from typing import Any

from . import wire
from .account import Account
from .clock import EASTERN, SimClock
from .config import SimulatorConfig
from .dispatch import DispatchTable, Handler, RequestError, request_id
from .faults import PACING_VIOLATION, Faults
from .market import Market
from .message_ids import In, Out
from .universe import Universe
from .versions import ADVANCED_ORDER_REJECT, MIN_SERVER_VERSION
from .wire import HANDSHAKE_PREFIX

log = logging.getLogger(__name__)

ConnectionListener = Callable[["ClientConnection"], None]

# A client that stops reading gets cut off rather than growing our memory without bound.
MAX_WRITE_BUFFER = 64 * 1024 * 1024

# TWS's "out of date" error, for requests the simulator does not implement.
UNSUPPORTED_REQUEST = (503, "The TWS is out of date and must be upgraded.")


def parse_version_range(text: str) -> tuple[int, int] | None:
    """Read "v157..176" (optionally followed by connect options) or "v176"."""
    spec = text.split(" ", 1)[0]
    if not spec.startswith("v"):
        return None
    low, sep, high = spec[1:].partition("..")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        return None
    return (lo, hi) if 0 < lo <= hi else None


def connection_time_text(now: float | None = None) -> str:
    """The connection time TWS sends in its handshake answer, e.g. "20231203 19:21:41 EST"."""
    moment = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    return f"{moment:%Y%m%d %H:%M:%S} {moment.tzname() or 'UTC'}"


class ClientConnection:
    """One API client socket: its negotiated version, client id and outgoing messages."""

    def __init__(
        self,
        sim: Simulator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ) -> None:
        self.sim = sim
        self.number = number  # connection serial, for logs
        self.client_id = -1  # set by startApi
        self.server_version = 0  # set by the handshake
        self.api_started = False
        self.closed = False
        self.arrivals: deque[float] = deque()  # message times within the last second
        self.rate_violations = 0
        self._reader = reader
        self._writer = writer  # kept alive with the session
        self._transport = writer.transport
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._close_when_flushed = False
        # Writes within one loop iteration are joined into one socket write (ticks come in
        # bursts: one per instrument per market step).
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._write_scheduled = False
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"<client #{self.number} id={self.client_id} v{self.server_version} {self.peer}>"

    # -- sending -------------------------------------------------------------------------

    def send(self, *fields: object) -> None:
        """Format, frame and send one message (held back if a delay fault is active)."""
        self.send_raw(wire.encode_message(fields))

    def send_raw(self, data: bytes) -> None:
        """Send already framed bytes (one or several messages)."""
        if self.closed:
            return
        delay = self.sim.faults.delay
        if delay <= 0 and not self._delayed:
            self._write(data)
            return
        self._delayed.append((self._loop.time() + delay, data))
        if self._flusher is None:
            self._flusher = self._loop.create_task(
                self._flush_delayed(), name=f"delay-{self.number}"
            )

    def unsent_bytes(self) -> int:
        """Bytes sent but not yet taken by the client's socket (buffered here)."""
        return self._transport.get_write_buffer_size() + self._out_bytes

    def send_error(self, req_id: int, code: int, message: str, advanced_json: str = "") -> None:
        """An error/info message; its layout follows the negotiated version (see 2104 capture)."""
        fields: list[object] = [Out.ERR_MSG, 2, req_id, code, message]
        if self.server_version >= ADVANCED_ORDER_REJECT:
            fields.append(advanced_json)
        self.send(*fields)

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._flush_writes)

    def _flush_writes(self) -> None:
        self._write_scheduled = False
        self._out_bytes = 0
        if self.closed or not self._out:
            self._out.clear()
            return
        data = b"".join(self._out)
        self._out.clear()
        self._transport.write(data)
        if self._transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("%r does not read its messages: disconnecting it", self)
            self.close()

    async def _flush_delayed(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._delayed and not self.closed:
                due, data = self._delayed[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._delayed.popleft()
                if not self.closed:
                    self._write(data)
            if self._close_when_flushed and not self.closed:
                self._flush_writes()
                self.closed = True
                self._transport.close()
        finally:
            self._flusher = None

    def close_after_flush(self) -> None:
        """Close once everything already sent has been written (e.g. after error 326)."""
        if self._delayed:
            self._close_when_flushed = True
        elif not self.closed:
            self._flush_writes()
            self.closed = True
            self._transport.close()

    def close(self) -> None:
        """Drop the connection now (messages not yet written are lost, as with a crash)."""
        if self.closed:
            return
        self.closed = True
        self._delayed.clear()
        if self._flusher is not None:
            self._flusher.cancel()
        self._transport.abort()

    # -- receiving -----------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the session: handshake, then one request at a time until the socket closes."""
        try:
            if not await self._handshake():
                return
            while not self.closed:
                header = await self._reader.readexactly(4)
                length = wire.read_length(header)
                if length > wire.MAX_FRAME:
                    log.warning("%r sent a %d-byte frame: disconnecting it", self, length)
                    self.send_error(-1, 507, "Bad message length")
                    self.close_after_flush()
                    break
                payload = await self._reader.readexactly(length)
                await self.sim.dispatch(self, wire.split_fields(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed_by_peer()

    def closed_by_peer(self) -> None:
        """The session is over (socket closed, or we stopped reading): release the client."""
        if not self.closed and not self._close_when_flushed:
            self.closed = True
            self._delayed.clear()
            self._out.clear()
            self._transport.close()
        self.sim.forget(self)

    async def _handshake(self) -> bool:
        prefix = await self._reader.readexactly(len(HANDSHAKE_PREFIX))
        if prefix != HANDSHAKE_PREFIX:
            log.warning("%r did not start with the API handshake (%r): closing", self, prefix)
            return False
        length = wire.read_length(await self._reader.readexactly(4))
        if length > 1024:
            log.warning("%r sent an oversized version range: closing", self)
            return False
        text = (await self._reader.readexactly(length)).decode("ascii", "replace")
        offered = parse_version_range(text)
        low_served = MIN_SERVER_VERSION
        high_served = self.sim.config.max_server_version
        if offered is None:
            log.warning("%r sent an unreadable version range %r: refusing", self, text)
            self._refuse(f"Unreadable API version range {text!r}")
            return False
        low, high = offered
        version = min(high, high_served)
        if version < max(low, low_served):
            log.warning("%r offers API versions %d..%d: refusing", self, low, high)
            self._refuse(
                f"Unsupported API version range v{low}..{high}: this server speaks "
                f"v{low_served}..{high_served}. Upgrade or downgrade the client."
            )
            return False
        self.server_version = version
        self.send(version, connection_time_text())
        log.info("%r connected (client offers v%d..%d)", self, low, high)
        return True

    def _refuse(self, message: str) -> None:
        # No version was agreed: the shortest error layout every client can read.
        self.send(Out.ERR_MSG, 2, -1, 503, message)
        self.close_after_flush()


class Simulator:
    """A TWS: listens for API clients and serves them from a simulated market and account.

    Use it as an async context manager (``async with Simulator(config) as sim``), or
    ``await start()`` / ``await stop()``. It runs on the caller's event loop and starts no
    threads, so it can be embedded in another asyncio application.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        # The simulated time: order expiry, auctions and trading hours follow it.
        self.clock = SimClock(self.config.clock_start)
        # options and futures are listed from the simulated clock's date (clock_start)
        listing_day = datetime.fromtimestamp(self.clock.now(), EASTERN).date()
        self.universe = Universe(self.config.instruments, today=listing_day)
        self.market = Market(
            self.universe,
            seed=self.config.seed,
            tick_interval=self.config.tick_interval,
            step_size=self.config.step_size,
            clock=self.clock.now,
        )
        self.account = Account(
            self.config.account_id,
            self.universe,
            self.market,
            cash=self.config.cash,
            positions=self.config.positions,
        )
        self.faults = Faults(self)
        self.clients: list[ClientConnection] = []
        self.next_order_id = self.config.first_order_id  # kept ahead of every order id seen
        self.handlers = DispatchTable()  # message id → handler, filled by the feature modules
        self._disconnect_listeners: list[ConnectionListener] = []
        self._data_lost_listeners: list[Callable[[], None]] = []
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._numbers = itertools.count(1)
        self._host = self.config.host
        self._port = self.config.port
        self._install_features()

    def _install_features(self) -> None:
        # Each feature module registers its handlers on our dispatch table; they import
        # nothing from here at run time (only types), so the arrows point one way.
        from . import account_feed, contracts, depth, historical, market_data, orders, session

        session.install(self)
        contracts.install(self)
        self.market_data = market_data.install(self)
        self.history = historical.install(self)
        self.depth = depth.install(self)
        self.account_feed = account_feed.install(self)
        orders.install(self)

    # -- wiring for feature modules ------------------------------------------------------

    def register(self, msg_id: int, handler: Handler) -> None:
        """Serve requests with this message id with ``handler`` (replacing any earlier one)."""
        self.handlers.register(msg_id, handler)

    def add_disconnect_listener(self, fn: ConnectionListener) -> None:
        """Call ``fn(conn)`` when a client connection ends, for any reason."""
        self._disconnect_listeners.append(fn)

    def add_data_lost_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when connectivity comes back with data lost (1101)."""
        self._data_lost_listeners.append(fn)

    def add_background(self, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``factory()`` as a task while the simulator runs (cancelled on stop)."""
        self._background.append(factory)
        if self._server is not None:
            self.spawn(factory(), name=getattr(factory, "__name__", "background"))

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """A task the simulator keeps a reference to, logs if it fails and cancels on stop."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task %s failed", task.get_name(), exc_info=task.exception())

    def reserve_order_id(self, order_id: int) -> None:
        """An order id was used: nextValidId answers stay above it."""
        self.next_order_id = max(self.next_order_id, order_id + 1)

    def client(self, client_id: int) -> ClientConnection | None:
        """The connected client with this client id, if any."""
        for conn in self.clients:
            if conn.api_started and conn.client_id == client_id:
                return conn
        return None

    def broadcast_error(self, code: int, message: str, req_id: int = -1) -> None:
        for conn in list(self.clients):
            if conn.api_started:
                conn.send_error(req_id, code, message)

    def drop_market_data_subscriptions(self) -> None:
        for fn in list(self._data_lost_listeners):
            fn()

    # -- dispatch ------------------------------------------------------------------------

    def _over_message_rate(self, conn: ClientConnection) -> bool:
        """IB's 50 messages a second per client (when configured): a sliding window."""
        limit = self.config.max_messages_per_second
        if limit <= 0:
            return False
        now = time.monotonic()
        arrivals = conn.arrivals
        arrivals.append(now)
        while arrivals and now - arrivals[0] >= 1.0:
            arrivals.popleft()
        return len(arrivals) > limit

    async def dispatch(self, conn: ClientConnection, fields: list[str]) -> None:
        """Serve one request; nothing a client sends can take the simulator down."""
        if not fields:
            log.warning("%r sent an empty message", conn)
            return
        try:
            msg_id = int(fields[0])
        except ValueError:
            log.warning("%r sent a message with a bad id %r", conn, fields[0])
            conn.send_error(-1, 321, f"Error validating request.-'{fields[0]}' : cause - bad id")
            return
        args = fields[1:]
        if self._over_message_rate(conn):
            conn.rate_violations += 1
            code, _ = PACING_VIOLATION
            limit = self.config.max_messages_per_second
            conn.send_error(
                request_id(msg_id, args),
                code,
                f"Max rate of messages per second has been exceeded:max={limit} "
                f"rec={len(conn.arrivals)} (1)",
            )
            return
        if self.faults.pacing_violations > 0 and msg_id != In.START_API:
            self.faults.pacing_violations -= 1
            conn.send_error(request_id(msg_id, args), *PACING_VIOLATION)
            return
        handler = self.handlers.get(msg_id)
        if handler is None:
            log.warning("%r sent unsupported message %d: %s", conn, msg_id, args[:6])
            # 503 (what a client gets for a request its TWS is too old for) fails the
            # waiting call at once in ib_insync and ib_async; 321 is only a warning to
            # ib_async, whose call would wait out its timeout.
            code, text = UNSUPPORTED_REQUEST
            conn.send_error(
                request_id(msg_id, args),
                code,
                f"{text} The simulator does not support request type {_request_name(msg_id)}",
            )
            return
        try:
            result = handler(conn, args)
            if inspect.isawaitable(result):
                await result
        except RequestError as exc:
            req_id = exc.req_id if exc.req_id is not None else request_id(msg_id, args)
            conn.send_error(req_id, exc.code, exc.message)
        except Exception as exc:
            log.exception("%r: handler for message %d failed on %s", conn, msg_id, args[:12])
            conn.send_error(
                request_id(msg_id, args),
                321,
                f"Error validating request.-'{msg_id}' : cause - {type(exc).__name__}: {exc}",
            )

    # -- connections ---------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ClientConnection(self, reader, writer, next(self._numbers))
        self.clients.append(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.serve()
        except Exception:
            log.exception("%r: session failed", conn)
        finally:
            conn.closed_by_peer()
            if task is not None:
                self._tasks.discard(task)

    def forget(self, conn: ClientConnection) -> None:
        """Called once a connection is gone: subscriptions of that client end."""
        if conn not in self.clients:
            return
        self.clients.remove(conn)
        log.info("%r disconnected", conn)
        for fn in list(self._disconnect_listeners):
            try:
                fn(conn)
            except Exception:
                log.exception("disconnect listener %r failed", fn)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def is_listening(self) -> bool:
        return self._server is not None

    async def start_listening(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._on_connect, self._host, self._port)
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = sockname[0], sockname[1]

    def stop_listening(self) -> None:
        """Close the listening socket (new connections are refused); clients stay connected."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def start(self) -> None:
        await self.start_listening()
        self.market.start()
        for factory in self._background:
            self.spawn(factory(), name=getattr(factory, "__name__", "background"))
        log.info("TWS simulator listening on %s:%d", self._host, self._port)

    async def stop(self) -> None:
        self.faults.cancel_pending()
        self.stop_listening()
        for conn in list(self.clients):
            conn.close()
        await self.market.stop()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _request_name(msg_id: int) -> str:
    try:
        return In(msg_id).name
    except ValueError:
        return str(msg_id)
