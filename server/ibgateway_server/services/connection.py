"""ConnectionService: status, Connect/Disconnect and the TestConnection diagnostics."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2

from ibgateway.v1 import common_pb2, connection_pb2, connection_pb2_grpc
from ibgateway_server import convert, errors
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib_api import Stock, Ticker
from ibgateway_server.services.account import AccountSummaries
from ibgateway_server.services.portfolio import fetch_positions
from ibgateway_server.session import IbSession, SessionState, SessionStatus
from ibgateway_server.validation import Violations

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {
    SessionState.CONNECTED: common_pb2.CONNECTION_STATE_CONNECTED,
    SessionState.DISCONNECTED: common_pb2.CONNECTION_STATE_DISCONNECTED,
    SessionState.STOPPED: common_pb2.CONNECTION_STATE_DISCONNECTED,
    SessionState.CONNECTING: common_pb2.CONNECTION_STATE_RECONNECTING,
    SessionState.RECONNECTING: common_pb2.CONNECTION_STATE_RECONNECTING,
    SessionState.CONNECTIVITY_LOST: common_pb2.CONNECTION_STATE_IB_LINK_LOST,
}
_BACKENDS = {"sim": connection_pb2.BACKEND_SIMULATOR, "tws": connection_pb2.BACKEND_TWS}

# The ticker fields the market-data check looks at.
_QUOTE_FIELDS = ("bid", "ask", "last", "close", "volume", "bidSize", "askSize")


def connection_state_to_proto(state: SessionState) -> common_pb2.ConnectionState.ValueType:
    return _STATES[state]


def status_to_proto(
    status: SessionStatus, *, backend: str, read_only: bool
) -> connection_pb2.ConnectionStatus:
    msg = connection_pb2.ConnectionStatus(
        connected=status.connected,
        state=_STATES[status.state],
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


class ConnectionServicer(connection_pb2_grpc.ConnectionServiceServicer):
    def __init__(
        self,
        session: IbSession,
        summaries: AccountSummaries,
        *,
        backend: str,
        sample_symbol: str = "AAPL",
    ) -> None:
        self.session = session
        self.summaries = summaries
        self.backend = backend
        self.sample_symbol = sample_symbol

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
        v = Violations()
        v.check(0 <= request.port <= 65535, "port", "must be a TCP port (1-65535) or 0")
        if request.HasField("client_id"):
            v.check(request.client_id >= 0, "client_id", "must not be negative")
        v.raise_if_any()
        await self.session.connect(
            host=request.host.strip() or None,
            port=request.port or None,
            client_id=request.client_id if request.HasField("client_id") else None,
        )
        return connection_pb2.ConnectResponse(status=self._status())

    async def Disconnect(
        self, request: connection_pb2.DisconnectRequest, context: Context
    ) -> connection_pb2.DisconnectResponse:
        await self.session.disconnect()
        return connection_pb2.DisconnectResponse(status=self._status())

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
            err = errors.from_exception(exc) or errors.internal_error()
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
