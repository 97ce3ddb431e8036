"""Live bars for StreamBars: one IB subscription per (contract, bar size, what to show,
regular hours), shared by every stream that wants it.

* 5-second bars are IB's real-time bars (``reqRealTimeBars``): each arrives once, complete.
* Other sizes are IB's ``keepUpToDate`` historical bars: the forming bar is re-sent as it
  changes, and when the next one starts the previous one is final. A :class:`BarLine`
  turns that into "forming" updates and exactly one "completed" bar per period.
* A keepUpToDate request costs an IB historical request: it goes through the same
  :class:`~ibgateway_server.market_data.pacing.HistoricalPacer` as GetHistoricalBars, and
  waits (reported LIMIT_REACHED) until the pacer lets it go.
* When the IB session drops, every line is PAUSED; when it is back, every line is
  requested again. Bars that completed meanwhile come from keepUpToDate's initial answer
  (those after the last completed bar sent); nothing already sent as completed is sent
  again. Real-time bars have no back-fill: the outage is a gap.

Each stream keeps what it has not sent yet: completed bars in order (bounded: a stream
that does not read loses its oldest, counted in the log), and only the newest forming
bar per contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import Contract
from ibgateway_server.ib.session import IbSession, SessionEvent, StateChange
from ibgateway_server.market_data.bars import BarSpec, bar_to_proto, zone
from ibgateway_server.market_data.hub import (
    ACTIVE,
    FAILED,
    LIMIT_REACHED,
    MAX_CONNECTION_EVENTS,
    NOT_FOUND,
    PAUSED,
    PERMISSION_DENIED,
    QuoteHub,
    failure_of,
    state_for_error,
)
from ibgateway_server.market_data.pacing import HistoricalPacer
from ibgateway_server.market_data.shared_lines import SharedLines

log = logging.getLogger(__name__)

REALTIME_SECONDS = 5
MAX_PENDING_BARS = 1_000  # completed bars held for a stream that does not read
# IB errors about a bar subscription and the state they mean (others: FAILED).
_ERROR_STATES = {200: NOT_FOUND, 354: PERMISSION_DENIED, 10089: PERMISSION_DENIED}
_IGNORED_CODES = frozenset({1100, 1101, 1102, 2100, 2119})

LineKey = tuple[int, str, str, bool]


def _keep_up_duration(spec: BarSpec) -> str:
    """The shortest duration whose answer holds the last completed and the forming bar."""
    if spec.seconds >= 31 * 86_400:
        return "2 M"
    if spec.seconds >= 7 * 86_400:
        return "2 W"
    if spec.seconds >= 86_400:
        return "2 D"
    return f"{max(60, 2 * spec.seconds)} S"


class BarLine:
    """One IB bar subscription and the bars it has produced."""

    def __init__(self, key: LineKey, contract: Contract, spec: BarSpec, time_zone: str) -> None:
        self.key = key
        self.contract = contract
        self.contract_pb = convert.contract_to_proto(contract)
        self.spec = spec
        self.what = key[2]
        self.rth = key[3]
        self.tz = zone(time_zone)
        self.realtime = spec.seconds == REALTIME_SECONDS
        self.subscription: Any = None  # ib_insync's BarDataList / RealTimeBarList
        self.req_id = 0
        self.state = ACTIVE  # as quote lines: active from the request on, until IB refuses
        self.message = ""
        self.ib_code = 0
        self.streams: list[BarStream] = []
        self.last_completed: datetime | None = None  # start of the newest completed bar sent
        self.forming: market_data_pb2.Bar | None = None  # the newest forming bar sent
        self.retry: asyncio.TimerHandle | None = None

    def status(self) -> tuple[int, str, int]:
        return self.state, self.message, self.ib_code

    def set_state(self, state: int, message: str, ib_code: int = 0) -> None:
        if (state, message, ib_code) == (self.state, self.message, self.ib_code):
            return
        self.state, self.message, self.ib_code = state, message, ib_code
        for stream in self.streams:
            stream.line_status(self)

    # ---------------------------------------------------------------- bars

    @staticmethod
    def _start(bar: Any) -> datetime:
        moment = getattr(bar, "date", None) or getattr(bar, "time", None)
        if isinstance(moment, datetime):
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        assert moment is not None
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)

    def on_bars(self, bars: Any, new_bar: bool = True) -> None:
        """IB sent bars (the initial answer or an update): emit what is new."""
        if not bars:
            return
        if len(bars) > 50:
            del bars[:-3]  # ib_insync appends forever; only the last bars matter here
        now = datetime.now(UTC)
        if self.realtime:
            candidates = [(bar, True) for bar in bars[-3:]]
        else:
            # every bar but the last is complete; the last is complete once its period is
            # over (a daily bar at the close), else it is forming
            candidates = [(bar, True) for bar in bars[:-1]] + [(bars[-1], False)]
        for bar, complete in candidates:
            start = self._start(bar)
            if self.last_completed is not None and start <= self.last_completed:
                continue
            message = bar_to_proto(bar, self.spec, self.tz, now, completed=None)
            message.completed = complete or message.completed
            if message.completed:
                if self.last_completed is None and not self.realtime and bar is not bars[-2]:
                    continue  # the first answer: only the last completed bar, as context
                self.last_completed = start
                self.forming = None
                self._emit(message)
            elif message != self.forming:
                self.forming = message
                self._emit(message)

    def _emit(self, bar: market_data_pb2.Bar) -> None:
        for stream in self.streams:
            stream.bar(self, bar)


class BarHub(SharedLines[LineKey, BarLine, "BarStream"]):
    """Every live bar subscription of the gateway."""

    def __init__(self, session: IbSession, quotes: QuoteHub, pacer: HistoricalPacer) -> None:
        super().__init__(session)
        self.quotes = quotes
        self.pacer = pacer
        self._by_req_id: dict[int, BarLine] = {}

    # ------------------------------------------------------------ lines

    def acquire(self, contract: Contract, spec: BarSpec, what: str, rth: bool) -> BarLine:
        key = (contract.conId, spec.ib_text, what, rth)
        line = self._lines.get(key)
        if line is None:
            line = BarLine(key, contract, spec, "")
            self._lines[key] = line
            self._subscribe(line)
        return line

    def release(self, line: BarLine, stream: BarStream) -> None:
        with contextlib.suppress(ValueError):
            line.streams.remove(stream)
        if not line.streams:
            self._cancel(line)
            self._lines.pop(line.key, None)

    def _cancel(self, line: BarLine) -> None:
        if line.retry is not None:
            line.retry.cancel()
            line.retry = None
        self._cancel_request(line)

    def _cancel_request(self, line: BarLine) -> None:
        self._by_req_id.pop(line.req_id, None)
        sub, line.subscription = line.subscription, None
        if sub is None or not self.session.connected:
            return
        with contextlib.suppress(Exception):
            if line.realtime:
                self.ib.cancelRealTimeBars(sub)
            else:
                self.ib.cancelHistoricalData(sub)

    def _subscribe(self, line: BarLine) -> None:
        if line.retry is not None:
            line.retry.cancel()
            line.retry = None
        if not self.session.connected:
            line.set_state(PAUSED, "IB connection down; resumes when it is back")
            return
        if line.realtime:
            try:
                bars = self.ib.reqRealTimeBars(line.contract, REALTIME_SECONDS, line.what, line.rth)
            except ConnectionError:
                line.set_state(PAUSED, "IB connection down; resumes when it is back")
                return
            self._attach(line, bars)
            line.set_state(ACTIVE, "")
            return
        contract_key = (line.contract.conId, line.what)
        request_key = ("live", *line.key)
        delay, _reason = self.pacer.delay(contract_key, request_key)
        if delay > 0:
            line.set_state(
                LIMIT_REACHED,
                f"IB's historical-data pacing: subscribing in {delay:.1f}s",
            )
            line.retry = asyncio.get_running_loop().call_later(delay, self._subscribe, line)
            return
        self.pacer.record(contract_key, request_key)
        line.set_state(ACTIVE, "")
        task = asyncio.ensure_future(self._keep_up(line))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_up(self, line: BarLine) -> None:
        try:
            if line.spec.calendar and line.tz.key == "UTC":
                # daily and longer bars are dated at the exchange: its time zone
                details = await self.session.qualify_details(line.contract)
                line.tz = zone(details.timeZoneId)
            bars = await self.session.request(
                lambda: self.ib.reqHistoricalDataAsync(
                    line.contract,
                    "",
                    _keep_up_duration(line.spec),
                    line.spec.ib_text,
                    line.what,
                    line.rth,
                    formatDate=2,
                    keepUpToDate=True,
                    timeout=0,
                ),
                what=f"live bars of {line.contract.symbol}",
                max_wait=max(self.session.timeout, 30.0),
            )
        except Exception as exc:
            if self._lines.get(line.key) is not line:
                return
            err = failure_of(exc)
            if err.code is grpc.StatusCode.UNAVAILABLE:
                line.set_state(PAUSED, "IB connection down; resumes when it is back")
                return
            if err.code is grpc.StatusCode.RESOURCE_EXHAUSTED:  # IB's own pacing
                line.set_state(LIMIT_REACHED, err.message, err.ib_code or 0)
                line.retry = asyncio.get_running_loop().call_later(
                    max(1.0, err.retry_after or 10.0), self._subscribe, line
                )
                return
            line.set_state(state_for_error(err), err.message, err.ib_code or 0)
            return
        if self._lines.get(line.key) is not line:  # every stream left meanwhile
            with contextlib.suppress(Exception):
                self.ib.cancelHistoricalData(bars)
            return
        self._attach(line, bars)
        line.set_state(ACTIVE, "")
        line.on_bars(bars, True)

    def _attach(self, line: BarLine, bars: Any) -> None:
        line.subscription = bars
        line.req_id = getattr(bars, "reqId", 0)
        self._by_req_id[line.req_id] = line
        bars.updateEvent += line.on_bars

    # ------------------------------------------------------------ IB events

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        line = self._by_req_id.get(req_id)
        if line is None or code in _IGNORED_CODES or 2100 <= code < 2200:
            return
        self._by_req_id.pop(req_id, None)
        line.subscription = None
        line.set_state(_ERROR_STATES.get(code, FAILED), message, code)

    def _on_state(self, change: StateChange) -> None:
        event = convert.state_change_to_proto(change)
        for stream in list(self._streams):
            stream.connection_event(event)
        paused = "IB connection down; resumes when it is back"
        if change.event in (SessionEvent.DISCONNECTED, SessionEvent.RECONNECTING):
            # the socket is gone, and every subscription with it
            for line in self._lines.values():
                line.subscription = None
                if line.state != FAILED:
                    line.set_state(PAUSED, paused)
            self._by_req_id.clear()
        elif change.event is SessionEvent.CONNECTIVITY_LOST:
            for line in self._lines.values():  # TWS keeps the subscriptions (until 1101)
                if line.state != FAILED:
                    line.set_state(PAUSED, paused)
        elif change.resubscribe:  # connected again, or 1101: IB forgot the subscriptions
            for line in list(self._lines.values()):
                if line.state != FAILED:
                    self._cancel_request(line)
                    self._subscribe(line)
        elif change.event is SessionEvent.CONNECTIVITY_RESTORED:  # 1102: data maintained
            for line in self._lines.values():
                if line.state == PAUSED and line.subscription is not None:
                    line.set_state(ACTIVE, "")


Writer = Callable[[market_data_pb2.StreamBarsResponse], Awaitable[None]]


class BarStream:
    """One StreamBars call."""

    def __init__(
        self,
        hub: BarHub,
        contracts: Sequence[common_pb2.Contract],
        spec: BarSpec,
        what: Callable[[Contract], str],
        rth: bool,
        heartbeat: float,
    ) -> None:
        self.hub = hub
        self.contracts = list(contracts)
        self.spec = spec
        self.what = what
        self.rth = rth
        self.heartbeat = heartbeat
        self.lines: dict[BarLine, list[int]] = {}
        self.dropped = 0
        self._pending: OrderedDict[Any, market_data_pb2.StreamBarsResponse] = OrderedDict()
        self._events = 0
        self._wake = asyncio.Event()
        self._ended = False
        self._closed = False

    async def open(self, max_wait: float) -> None:
        hub = self.hub
        hub.register(self)
        results = await asyncio.gather(
            *(hub.quotes.resolve(spec, max_wait=max_wait) for spec in self.contracts),
            return_exceptions=True,
        )
        for index, (spec, result) in enumerate(zip(self.contracts, results, strict=True)):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                err = failure_of(result)
                self._status(index, spec, state_for_error(err), err.message, err.ib_code or 0)
                continue
            line = hub.acquire(result, self.spec, self.what(result), self.rth)
            if self not in line.streams:
                line.streams.append(self)
                self.lines[line] = []
            self.lines[line].append(index)
            self._status(index, line.contract_pb, *line.status())
            if line.last_completed is not None or line.forming is not None:
                # a line already running: the newest bar, so the stream starts with data
                if line.forming is not None:
                    self.bar(line, line.forming, only=index)

    # -------------------------------------------------------------- messages

    def _status(
        self, index: int, contract: common_pb2.Contract, state: int, message: str, code: int
    ) -> None:
        key = ("status", index)
        self._pending.pop(key, None)
        self._pending[key] = market_data_pb2.StreamBarsResponse(
            subscription_status=market_data_pb2.SubscriptionStatus(
                index=index,
                contract=contract,
                state=state,  # type: ignore[arg-type]
                message=message,
                ib_code=code,
            )
        )
        self._wake.set()

    def line_status(self, line: BarLine) -> None:
        for index in self.lines.get(line, ()):
            self._status(index, line.contract_pb, *line.status())

    def bar(self, line: BarLine, bar: market_data_pb2.Bar, *, only: int | None = None) -> None:
        for index in self.lines.get(line, ()):
            if only is not None and index != only:
                continue
            message = market_data_pb2.StreamBarsResponse(
                bar=market_data_pb2.BarUpdate(index=index, contract=line.contract_pb, bar=bar)
            )
            forming_key = ("forming", index)
            self._pending.pop(forming_key, None)  # superseded by this bar
            if bar.completed:
                key: Any = ("completed", index, bar.time.seconds)
                completed = sum(1 for k in self._pending if k[0] == "completed")
                if completed >= MAX_PENDING_BARS:
                    oldest = next(k for k in self._pending if k[0] == "completed")
                    del self._pending[oldest]
                    self.dropped += 1
            else:
                key = forming_key
            self._pending[key] = message
        self._wake.set()

    def connection_event(self, event: common_pb2.ConnectionStateChange) -> None:
        self._events += 1
        self._pending[("connection", self._events)] = market_data_pb2.StreamBarsResponse(
            connection_state=event
        )
        keys = [k for k in self._pending if k[0] == "connection"]
        for key in keys[:-MAX_CONNECTION_EVENTS]:
            del self._pending[key]
        self._wake.set()

    def end(self) -> None:
        self._ended = True
        self._wake.set()

    async def run(self, write: Writer) -> None:
        loop = asyncio.get_running_loop()
        last_send = loop.time()
        while not self._ended:
            if self._pending:
                message = self._pending.popitem(last=False)[1]
            else:
                silence = loop.time() - last_send
                if silence < self.heartbeat:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.heartbeat - silence)
                    continue
                message = market_data_pb2.StreamBarsResponse(heartbeat=convert.heartbeat_now())
            await write(message)
            last_send = loop.time()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ended = True
        for line in list(self.lines):
            self.hub.release(line, self)
        self.lines.clear()
        self._pending.clear()
        self.hub.unregister(self)
