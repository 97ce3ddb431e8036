"""QuoteHub: one IB market-data line per contract, fanned out to every quote consumer.

How it fits together:

* A :class:`Line` is one IB subscription (``reqMktData``) for one (contract, market data
  type). Lines are reference counted by their consumers (streams and snapshot requests),
  linger briefly once unused, and count against the line budget
  (``IBGW_QUOTE_LINE_BUDGET``). An IB update only marks the line changed; its ``Quote``
  bytes are built when a stream sends them (once per change that is actually sent, then
  shared by every stream), so updates that a newer one replaces before any send cost
  no encoding.
* A :class:`QuoteStream` is one StreamQuotes call. Streams asking for the same set of lines
  share a :class:`Group`: the group keeps a bounded log of which lines changed, so a
  stream's next message is "the latest quote of every line changed since my last send",
  with the number of updates it skipped (conflation). Streams that are at the same
  position reuse the same assembled message bytes. A stalled stream holds nothing but a
  position in that log (the log is trimmed; a stream that fell behind the trimmed part
  is served from each line's last-change position), so it never grows memory or blocks
  the hub or the others.
* Each stream has a send window (``send_window`` in the request, default
  :data:`DEFAULT_SEND_WINDOW`): it sends at most one quote message per window. The cost of
  gRPC is per message, not per quote, so under IB's spread-out ticks this turns many
  one-quote messages into few full ones; a quote that finds the stream quiet for a
  window still goes out at once. A window's end is rounded up to a quarter of it (at
  least 1 ms), so streams that sent at about the same time are due at the same moment:
  one shared timer wakes them and they send together (fewer timers, fewer socket
  writes).
* Connection changes of the IB session pause every line (streams are told, per contract
  and with a connection-state message), and a reconnect re-subscribes every live line.
* A contract refused for lack of a line (LIMIT_REACHED: the gateway's budget, or IB's own
  limit, error 101) stays waiting in its stream. When a line is freed (dropped after its
  linger) or the session reconnects, the waiting streams are offered lines in the order
  they started waiting; the stream then reports the contract ACTIVE and its quotes flow.

Everything runs on the event loop of the gRPC server; no locks, no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.errors import GatewayError, deadline_exceeded
from ibgateway_server.ib import convert
from ibgateway_server.ib.failures import from_exception
from ibgateway_server.ib.insync import Contract, Ticker
from ibgateway_server.market_data.convert import (
    QuoteEncoder,
    market_data_type_to_ib,
    quote_batch_message,
    quote_element,
)

if TYPE_CHECKING:
    from ibgateway_server.ib.session import IbSession, StateChange

log = logging.getLogger(__name__)

ACTIVE: int = market_data_pb2.SUBSCRIPTION_STATE_ACTIVE
NOT_FOUND: int = market_data_pb2.SUBSCRIPTION_STATE_NOT_FOUND
AMBIGUOUS: int = market_data_pb2.SUBSCRIPTION_STATE_AMBIGUOUS
LIMIT_REACHED: int = market_data_pb2.SUBSCRIPTION_STATE_LIMIT_REACHED
PERMISSION_DENIED: int = market_data_pb2.SUBSCRIPTION_STATE_PERMISSION_DENIED
FAILED: int = market_data_pb2.SUBSCRIPTION_STATE_FAILED
PAUSED: int = market_data_pb2.SUBSCRIPTION_STATE_PAUSED

# IB error codes about a market-data request and the subscription state they mean.
# Anything else addressed to a line's request id ends the line as FAILED.
_LINE_ERROR_STATES: dict[int, int] = {
    101: LIMIT_REACHED,  # max number of tickers has been reached
    200: NOT_FOUND,  # no security definition
    354: PERMISSION_DENIED,  # requested market data is not subscribed
    10089: PERMISSION_DENIED,
    10090: PERMISSION_DENIED,
    10168: PERMISSION_DENIED,
    10186: PERMISSION_DENIED,
}
# IB refusals that mean "no line free": the consumers keep waiting for one.
_LINE_LIMIT_CODES = frozenset({101})
# Informational codes about a line that do not stop it (e.g. 10167: "displaying delayed
# market data" — quotes keep coming, as delayed data).
_LINE_NOTICES = frozenset({10167})
# Codes that are not about the line's request at all.
_IGNORED_CODES = frozenset({300, 1100, 1101, 1102, 2100, 2119})

# Generic tick 233 (RT volume) carries IB's own millisecond trade timestamp, which
# becomes each quote's tick_time; currency pairs have no trades, hence no RT volume.
_RT_VOLUME_TICKS = "233"


def _generic_ticks(contract: Contract) -> str:
    return "" if contract.secType == "CASH" else _RT_VOLUME_TICKS


DEFAULT_LINGER = 1.0  # seconds an unused line is kept for the next consumer
DEFAULT_SEND_WINDOW = 0.010  # seconds between two quote messages of one stream
MAX_SEND_WINDOW = 1.0
MAX_CONNECTION_EVENTS = 16  # connection changes kept for a stream that does not read
_QUALIFY_CACHE_SIZE = 10_000


class LineState:
    """The life of one IB subscription."""

    PENDING = "pending"  # requested, no data yet
    ACTIVE = "active"  # data flowing
    PAUSED = "paused"  # IB connection down; re-subscribed when it returns
    FAILED = "failed"  # IB refused it; holders keep the dead line until they leave


class Line:
    """One IB market-data subscription, shared by every consumer of that contract."""

    __slots__ = (
        "_complete",
        "_element",
        "_quote",
        "_source",
        "_stale",
        "contract",
        "contract_pb",
        "encoder",
        "encodes",
        "groups",
        "ib_code",
        "key",
        "linger",
        "md_type",
        "message",
        "refs",
        "state",
        "statuses",
        "ticker",
        "waiters",
    )

    def __init__(
        self,
        key: tuple[int, str, int],
        contract: Contract,
        md_type: int,
        encoder: Callable[[common_pb2.Contract], QuoteEncoder] = QuoteEncoder,
    ) -> None:
        self.key = key
        # Our own copy: ib_insync keys tickers by the contract object's identity, and a
        # live and a delayed line of the same instrument must not share a ticker.
        self.contract = copy.copy(contract)
        self.contract_pb = convert.contract_to_proto(contract)
        self.md_type = md_type
        self.encoder = encoder(self.contract_pb)
        self.ticker: Ticker | None = None
        self._source: Ticker | None = None  # the ticker of the newest update
        self._stale = False  # _source changed since _quote was built
        self._quote: bytes | None = None  # the serialized Quote (when not stale)
        self._element: bytes | None = None  # the same as a QuoteBatch.quotes element
        self.encodes = 0
        self.refs = 0
        self.groups: list[Group] = []
        self.state = LineState.PENDING
        self.message = ""
        self.ib_code = 0
        self.linger: asyncio.TimerHandle | None = None
        self.waiters: list[asyncio.Future[None]] = []
        self.statuses: dict[tuple[int, int, str, int], bytes] = {}
        self._complete = False

    def __repr__(self) -> str:
        return f"<Line {self.contract_pb.symbol or self.key[0]} {self.state} refs={self.refs}>"

    @property
    def alive(self) -> bool:
        return self.state != LineState.FAILED

    @property
    def complete(self) -> bool:
        """Whether the quote has a market (bid and ask, or last) and the session close."""
        return self._complete

    @property
    def quote(self) -> bytes | None:
        """The serialized Quote of the newest update (None before any data)."""
        if self._stale:
            self._encode()
        return self._quote

    @property
    def element(self) -> bytes | None:
        """:attr:`quote` as one element of ``QuoteBatch.quotes``."""
        if self._stale:
            self._encode()
        return self._element

    @property
    def has_data(self) -> bool:
        return self._quote is not None or self._stale

    def update(self, ticker: Ticker) -> None:
        """An IB update: only remembered here, encoded when a send needs it."""
        self._source = ticker
        self._stale = True
        if not self._complete:
            self._complete = _is_complete(ticker)
            if self._complete and self.waiters:
                self.wake_waiters()

    def _encode(self) -> None:
        ticker = self._source
        self._stale = False
        if ticker is None:
            return
        quote = self.encoder.encode(ticker, ticker.time or datetime.now(UTC))
        self._quote = quote
        self._element = quote_element(quote)
        self.encodes += 1

    def settle(self) -> None:
        """Encode a pending update now (before IB's ticker object is let go)."""
        if self._stale:
            self._encode()

    def status_message(self, index: int, state: int, message: str, ib_code: int) -> bytes:
        """A SubscriptionStatus message about this line (cached: every stream that asks
        for the same contracts at the same positions gets the same bytes)."""
        key = (index, state, message, ib_code)
        data = self.statuses.get(key)
        if data is None:
            if len(self.statuses) >= 64:
                self.statuses.clear()
            data = status_message(index, self.contract_pb, state, message, ib_code)
            self.statuses[key] = data
        return data

    def wake_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def status_fields(self) -> tuple[int, str, int]:
        """(SubscriptionState, message, ib_code) for a status message about this line."""
        if self.state == LineState.FAILED:
            state = _LINE_ERROR_STATES.get(self.ib_code, FAILED)
        else:
            state = PAUSED if self.state == LineState.PAUSED else ACTIVE
        return state, self.message, self.ib_code


def _valid(value: float) -> bool:
    return value == value and value != -1.0


def _is_complete(ticker: Ticker) -> bool:
    market = (_valid(ticker.bid) and _valid(ticker.ask)) or _valid(ticker.last)
    return market and _valid(ticker.close)


class Group:
    """The streams that watch exactly the same lines, and the log of those lines' updates.

    ``on_waiting(group)`` is called (once until :meth:`dispatch`) when an update arrives
    while some member waits for one; the hub then dispatches after the IB event. A member
    whose send window has not elapsed is handed to ``defer`` instead of being woken.
    """

    __slots__ = (
        "_cache",
        "_cache_end",
        "_defer",
        "_on_waiting",
        "_snapshot",
        "base",
        "cap",
        "end",
        "idle",
        "key",
        "last_pos",
        "lines",
        "log",
        "members",
        "queued",
    )

    def __init__(
        self,
        key: frozenset[Line],
        on_waiting: Callable[[Group], None],
        *,
        min_cap: int = 256,
        defer: Callable[[QuoteStream], None] | None = None,
    ) -> None:
        self._on_waiting = on_waiting
        self._defer = defer
        self.key = key
        self.lines = tuple(key)
        self.log: list[Line] = []
        self.base = 0  # absolute position of log[0]
        self.end = 0  # absolute position after the last update
        self.cap = max(min_cap, 4 * len(self.lines))
        self.last_pos: dict[Line, int] = {}
        self.members: set[QuoteStream] = set()
        self.idle: dict[QuoteStream, None] = {}  # members waiting for the next update
        self.queued = False
        self._cache: dict[int, tuple[bytes, int]] = {}
        self._cache_end = -1
        self._snapshot: tuple[int, bytes, int] | None = None

    def push(self, line: Line) -> None:
        log_ = self.log
        log_.append(line)
        self.last_pos[line] = self.end
        self.end += 1
        if len(log_) >= 2 * self.cap:
            drop = len(log_) - self.cap
            del log_[:drop]
            self.base += drop
        if self.idle and not self.queued:
            self.queued = True
            self._on_waiting(self)

    def dispatch(self) -> None:
        self.queued = False
        idle, self.idle = self.idle, {}
        defer = self._defer
        now = -1.0
        for member in idle:
            member._idle = False
            if defer is not None and member.next_quote_at > 0:
                if now < 0:
                    now = member._loop.time()
                if member.next_quote_at > now:
                    defer(member)  # its window is still open: woken when it closes
                    continue
            member.wake()

    def batch_from(self, pos: int) -> tuple[bytes, int]:
        """The message with every line changed at or after ``pos`` (once, newest quote)
        and how many quotes it holds."""
        end = self.end
        if self._cache_end != end:
            self._cache.clear()
            self._cache_end = end
        else:
            cached = self._cache.get(pos)
            if cached is not None:
                return cached
        if pos >= self.base:
            entries = self.log[pos - self.base :]
            distinct: Sequence[Line] = list(dict.fromkeys(entries))
            conflated = len(entries) - len(distinct)
        else:  # fell behind the kept log: use each line's last-change position
            distinct = [line for line, at in self.last_pos.items() if at >= pos]
            conflated = end - pos - len(distinct)
        # (a line in the log has been updated, so its element is set)
        message = quote_batch_message([line.element or b"" for line in distinct], conflated)
        result = (message, len(distinct))
        self._cache[pos] = result
        return result

    def snapshot(self) -> tuple[bytes, int] | None:
        """Every line's current quote, for a stream's first message (and their count)."""
        if self._snapshot is not None and self._snapshot[0] == self.end:
            return self._snapshot[1], self._snapshot[2]
        elements = [e for e in (line.element for line in self.lines) if e is not None]
        if not elements:
            return None
        message = quote_batch_message(elements)
        self._snapshot = (self.end, message, len(elements))
        return message, len(elements)


@dataclass(frozen=True)
class HubStats:
    """The hub's public state (for tests, metrics and the benchmark)."""

    lines: int  # IB subscriptions held (active, pending, paused or lingering)
    active_lines: int  # of which have at least one consumer
    streams: int
    groups: int
    snapshot_waiters: int
    sweeper_running: bool
    log_entries: int  # update-log entries kept over all groups (bounded per group)
    updates: int  # quote updates received from IB since the hub started
    max_lag: int  # updates the slowest stream has not been sent yet (conflated when it is)
    waiting: int  # contracts of open streams waiting for a line (LIMIT_REACHED)
    quote_messages: int  # quote messages handed to gRPC since the hub started
    quotes_sent: int  # quotes in those messages
    encodes: int  # Quote encodings (at most one per update that some stream sends)


class QuoteHub:
    """Owns every market-data line of the gateway and every quote stream."""

    def __init__(
        self,
        session: IbSession,
        *,
        line_budget: int = 100,
        heartbeat_seconds: float = 5.0,
        linger: float = DEFAULT_LINGER,
        send_window: float = DEFAULT_SEND_WINDOW,
        encoder: Callable[[common_pb2.Contract], QuoteEncoder] = QuoteEncoder,
    ) -> None:
        self.session = session
        self.send_window = send_window
        # how a line turns its source's updates into Quote bytes (an edge of a cluster
        # gets them already encoded from the owner)
        self.encoder = encoder
        # called with each line just updated (the owner of a cluster publishes it)
        self.update_listener: Callable[[Line], None] | None = None
        self.ib = session.ib
        self.line_budget = line_budget
        self.heartbeat_seconds = heartbeat_seconds
        self.linger = linger
        self._lines: dict[tuple[int, str, int], Line] = {}
        self._by_ticker: dict[Ticker, Line] = {}
        self._by_contract: dict[int, Line] = {}  # id(line.contract) → line, for IB errors
        self._groups: dict[frozenset[Line], Group] = {}
        self._streams: set[QuoteStream] = set()
        self._dirty: list[Group] = []
        self._qualified: OrderedDict[bytes, Contract] = OrderedDict()
        self._qualifying: dict[bytes, asyncio.Future[Contract]] = {}
        self._md_type_sent: int | None = None
        self._connection_state: int = common_pb2.CONNECTION_STATE_CONNECTED
        self._sweeper: asyncio.Task[None] | None = None
        self._snapshot_waiters = 0
        self._updates = 0
        self._started = False
        self._closed = False
        self._remove_listener: Callable[[], None] | None = None
        # streams with contracts waiting for a line; served by QuoteStream.wait_ticket
        self._waiting: set[QuoteStream] = set()
        self._wait_tickets = 0
        # streams whose send window is open, by the millisecond it closes (one timer each)
        self._deferred: dict[float, dict[QuoteStream, None]] = {}
        self.quote_messages = 0
        self.quotes_sent = 0
        self._encodes = 0  # of lines already dropped

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen to IB's tickers, errors and the session's state. Idempotent."""
        if self._started:
            return
        self._started = True
        self._closed = False
        self.ib.pendingTickersEvent += self._on_pending_tickers
        self.ib.errorEvent += self._on_ib_error
        self._remove_listener = self.session.add_state_listener(self._on_state_change)
        if not self.session.connected:
            self._connection_state = common_pb2.CONNECTION_STATE_DISCONNECTED

    async def close(self) -> None:
        """End every stream, cancel every line and stop listening."""
        self._closed = True
        self._waiting.clear()
        for stream in list(self._streams):
            stream.end()
        for line in list(self._lines.values()):
            self._drop_line(line)
        if self._started:
            self.ib.pendingTickersEvent -= self._on_pending_tickers
            self.ib.errorEvent -= self._on_ib_error
            if self._remove_listener is not None:
                self._remove_listener()
            self._started = False
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    def stats(self) -> HubStats:
        return HubStats(
            lines=len(self._lines),
            active_lines=sum(1 for line in self._lines.values() if line.refs > 0),
            streams=len(self._streams),
            groups=len(self._groups),
            snapshot_waiters=self._snapshot_waiters,
            sweeper_running=self._sweeper is not None and not self._sweeper.done(),
            log_entries=sum(len(group.log) for group in self._groups.values()),
            updates=self._updates,
            max_lag=max(
                (s.group.end - s.pos for s in self._streams if s.group is not None), default=0
            ),
            waiting=sum(len(s.waiting) for s in self._waiting),
            quote_messages=self.quote_messages,
            quotes_sent=self.quotes_sent,
            encodes=self._encodes + sum(line.encodes for line in self._lines.values()),
        )

    # ---------------------------------------------------------------- contracts

    def cached(self, spec: common_pb2.Contract) -> Contract | None:
        """The qualified contract of a spec seen before, without asking IB."""
        return self._qualified.get(spec.SerializeToString(deterministic=True))

    async def resolve(
        self, spec: common_pb2.Contract, *, max_wait: float | None = None
    ) -> Contract:
        """The qualified IB contract for a request's contract.

        Cached; concurrent asks for the same spec share one IB request (bounded by
        IBKR_TIMEOUT), and each caller waits at most ``max_wait`` seconds. Raises GatewayError
        (NOT_FOUND, ambiguous INVALID_ARGUMENT, UNAVAILABLE, DEADLINE_EXCEEDED).
        """
        pending = self.resolution(spec)
        if pending.done():
            return pending.result()
        if max_wait is None:
            return await asyncio.shield(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), max(0.0, max_wait))
        except TimeoutError:
            raise deadline_exceeded("contract details", max_wait) from None

    def resolution(self, spec: common_pb2.Contract) -> asyncio.Future[Contract]:
        """The future qualified contract of a spec, shared by everyone who asks for it
        (done at once when it is cached). Await it through ``asyncio.shield``."""
        key = spec.SerializeToString(deterministic=True)
        found = self._qualified.get(key)
        if found is not None:
            self._qualified.move_to_end(key)
            done: asyncio.Future[Contract] = asyncio.get_running_loop().create_future()
            done.set_result(found)
            return done
        pending = self._qualifying.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._qualify(key, spec))
            self._qualifying[key] = pending
            pending.add_done_callback(partial(self._qualified_done, key))
        return pending

    def _qualified_done(self, key: bytes, future: asyncio.Future[Contract]) -> None:
        self._qualifying.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved: a failure nobody awaits is not "never retrieved"

    async def _qualify(self, key: bytes, spec: common_pb2.Contract) -> Contract:
        contract = await self.session.qualify(convert.contract_from_proto(spec))
        if not contract.exchange and contract.secType == "STK":
            contract.exchange = "SMART"
        self._qualified[key] = contract
        if len(self._qualified) > _QUALIFY_CACHE_SIZE:
            self._qualified.popitem(last=False)
        return contract

    # -------------------------------------------------------------------- lines

    @staticmethod
    def line_key(contract: Contract, md_type: int) -> tuple[int, str, int]:
        """Lines are per instrument, exchange and market data type."""
        return (contract.conId, contract.exchange or "", market_data_type_to_ib(md_type))

    def acquire(self, contract: Contract, md_type: int, *, waited: bool = False) -> Line:
        """A reference to the line of a qualified contract, subscribing it if needed.

        Raises GatewayError RESOURCE_EXHAUSTED (LINE_BUDGET_EXHAUSTED) when a new line
        would exceed the budget. An unused (lingering) line makes room, unless streams
        are waiting for a line: then it goes to them first (``waited``: this is one).
        """
        md_type = market_data_type_to_ib(md_type)
        key = self.line_key(contract, md_type)
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) >= self.line_budget and not (
                (waited or not self._waiting) and self._evict_lingering()
            ):
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "LINE_BUDGET_EXHAUSTED",
                    f"the gateway's market-data line budget ({self.line_budget}, "
                    "IBGW_QUOTE_LINE_BUDGET) is used up by other contracts",
                    metadata={"line_budget": str(self.line_budget)},
                    retry_after=5.0,
                )
            line = Line(key, contract, md_type, self.encoder)
            self._lines[key] = line
            self._by_contract[id(line.contract)] = line
            self._subscribe(line)
        if line.linger is not None:
            line.linger.cancel()
            line.linger = None
        line.refs += 1
        return line

    def release(self, line: Line) -> None:
        """Drop one reference; the last one cancels the IB line after the linger."""
        line.refs -= 1
        if line.refs > 0:
            return
        line.refs = 0
        if self._lines.get(line.key) is not line:
            return  # failed or already dropped
        if self.linger <= 0 or self._closed:
            self._drop_line(line)
            self._retry_waiting(1)
        else:
            loop = asyncio.get_running_loop()
            line.linger = loop.call_later(self.linger, self._expire, line)

    def _expire(self, line: Line) -> None:
        line.linger = None
        if line.refs == 0 and self._lines.get(line.key) is line:
            self._drop_line(line)
            self._retry_waiting(1)

    def _add_waiting(self, stream: QuoteStream) -> None:
        if not stream.wait_ticket:
            self._wait_tickets += 1
            stream.wait_ticket = self._wait_tickets
        self._waiting.add(stream)

    def _retry_waiting(self, new_lines: int | None) -> None:
        """Offer lines to the streams waiting for one, longest waiting first.

        ``new_lines``: how many new IB lines may be requested (as many as were just
        freed, so that IB's own limit is not probed once per waiting contract); None
        after a reconnect (then only the budget limits). Not on the quote path: runs when
        a line is dropped and on reconnects.
        """
        if self._closed or not self._waiting:
            return
        for stream in sorted(self._waiting, key=lambda s: s.wait_ticket):
            new_lines = stream.retry_waiting(new_lines)
            if not stream.waiting:
                self._waiting.discard(stream)
            if new_lines == 0:
                return

    def _evict_lingering(self) -> bool:
        for line in self._lines.values():
            if line.refs == 0:
                if line.linger is not None:
                    line.linger.cancel()
                    line.linger = None
                self._drop_line(line)
                return True
        return False

    def _subscribe(self, line: Line) -> None:
        """Send reqMktData for a line (when connected; else it waits, PAUSED)."""
        if not self.session.connected:
            line.state = LineState.PAUSED
            line.message = "IB connection down; the subscription starts when it returns"
            return
        try:
            if self._md_type_sent != line.md_type:
                self.ib.reqMarketDataType(line.md_type)
                self._md_type_sent = line.md_type
            ticker = self.ib.reqMktData(line.contract, _generic_ticks(line.contract))
        except ConnectionError:
            line.state = LineState.PAUSED
            return
        old = line.ticker
        if old is not None and self._by_ticker.get(old) is line:
            del self._by_ticker[old]
        line.ticker = ticker
        self._by_ticker[ticker] = line
        line.state = LineState.PENDING if not line.has_data else LineState.ACTIVE
        line.message = ""
        line.ib_code = 0

    def _unsubscribe(self, line: Line) -> None:
        line.settle()
        ticker, line.ticker = line.ticker, None
        if ticker is None:
            return
        if self._by_ticker.get(ticker) is line:
            del self._by_ticker[ticker]
        if self.ib.isConnected():
            with contextlib.suppress(Exception):
                self.ib.cancelMktData(line.contract)

    def _drop_line(self, line: Line) -> None:
        if line.linger is not None:
            line.linger.cancel()
            line.linger = None
        if self._lines.get(line.key) is line:
            del self._lines[line.key]
        self._by_contract.pop(id(line.contract), None)
        self._unsubscribe(line)
        self._encodes += line.encodes
        line.encodes = 0
        line.wake_waiters()

    # ------------------------------------------------------------------- events

    def _on_pending_tickers(self, tickers: set[Ticker]) -> None:
        by_ticker = self._by_ticker
        listener = self.update_listener
        for ticker in tickers:
            line = by_ticker.get(ticker)
            if line is None:
                continue
            if line.state != LineState.ACTIVE:
                self._set_line_state(line, LineState.ACTIVE, "", 0, notify=False)
            line.update(ticker)
            self._updates += 1
            if listener is not None:
                listener(line)
            for group in line.groups:
                group.push(line)
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for group in dirty:
                group.dispatch()

    def _on_ib_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        if contract is None or code in _IGNORED_CODES or 2100 <= code < 2200:
            return
        line = self._by_contract.get(id(contract))
        if line is None or line.contract is not contract:
            return
        if code in _LINE_NOTICES:
            line.message, line.ib_code = message, code
            self._notify_line(line, ACTIVE, message, code)
            return
        log.info(
            "market data for %s refused by IB (%d): %s", line.contract_pb.symbol, code, message
        )
        # The line is dead: forget it (a later consumer tries afresh), keep it for holders.
        if self._lines.get(line.key) is line:
            del self._lines[line.key]
        self._by_contract.pop(id(line.contract), None)
        self._unsubscribe(line)
        self._set_line_state(line, LineState.FAILED, message, code)
        line.wake_waiters()
        if code in _LINE_LIMIT_CODES and not self._closed:
            # IB has no line free: the streams wait for one (see _retry_waiting).
            for group in list(line.groups):
                for member in list(group.members):
                    member.wait_for_line(line)

    def _set_line_state(
        self, line: Line, state: str, message: str, ib_code: int, *, notify: bool = True
    ) -> None:
        line.state, line.message, line.ib_code = state, message, ib_code
        if notify:
            sub_state, text, code = line.status_fields()
            self._notify_line(line, sub_state, text, code)

    def _notify_line(self, line: Line, state: int, message: str, ib_code: int) -> None:
        for group in line.groups:
            for member in group.members:
                member.line_status(line, state, message, ib_code)

    def _on_state_change(self, change: StateChange) -> None:
        from ibgateway_server.ib.session import SessionEvent, SessionState

        event = change.event
        state = convert.connection_state_to_proto(change.state)
        if event == SessionEvent.CONNECTED or (
            event == SessionEvent.CONNECTIVITY_RESTORED and change.state == SessionState.CONNECTED
        ):
            if event == SessionEvent.CONNECTED:
                self._md_type_sent = None  # a new connection starts at live data
            self._broadcast_connection(state, change)
            resubscribe = change.resubscribe or event == SessionEvent.CONNECTED
            self._resume(resubscribe=resubscribe)
            if resubscribe:
                self._retry_waiting(None)  # IB's line count starts afresh
        elif event in (
            SessionEvent.DISCONNECTED,
            SessionEvent.CONNECTIVITY_LOST,
            SessionEvent.STOPPED,
            SessionEvent.RECONNECTING,
            SessionEvent.CONNECTING,
        ):
            if state != self._connection_state:
                self._broadcast_connection(state, change)
            if event != SessionEvent.CONNECTING or change.state != SessionState.CONNECTING:
                self._pause(socket_lost=event != SessionEvent.CONNECTIVITY_LOST)

    def _broadcast_connection(self, state: int, change: StateChange) -> None:
        self._connection_state = state
        message = market_data_pb2.StreamQuotesResponse(
            connection_state=convert.state_change_to_proto(change)
        ).SerializeToString()
        for stream in self._streams:
            stream.connection_event(message)

    def _pause(self, *, socket_lost: bool) -> None:
        """Every line is PAUSED. When the socket itself is gone, IB (and ib_insync) have
        forgotten the subscriptions; when only TWS's link to IB is down they are kept."""
        for line in list(self._lines.values()):
            if socket_lost and line.ticker is not None:
                line.settle()
                if self._by_ticker.get(line.ticker) is line:
                    del self._by_ticker[line.ticker]
                line.ticker = None
            if line.state != LineState.PAUSED:
                self._set_line_state(
                    line, LineState.PAUSED, "IB connection down; resumes when it returns", 0
                )

    def _resume(self, *, resubscribe: bool) -> None:
        for line in list(self._lines.values()):
            if resubscribe or line.ticker is None:
                # IB has forgotten the request (new connection, or 1101 "data lost"), so
                # there is nothing to cancel: request it again.
                self._subscribe(line)
            else:
                line.state = LineState.ACTIVE if line.has_data else LineState.PENDING
            if line.state != LineState.PAUSED:
                line.message, line.ib_code = "", 0
                self._notify_line(line, ACTIVE, "IB connection restored", 0)

    # ------------------------------------------------------------------ streams

    def _join(self, stream: QuoteStream, lines: frozenset[Line]) -> Group | None:
        if not lines:
            return None
        group = self._groups.get(lines)
        if group is None:
            group = Group(lines, self._group_waiting, defer=self._defer)
            self._groups[lines] = group
            for line in lines:
                line.groups.append(group)
        group.members.add(stream)
        return group

    def _defer(self, stream: QuoteStream) -> None:
        """Wake ``stream`` when its send window closes (``next_quote_at``, a multiple of
        its window quantum): streams due at the same moment share one timer and send
        together, which gRPC turns into fewer socket writes."""
        key = stream.next_quote_at
        bucket = self._deferred.get(key)
        if bucket is None:
            bucket = self._deferred[key] = {}
            stream._loop.call_at(key, self._window_closed, key)
        bucket[stream] = None

    def _window_closed(self, key: float) -> None:
        for stream in self._deferred.pop(key, ()):
            stream.wake()

    def _group_waiting(self, group: Group) -> None:
        self._dirty.append(group)  # dispatched once the current IB event is processed

    def _leave(self, stream: QuoteStream, group: Group | None) -> None:
        if group is None:
            return
        group.members.discard(stream)
        group.idle.pop(stream, None)
        if not group.members:
            self._groups.pop(group.key, None)
            for line in group.lines:
                with contextlib.suppress(ValueError):
                    line.groups.remove(group)

    def _register(self, stream: QuoteStream) -> None:
        self._streams.add(stream)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_heartbeats(), name="quote-hub-heartbeats"
            )

    def _unregister(self, stream: QuoteStream) -> None:
        self._streams.discard(stream)

    async def _sweep_heartbeats(self) -> None:
        """Wake streams that have been silent for their heartbeat interval."""
        loop = asyncio.get_running_loop()
        try:
            while self._streams:
                shortest = min(s.heartbeat for s in self._streams)
                await asyncio.sleep(min(1.0, max(0.02, shortest / 4)))
                now = loop.time()
                for stream in list(self._streams):
                    if now - stream.last_send >= stream.heartbeat:
                        stream.heartbeat_due()
        finally:
            if self._sweeper is asyncio.current_task():
                self._sweeper = None

    # -------------------------------------------------------------- snapshots

    async def snapshot(
        self, contract: Contract, md_type: int, *, max_wait: float, settle: float = 0.5
    ) -> Line:
        """A line's quote for a one-off request: reuses a live line or subscribes briefly.

        Waits until the quote is complete (a market and the close), or ``settle`` seconds
        after its first data, or ``max_wait`` seconds. The caller reads ``line.quote`` /
        ``line.state`` and must call :meth:`release`.
        """
        line = self.acquire(contract, md_type)
        if line.complete or not line.alive:
            return line
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, max_wait)
        self._snapshot_waiters += 1
        try:
            while line.alive and not line.complete:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if line.has_data:
                    remaining = min(remaining, settle)
                fut: asyncio.Future[None] = loop.create_future()
                line.waiters.append(fut)
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    if line.has_data:
                        break
        except BaseException:
            # The caller never gets the line (its client left, or it was cancelled):
            # give the reference back, or the line would hold a budget slot forever.
            self.release(line)
            raise
        finally:
            self._snapshot_waiters -= 1
        return line


def status_message(
    index: int, contract: common_pb2.Contract, state: int, message: str, ib_code: int
) -> bytes:
    """The bytes of a StreamQuotesResponse carrying one SubscriptionStatus."""
    return market_data_pb2.StreamQuotesResponse(
        subscription_status=market_data_pb2.SubscriptionStatus(
            index=index,
            contract=contract,
            state=state,  # type: ignore[arg-type]
            message=message,
            ib_code=ib_code,
        )
    ).SerializeToString()


def state_for_error(exc: GatewayError) -> int:
    """The SubscriptionState for a contract that could not be subscribed."""
    if exc.reason == "AMBIGUOUS_CONTRACT":
        return AMBIGUOUS
    if exc.reason == "LINE_BUDGET_EXHAUSTED" or exc.ib_code == 101:
        return LIMIT_REACHED
    if exc.code is grpc.StatusCode.NOT_FOUND:
        return NOT_FOUND
    if exc.code is grpc.StatusCode.PERMISSION_DENIED:
        return PERMISSION_DENIED
    return FAILED


def failure_of(exc: BaseException) -> GatewayError:
    """A GatewayError for any failure while subscribing one contract."""
    mapped = from_exception(exc)
    if mapped is not None:
        return mapped
    log.exception("unexpected failure subscribing a contract", exc_info=exc)
    return GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal gateway error")


Writer = Callable[[bytes], Awaitable[None]]


class QuoteStream:
    """One StreamQuotes call: its lines, its position in its group's log, its control
    messages (statuses, connection changes), its send window and its heartbeat.

    Control messages go out at once; quote messages at most once per ``send_window``
    seconds (None: the hub's default; 0: as soon as the stream can send)."""

    def __init__(
        self,
        hub: QuoteHub,
        contracts: Sequence[common_pb2.Contract],
        md_type: int,
        heartbeat: float,
        send_window: float | None = None,
    ) -> None:
        self.hub = hub
        self.contracts = list(contracts)
        self.md_type = md_type
        self.heartbeat = heartbeat
        self.send_window = hub.send_window if send_window is None else send_window
        self._quantum = max(0.001, self.send_window / 4)
        # loop time before which no quote message is sent (0: no window open)
        self.next_quote_at = 0.0
        self.quote_messages = 0
        self.lines: dict[Line, list[int]] = {}  # line → its indices in the request
        # contracts refused for lack of a line (LIMIT_REACHED), by line key, in request
        # order: (qualified contract, its indices in the request)
        self.waiting: dict[tuple[int, str, int], tuple[Contract, list[int]]] = {}
        self.wait_ticket = 0  # when it first waited (the hub serves the oldest first)
        self.group: Group | None = None
        self.pos = 0
        self.last_send = 0.0
        self._loop = asyncio.get_running_loop()
        self._wake: asyncio.Future[None] | None = None
        self._idle = False
        self._initial = True
        self._heartbeat_due = False
        self._ended = False
        self._closed = False
        # Control messages, oldest first. Statuses conflate per request index (the newest
        # state wins); connection changes are kept in order, up to a bound.
        self._control: OrderedDict[Any, bytes] = OrderedDict()
        self._events = 0

    # ---------------------------------------------------------------- set up

    async def open(self) -> None:
        """Resolve and subscribe every contract; queue one status per contract."""
        hub = self.hub
        hub._register(self)
        self.last_send = self._loop.time()
        # Known contracts come from the cache at once; the others wait for the one shared
        # IB request per contract (no task per stream and contract: thousands of streams
        # may open at once).
        results: list[Contract | BaseException | None] = [
            hub.cached(spec) for spec in self.contracts
        ]
        missing = [i for i, found in enumerate(results) if found is None]
        if missing:
            fetched = await asyncio.gather(
                *(asyncio.shield(hub.resolution(self.contracts[i])) for i in missing),
                return_exceptions=True,
            )
            for i, outcome in zip(missing, fetched, strict=True):
                results[i] = outcome
        if self._closed:
            return
        acquired: dict[tuple[int, str, int], Line] = {}
        for index, (spec, result) in enumerate(zip(self.contracts, results, strict=True)):
            assert result is not None
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                err = failure_of(result)
                self._status(index, spec, state_for_error(err), err.message, err.ib_code or 0)
                continue
            key = hub.line_key(result, self.md_type)
            line = acquired.get(key)
            if line is None:
                try:
                    line = hub.acquire(result, self.md_type)
                except GatewayError as err:
                    contract_pb = convert.contract_to_proto(result)
                    self._status(index, contract_pb, LIMIT_REACHED, err.message, 0)
                    self._wait(key, result, [index])
                    continue
                acquired[key] = line
                self.lines[line] = []
            self.lines[line].append(index)
            state, message, ib_code = line.status_fields()
            self._control[("status", index)] = line.status_message(index, state, message, ib_code)
        self.group = hub._join(self, frozenset(line for line in self.lines if line.alive))
        self.pos = self.group.end if self.group is not None else 0
        self.contracts = []  # the request is not needed any more
        if self.waiting:
            hub._add_waiting(self)

    # ------------------------------------------------------- waiting for lines

    def _wait(self, key: tuple[int, str, int], contract: Contract, indices: list[int]) -> None:
        entry = self.waiting.get(key)
        if entry is None:
            self.waiting[key] = (contract, list(indices))
        else:
            entry[1].extend(indices)

    def wait_for_line(self, line: Line) -> None:
        """IB refused ``line`` for lack of a free line: wait for one (the stream has
        already been told LIMIT_REACHED)."""
        indices = self.lines.pop(line, None)
        if indices is None or self._closed:
            return
        self._wait(line.key, line.contract, indices)
        self.hub.release(line)
        self._regroup(added=False)
        self.hub._add_waiting(self)

    def retry_waiting(self, new_lines: int | None) -> int | None:
        """Take lines for waiting contracts, in request order, requesting at most
        ``new_lines`` new IB lines (None: no limit); returns how many are left (0 when
        the budget is full). Each contract that gets a line is reported anew."""
        hub = self.hub
        added = False
        for key, (contract, indices) in list(self.waiting.items()):
            new = key not in hub._lines
            if new and new_lines == 0:
                break
            try:
                line = hub.acquire(contract, self.md_type, waited=True)
            except GatewayError:
                new_lines = 0  # the budget is full: nobody behind gets a line either
                break
            if new and new_lines is not None:
                new_lines -= 1
            del self.waiting[key]
            self.lines.setdefault(line, []).extend(indices)
            state, message, ib_code = line.status_fields()
            for index in indices:
                self._control.pop(("status", index), None)
                self._control[("status", index)] = line.status_message(
                    index, state, message, ib_code
                )
            added = True
        if added:
            self._regroup(added=True)
        return new_lines

    def _regroup(self, *, added: bool) -> None:
        """Move to the group of the current set of live lines. The next quote message is
        a snapshot of every line when a line was added or updates were still unsent."""
        hub = self.hub
        old = self.group
        behind = old is not None and self.pos < old.end
        hub._leave(self, old)
        self._idle = False
        self.group = hub._join(self, frozenset(line for line in self.lines if line.alive))
        self.pos = self.group.end if self.group is not None else 0
        self._initial = self._initial or added or behind
        self.wake()

    # ------------------------------------------------------------- messages

    def _status(
        self, index: int, contract: common_pb2.Contract, state: int, message: str, ib_code: int
    ) -> None:
        key = ("status", index)
        self._control.pop(key, None)
        self._control[key] = status_message(index, contract, state, message, ib_code)
        self.wake()

    def line_status(self, line: Line, state: int, message: str, ib_code: int) -> None:
        for index in self.lines.get(line, ()):
            key = ("status", index)
            self._control.pop(key, None)
            self._control[key] = line.status_message(index, state, message, ib_code)
        self.wake()

    def connection_event(self, message: bytes) -> None:
        self._events += 1
        self._control[("connection", self._events)] = message
        connection_keys = [k for k in self._control if k[0] == "connection"]
        for key in connection_keys[:-MAX_CONNECTION_EVENTS]:
            del self._control[key]
        self.wake()

    def heartbeat_due(self) -> None:
        self._heartbeat_due = True
        self.wake()

    def wake(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def end(self) -> None:
        """Finish the stream (the gateway is closing): run() returns."""
        self._ended = True
        self.wake()

    def quotes_pending(self) -> bool:
        group = self.group
        return group is not None and (self._initial or self.pos < group.end)

    def next_message(self, now: float | None = None) -> bytes | None:
        """The next message to send, or None when there is nothing new (or the quotes
        that are new wait for the send window: see :meth:`quotes_pending`)."""
        if self._control:
            return self._control.popitem(last=False)[1]
        group = self.group
        if group is not None and (self._initial or self.pos < group.end):
            if now is None:
                now = self._loop.time()
            if now >= self.next_quote_at:
                found: tuple[bytes, int] | None = None
                if self._initial:
                    self._initial = False
                    self.pos = group.end
                    found = group.snapshot()
                elif self.pos < group.end:
                    found = group.batch_from(self.pos)
                    self.pos = group.end
                if found is not None:
                    window = self.send_window
                    if window > 0:
                        # the window's end, rounded up to a quantum of it: streams that
                        # sent at about the same time become due at the same moment
                        quantum = self._quantum
                        self.next_quote_at = math.ceil((now + window) / quantum) * quantum
                    self.quote_messages += 1
                    hub = self.hub
                    hub.quote_messages += 1
                    hub.quotes_sent += found[1]
                    return found[0]
        if self._heartbeat_due:
            self._heartbeat_due = False
            if self._loop.time() - self.last_send >= self.heartbeat * 0.9:
                return _heartbeat_message()
        return None

    async def run(self, write: Writer) -> None:
        """Send messages until the stream ends (or the caller is cancelled)."""
        loop = self._loop
        while not self._ended:
            now = loop.time()
            message = self.next_message(now)
            if message is None:
                self._wake = loop.create_future()
                group = self.group
                if self.quotes_pending():
                    self.hub._defer(self)  # quotes wait for the send window to close
                elif group is not None and not self._idle:
                    group.idle[self] = None
                    self._idle = True
                await self._wake
                self._wake = None
                continue
            await write(message)
            self.last_send = now

    def close(self) -> None:
        """Release every line and leave the hub (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        hub = self.hub
        hub._waiting.discard(self)
        self.waiting.clear()
        hub._leave(self, self.group)
        self.group = None
        for line in self.lines:
            hub.release(line)
        self.lines.clear()
        self._control.clear()
        hub._unregister(self)
        self.wake()


def _heartbeat_message() -> bytes:
    return market_data_pb2.StreamQuotesResponse(
        heartbeat=convert.heartbeat_now()
    ).SerializeToString()
