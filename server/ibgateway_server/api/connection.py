"""ConnectionService: status, Connect/Disconnect, WatchConnectionStatus and the
TestConnection diagnostics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2

from ibgateway.v1 import connection_pb2, connection_pb2_grpc
from ibgateway_server import errors
from ibgateway_server.api.validation import Violations, heartbeat_seconds
from ibgateway_server.errors import GatewayError, quote
from ibgateway_server.ib import convert, failures
from ibgateway_server.ib.insync import Stock, Ticker
from ibgateway_server.ib.session import IbSession, SessionEvent, SessionStatus, StateChange
from ibgateway_server.portfolio.accounts import AccountSummaries
from ibgateway_server.portfolio.positions import fetch_positions

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Updates held for a WatchConnectionStatus consumer that does not read; beyond that the
# oldest are dropped (the newest, i.e. the current state, always arrives).
MAX_PENDING_UPDATES = 16

_BACKENDS = {"sim": connection_pb2.BACKEND_SIMULATOR, "tws": connection_pb2.BACKEND_TWS}

# The ticker fields the market-data check looks at.
_QUOTE_FIELDS = ("bid", "ask", "last", "close", "volume", "bidSize", "askSize")


def status_to_proto(
    status: SessionStatus, *, backend: str, read_only: bool
) -> connection_pb2.ConnectionStatus:
    msg = connection_pb2.ConnectionStatus(
        connected=status.connected,
        state=convert.connection_state_to_proto(status.state),
        host=status.host,
        port=status.port,
        client_id=status.client_id,
        server_version=status.server_version,
        accounts=list(status.accounts),
        backend=_BACKENDS.get(backend, connection_pb2.BACKEND_UNSPECIFIED),
        last_error=status.last_error,
        reconnect_attempts=status.reconnect_attempts,
        read_only=read_only,
    )
    connect_time = convert.timestamp(status.connected_since)
    if connect_time is not None:
        msg.connect_time.CopyFrom(connect_time)
    return msg


class StatusFeed:
    """The pending messages of one WatchConnectionStatus call.

    Filled by the session's state listener (synchronously, on the loop), drained by the
    stream. Bounded: when the consumer falls behind by MAX_PENDING_UPDATES, the oldest
    update is dropped and counted, so memory stays flat and the latest state still arrives.
    """

    def __init__(self, limit: int = MAX_PENDING_UPDATES) -> None:
        self._pending: deque[connection_pb2.WatchConnectionStatusResponse] = deque()
        self._limit = limit
        self._wake = asyncio.Event()
        self.ended = False
        self.dropped = 0  # updates coalesced away since the last report

    def push(self, message: connection_pb2.WatchConnectionStatusResponse) -> None:
        if self.ended:
            return
        if len(self._pending) >= self._limit:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(message)
        self._wake.set()

    def pop(self) -> connection_pb2.WatchConnectionStatusResponse | None:
        return self._pending.popleft() if self._pending else None

    def end(self) -> None:
        """No more messages after the pending ones: the stream finishes (with OK)."""
        self.ended = True
        self._wake.set()

    async def wait(self, within: float) -> None:
        """Until something is pushed, the feed ends, or ``within`` seconds pass."""
        if self._pending or self.ended:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._wake.wait()


@dataclass(frozen=True)
class ConnectTargets:
    """Where Connect may point the session: (host, port) pairs, port 0 meaning any port
    of that host, host "*" any host. The configured TWS is always one."""

    targets: frozenset[tuple[str, int]]

    @classmethod
    def only(cls, host: str, port: int) -> ConnectTargets:
        return cls(frozenset({(host.lower(), port)}))

    @classmethod
    def parse(cls, text: str | None, host: str, port: int) -> ConnectTargets:
        """The configured TWS plus IBGW_CONNECT_ALLOW ("host", "host:port", "*", comma
        separated; a bracketed IPv6 address as "[::1]:7497")."""
        targets = {(host.lower(), port)}
        for entry in (e.strip() for e in (text or "").split(",")):
            if not entry:
                continue
            name, sep, port_text = entry.rpartition(":")
            if sep and port_text.isdigit() and (not name.count(":") or name.endswith("]")):
                targets.add((name.strip("[]").lower(), int(port_text)))
            else:
                targets.add((entry.strip("[]").lower(), 0))
        return cls(frozenset(targets))

    def allows(self, host: str, port: int) -> bool:
        name = host.strip().strip("[]").lower()
        return any((h == "*" or h == name) and (p == 0 or p == port) for h, p in self.targets)


class ConnectionServicer(connection_pb2_grpc.ConnectionServiceServicer):
    def __init__(
        self,
        session: IbSession,
        summaries: AccountSummaries,
        *,
        backend: str,
        sample_symbol: str = "AAPL",
        heartbeat_seconds: float = 5.0,
        connect_targets: ConnectTargets | None = None,
    ) -> None:
        self.session = session
        # Connect may only aim the session at these (default: where it was configured).
        self.connect_targets = connect_targets or ConnectTargets.only(session.host, session.port)
        self.summaries = summaries
        self.backend = backend
        self.sample_symbol = sample_symbol
        self.heartbeat_seconds = heartbeat_seconds
        self._feeds: set[StatusFeed] = set()
        self._closed = False

    def close(self) -> None:
        """End every WatchConnectionStatus stream (with OK): the gateway is shutting down."""
        self._closed = True
        for feed in list(self._feeds):
            feed.end()

    def _status(self) -> connection_pb2.ConnectionStatus:
        return status_to_proto(
            self.session.status(), backend=self.backend, read_only=self.session.read_only
        )

    async def GetConnectionStatus(
        self, request: connection_pb2.GetConnectionStatusRequest, context: Context
    ) -> connection_pb2.GetConnectionStatusResponse:
        return connection_pb2.GetConnectionStatusResponse(status=self._status())

    async def Connect(
        self, request: connection_pb2.ConnectRequest, context: Context
    ) -> connection_pb2.ConnectResponse:
        self._refuse_if_read_only("Connect")
        v = Violations()
        v.check(0 <= request.port <= 65535, "port", "must be a TCP port (1-65535) or 0")
        if request.HasField("client_id"):
            v.check(request.client_id >= 0, "client_id", "must not be negative")
        v.raise_if_any()
        host = request.host.strip() or self.session.host
        port = request.port or self.session.port
        if not self.connect_targets.allows(host, port):
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "CONNECT_TARGET_NOT_ALLOWED",
                f"Connect may not point the session at {quote(host)}:{port}: only the "
                "configured TWS and the targets in IBGW_CONNECT_ALLOW",
                metadata={"host": host[:64], "port": str(port)},
            )
        await self.session.connect(
            host=request.host.strip() or None,
            port=request.port or None,
            client_id=request.client_id if request.HasField("client_id") else None,
        )
        return connection_pb2.ConnectResponse(status=self._status())

    async def Disconnect(
        self, request: connection_pb2.DisconnectRequest, context: Context
    ) -> connection_pb2.DisconnectResponse:
        self._refuse_if_read_only("Disconnect")
        await self.session.disconnect()
        return connection_pb2.DisconnectResponse(status=self._status())

    def _refuse_if_read_only(self, rpc: str) -> None:
        if self.session.read_only:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "READ_ONLY_MODE",
                f"{rpc} is refused: the gateway runs in read-only mode (IBGW_READ_ONLY)",
                metadata={"rpc": rpc},
            )

    async def WatchConnectionStatus(  # type: ignore[override]
        self, request: connection_pb2.WatchConnectionStatusRequest, context: Context
    ) -> None:
        violations = Violations()
        heartbeat = heartbeat_seconds(
            request.heartbeat_interval if request.HasField("heartbeat_interval") else None,
            self.heartbeat_seconds,
            violations,
        )
        violations.raise_if_any()
        feed = StatusFeed()

        def on_change(change: StateChange) -> None:
            # Called while the session applies the change: its status is the new one.
            update = connection_pb2.ConnectionUpdate(
                status=self._status(), change=convert.state_change_to_proto(change)
            )
            feed.push(connection_pb2.WatchConnectionStatusResponse(update=update))
            if change.event is SessionEvent.STOPPED:
                feed.end()

        # The first status and the listener in one step: no change is missed or doubled.
        first = connection_pb2.ConnectionUpdate(status=self._status())
        remove_listener = self.session.add_state_listener(on_change)
        self._feeds.add(feed)
        if self._closed:
            feed.end()
        try:
            await self._run_watch(feed, first, heartbeat, context)
        finally:
            remove_listener()
            self._feeds.discard(feed)

    async def _run_watch(
        self,
        feed: StatusFeed,
        first: connection_pb2.ConnectionUpdate,
        heartbeat: float,
        context: Context,
    ) -> None:
        loop = asyncio.get_running_loop()
        await context.write(connection_pb2.WatchConnectionStatusResponse(update=first))
        last_send = loop.time()
        while True:
            message = feed.pop()
            if message is None:
                if feed.ended:
                    return
                silence = loop.time() - last_send
                if silence < heartbeat:
                    await feed.wait(heartbeat - silence)
                    continue
                message = connection_pb2.WatchConnectionStatusResponse(
                    heartbeat=convert.heartbeat_now()
                )
            if feed.dropped:
                log.warning(
                    "WatchConnectionStatus consumer %s fell behind: %d older update(s) "
                    "dropped, the latest status is sent",
                    context.peer(),
                    feed.dropped,
                )
                feed.dropped = 0
            await context.write(message)
            last_send = loop.time()

    async def TestConnection(
        self, request: connection_pb2.TestConnectionRequest, context: Context
    ) -> connection_pb2.TestConnectionResponse:
        symbol = request.sample_symbol.strip().upper() or self.sample_symbol
        diagnostics = Diagnostics(self.session, self.summaries)
        checks = await diagnostics.run(symbol, context)
        ok = all(c.outcome == connection_pb2.CHECK_OUTCOME_PASSED for c in checks)
        return connection_pb2.TestConnectionResponse(ok=ok, status=self._status(), checks=checks)


class Diagnostics:
    """The TestConnection checks, usable in the server and straight against TWS
    (``ibgw check --direct``). Failures are recorded in the results, never raised."""

    def __init__(self, session: IbSession, summaries: AccountSummaries) -> None:
        self.session = session
        self.summaries = summaries

    async def run(
        self, symbol: str, context: Context | None = None
    ) -> list[connection_pb2.CheckResult]:
        checks: list[connection_pb2.CheckResult] = []
        connected = await self._run_check(
            checks, "connection", lambda r: self._check_link(r, context)
        )
        steps: list[tuple[str, Callable[[connection_pb2.CheckResult], Awaitable[None]]]] = [
            ("account", lambda r: self._check_account(r, context)),
            ("market_data", lambda r: self._check_market_data(r, symbol, context)),
            ("positions", lambda r: self._check_positions(r, context)),
        ]
        for name, step in steps:
            if connected:
                await self._run_check(checks, name, step)
            else:
                checks.append(
                    connection_pb2.CheckResult(
                        name=name,
                        outcome=connection_pb2.CHECK_OUTCOME_SKIPPED,
                        detail="skipped: not connected to TWS",
                    )
                )
        return checks

    async def _run_check(
        self,
        checks: list[connection_pb2.CheckResult],
        name: str,
        step: Callable[[connection_pb2.CheckResult], Awaitable[None]],
    ) -> bool:
        """Run one check; any failure is recorded in the result, never raised."""
        result = connection_pb2.CheckResult(name=name, outcome=connection_pb2.CHECK_OUTCOME_PASSED)
        start = time.perf_counter()
        try:
            await step(result)
        except Exception as exc:
            err = failures.from_exception(exc) or errors.internal_error()
            result.outcome = connection_pb2.CHECK_OUTCOME_FAILED
            result.detail = err.message
            result.ib_code = err.ib_code or int(err.metadata.get("last_ib_code", "0") or 0)
        elapsed = duration_pb2.Duration()
        elapsed.FromNanoseconds(int((time.perf_counter() - start) * 1e9))
        result.duration.CopyFrom(elapsed)
        checks.append(result)
        return result.outcome == connection_pb2.CHECK_OUTCOME_PASSED

    async def _check_link(
        self, result: connection_pb2.CheckResult, context: Context | None
    ) -> None:
        self.session.require_connected()
        server_time = await self.session.request(
            lambda: self.session.ib.reqCurrentTimeAsync(), what="current time", context=context
        )
        status = self.session.status()
        result.detail = (
            f"connected to {status.host}:{status.port} as client {status.client_id}, "
            f"server version {status.server_version}, TWS time {server_time:%Y-%m-%d %H:%M:%S}"
        )
        result.fields.extend(["server_version", "current_time"])

    async def _check_account(
        self, result: connection_pb2.CheckResult, context: Context | None
    ) -> None:
        values = await self.summaries.values(context=context)
        if not values:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION, "NO_ACCOUNT_DATA", "TWS sent no account data"
            )
        tags = sorted({v.tag for v in values})
        accounts = sorted({v.account for v in values})
        result.fields.extend(tags)
        result.count = len(accounts)
        net = [v for v in values if v.tag == "NetLiquidation"]
        shown = ", ".join(f"{v.account} NetLiquidation {v.value} {v.currency}" for v in net[:3])
        result.detail = f"{len(tags)} account fields for {', '.join(accounts)}" + (
            f"; {shown}" if shown else ""
        )

    async def _check_market_data(
        self, result: connection_pb2.CheckResult, symbol: str, context: Context | None
    ) -> None:
        contract = await self.session.qualify(Stock(symbol, "SMART", "USD"), context=context)
        tickers: list[Ticker] = await self.session.request(
            lambda: self.session.ib.reqTickersAsync(contract),
            what=f"market data snapshot of {symbol}",
            context=context,
        )
        ticker = tickers[0]
        present = {}
        for name in _QUOTE_FIELDS:
            value = getattr(ticker, name, None)
            if isinstance(value, float | int) and not math.isnan(value) and value != -1:
                present[name] = value
        if not present:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "NO_MARKET_DATA",
                f"{symbol}: the snapshot carried no price (market data permissions?)",
            )
        result.fields.extend(present)
        shown = " ".join(f"{k} {convert.decimal_text(v)}" for k, v in present.items())
        result.detail = f"{symbol} (conId {contract.conId}): {shown}"

    async def _check_positions(
        self, result: connection_pb2.CheckResult, context: Context | None
    ) -> None:
        held = await fetch_positions(self.session, context)
        result.count = len(held)
        accounts = sorted({p.account for p in held})
        result.detail = f"{len(held)} position(s)" + (
            f" in {', '.join(accounts)}" if accounts else ""
        )
        result.fields.extend(["account", "contract", "position", "avgCost"])
