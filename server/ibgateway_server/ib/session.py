"""IbSession: owns the one ib_insync ``IB`` of the gateway.

It connects, keeps the connection alive (reconnect with exponential backoff and jitter, no
give-up by default; TWS's 1100/1101/1102 connectivity messages; a watchdog that pings
TWS), bounds every awaited IB answer by a timeout, and tells listeners about every state
change so that health, the quote hub and the order book can react.

Everything runs on the caller's asyncio loop; only ib_insync's ``*Async`` methods and
events are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc

from ibgateway_server import errors
from ibgateway_server.config import Settings
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import IB, Contract, ContractDetails, RequestError, pace_ingest

log = logging.getLogger(__name__)

T = TypeVar("T")

# Leave part of a client's deadline (10%, between 50 and 250 ms) for sending our own
# DEADLINE_EXCEEDED status, so the client gets our ErrorInfo rather than grpc's bare one.
DEADLINE_MARGIN_SHARE = 0.1
DEADLINE_MARGIN_MIN = 0.05
DEADLINE_MARGIN_MAX = 0.25


def deadline_margin(remaining: float) -> float:
    return min(DEADLINE_MARGIN_MAX, max(DEADLINE_MARGIN_MIN, remaining * DEADLINE_MARGIN_SHARE))


class SessionState(enum.StrEnum):
    """Where the session is."""

    DISCONNECTED = "disconnected"  # not connected and not trying (start-up, or Disconnect)
    CONNECTING = "connecting"  # an explicit attempt is running
    CONNECTED = "connected"  # API connection up and synchronised; requests are served
    RECONNECTING = "reconnecting"  # connection lost or refused; retrying with backoff
    CONNECTIVITY_LOST = "connectivity_lost"  # socket up, but TWS lost IB's servers (1100)
    STOPPED = "stopped"  # the gateway is shutting down


class SessionEvent(enum.StrEnum):
    """What just happened (the reason a listener is called)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    CONNECTIVITY_LOST = "connectivity_lost"  # IB 1100 / 2110
    CONNECTIVITY_RESTORED = "connectivity_restored"  # IB 1101 (data lost) / 1102 (kept)
    STOPPED = "stopped"


@dataclass(frozen=True)
class StateChange:
    """One state change, as given to state listeners.

    ``resubscribe`` is True when IB has forgotten market-data subscriptions (every
    CONNECTED event, and 1101): the quote hub re-subscribes its live contracts then.
    """

    event: SessionEvent
    state: SessionState
    message: str
    ib_code: int | None = None
    resubscribe: bool = False
    attempt: int = 0
    retry_in: float | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class SessionStatus:
    """A snapshot of the session for GetConnectionStatus and logs."""

    connected: bool
    state: SessionState
    host: str
    port: int
    client_id: int
    server_version: int
    accounts: tuple[str, ...]
    connected_since: datetime | None
    last_error: str
    last_error_code: int | None
    reconnect_attempts: int


StateListener = Callable[[StateChange], None]


class _HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


class IbSession:
    """The single managed connection to TWS / IB Gateway."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        client_id: int | None = None,
    ) -> None:
        self.settings = settings
        self.ib = IB()
        # TWS data is decoded a bounded amount per loop pass, so gRPC keeps its share
        self.ingest = pace_ingest(self.ib)
        # Errors tied to a request fail its future with RequestError (IB code kept)
        # instead of silently returning an empty result.
        self.ib.RaiseRequestErrors = True
        # IB allows an API client 50 messages a second (error 100 beyond, and TWS may
        # disconnect a client that keeps at it): ib_insync queues what exceeds this many
        # per sliding second and sends it as the window frees up.
        self.ib.client.MaxRequests = settings.tws_max_messages_per_second
        self.ib.client.RequestsInterval = 1
        self.ib.client.throttleStart += self._on_throttle_start
        self.throttled = 0  # how often the pacing had to hold messages back
        self.host = host if host is not None else settings.ibkr_host
        self.port = port if port is not None else settings.ibkr_port
        self.client_id = client_id if client_id is not None else settings.ibkr_client_id
        self.timeout = settings.ibkr_timeout
        self.read_only = settings.read_only
        self.live_trading_enabled = settings.allow_live_trading
        self.watchdog_interval = 30.0

        self._state = SessionState.DISCONNECTED
        self._want_connected = False
        self._attempting = False
        self._closing = False
        self._listeners: list[StateListener] = []
        self._lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._connected_since: datetime | None = None
        self._server_version = 0
        self._accounts: tuple[str, ...] = ()
        self._last_error = ""
        self._last_error_code: int | None = None
        self._attempts = 0
        self._state_changed = asyncio.Event()
        self._inflight: dict[str, asyncio.Future[Any]] = {}

        self.ib.disconnectedEvent += self._on_disconnected
        self.ib.errorEvent += self._on_ib_error

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> SessionState:
        return self._state

    def _on_throttle_start(self) -> None:
        self.throttled += 1
        log.info(
            "pacing requests to TWS: more than %d messages a second were asked for; the "
            "rest follow as IB's limit allows",
            self.ib.client.MaxRequests,
        )

    @property
    def connected(self) -> bool:
        """True while requests can be served (socket up, synced, IB servers reachable)."""
        return self._state is SessionState.CONNECTED and self.ib.isConnected()

    @property
    def accounts(self) -> list[str]:
        """Accounts managed by the logged-in user (kept from the last connection)."""
        return list(self._accounts)

    def status(self) -> SessionStatus:
        return SessionStatus(
            connected=self.connected,
            state=self._state,
            host=self.host,
            port=self.port,
            client_id=self.client_id,
            server_version=self._server_version if self.connected else 0,
            accounts=self._accounts,
            connected_since=self._connected_since if self.connected else None,
            last_error=self._last_error,
            last_error_code=self._last_error_code,
            reconnect_attempts=self._attempts,
        )

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener`` on every state change; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    @property
    def state_listener_count(self) -> int:
        """How many state listeners are registered (streams add and remove theirs)."""
        return len(self._listeners)

    async def wait_connected(self, within: float) -> bool:
        """Wait until the session is connected; False if it is not within ``within`` s."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while not self.connected:
            remaining = end - loop.time()
            if remaining <= 0:
                return False
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)
        return True

    def _set_state(self, state: SessionState, change: StateChange) -> None:
        self._state = state
        self._state_changed.set()
        log.info("IB session %s: %s", change.event.value, change.message)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("state listener %r failed", listener)

    def _change(self, event: SessionEvent, state: SessionState, message: str, **kw: Any) -> None:
        self._set_state(state, StateChange(event=event, state=state, message=message, **kw))

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect to the configured TWS; if that fails, keep retrying in the background.

        Never raises for an unreachable TWS: the gateway serves (and reports UNAVAILABLE)
        while the session reconnects.
        """
        async with self._lock:
            self._want_connected = True
            try:
                await self._attempt()
            except Exception as exc:
                log.warning(
                    "cannot connect to TWS at %s:%s (%s); retrying in the background",
                    self.host,
                    self.port,
                    self._last_error or exc,
                )
                self._ensure_reconnecting()

    async def stop(self) -> None:
        """Stop for good: no more reconnects, close the connection."""
        self._want_connected = False
        await self._cancel_reconnect()  # first: an attempt in progress holds the lock
        async with self._lock:
            await self._cancel_reconnect()
            self._close("gateway stopping")
            self._change(SessionEvent.STOPPED, SessionState.STOPPED, "session stopped")

    async def connect(
        self, host: str | None = None, port: int | None = None, client_id: int | None = None
    ) -> SessionStatus:
        """(Re)connect, optionally to another host/port/client id.

        A no-op when already connected to that target. On failure raises UNAVAILABLE and
        keeps retrying the new target in the background (the session never gives up).
        """
        await self._cancel_reconnect()  # an explicit attempt replaces the background one
        async with self._lock:
            target = (
                host or self.host,
                port if port else self.port,
                client_id if client_id is not None else self.client_id,
            )
            if self.connected and target == (self.host, self.port, self.client_id):
                return self.status()
            self._want_connected = True
            await self._cancel_reconnect()
            if self.ib.client.isConnected() or self._state is not SessionState.DISCONNECTED:
                self._close(f"reconnecting to {target[0]}:{target[1]}")
            self.host, self.port, self.client_id = target
            try:
                await self._attempt()
            except asyncio.CancelledError:
                # The caller left (client cancel or deadline): the background reconnect
                # was cancelled above, so hand the target over to it again.
                if self._want_connected:
                    self._ensure_reconnecting()
                raise
            except Exception as exc:
                self._ensure_reconnecting()
                raise self._connect_error(exc) from None
            return self.status()

    async def disconnect(self) -> SessionStatus:
        """Disconnect on request and stay disconnected until connect() is called."""
        self._want_connected = False
        await self._cancel_reconnect()  # first: an attempt in progress holds the lock
        async with self._lock:
            await self._cancel_reconnect()
            self._close("disconnected on request")
            return self.status()

    # --------------------------------------------------------------- helpers

    def require_connected(self) -> None:
        """Raise UNAVAILABLE (naming what to check) unless requests can be served."""
        if self.connected:
            return
        where = f"TWS / IB Gateway at {self.host}:{self.port} (client id {self.client_id})"
        if self._state is SessionState.CONNECTIVITY_LOST:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "IB_CONNECTIVITY_LOST",
                f"{where} has lost its connection to IB's servers; it restores it by itself",
                ib_code=1100,
                retry_after=5.0,
            )
        last = f"; last error: {self._last_error}" if self._last_error else ""
        if self._state is SessionState.RECONNECTING:
            detail = f"connection to {where} lost, reconnecting{last}"
        elif self._state is SessionState.STOPPED:
            detail = "the gateway is shutting down"
        elif self._state is SessionState.CONNECTING:
            detail = f"still connecting to {where}"
        else:
            detail = f"not connected to {where}{last}"
        exc = errors.not_connected(detail)
        if self._last_error_code is not None:
            exc.metadata["last_ib_code"] = str(self._last_error_code)
        exc.metadata["state"] = self._state.value
        raise exc

    def budget(self, context: _HasTimeRemaining | None = None) -> float:
        """Seconds an IB wait may take: IBKR_TIMEOUT, capped by the client's deadline."""
        limit = self.timeout
        if context is not None:
            remaining = context.time_remaining()
            if remaining is not None:
                limit = min(limit, max(0.0, remaining - deadline_margin(remaining)))
        return limit

    async def request(
        self,
        awaitable: Awaitable[T] | Callable[[], Awaitable[T]],
        *,
        what: str,
        max_wait: float | None = None,
        context: _HasTimeRemaining | None = None,
    ) -> T:
        """Await one IB answer, bounded and mapped.

        ``awaitable`` may be a zero-argument callable producing it (preferred: then a
        request that cannot even be sent is reported as UNAVAILABLE too). The wait is
        bounded by min(IBKR_TIMEOUT, ``max_wait``, the client's remaining deadline) →
        DEADLINE_EXCEEDED; a lost connection → UNAVAILABLE; an IB error → the mapped code.
        """
        if not self.connected:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self.require_connected()
        limit = self.budget(context)
        if max_wait is not None:
            limit = min(limit, max_wait)
        try:
            aw = awaitable() if callable(awaitable) else awaitable
            task: asyncio.Future[T] = asyncio.ensure_future(aw)
        except ConnectionError:
            raise errors.not_connected(f"cannot send {what}: not connected") from None
        lost = self._lost
        waiters: set[asyncio.Future[Any]] = {task}
        if lost is not None:
            waiters.add(lost)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            try:
                return task.result()
            except RequestError as exc:
                err = errors.from_ib_error(exc.code, exc.message)
                err.metadata.setdefault("operation", what)
                raise err from None
            except ConnectionError:
                raise errors.not_connected(f"connection to TWS lost during {what}") from None
        task.cancel()
        if lost is not None and lost in done:
            raise errors.not_connected(f"connection to TWS lost during {what}")
        raise errors.deadline_exceeded(what, limit)

    async def shared(
        self,
        key: str,
        factory: Callable[[], Awaitable[T]],
        *,
        what: str,
        context: _HasTimeRemaining | None = None,
    ) -> T:
        """Like :meth:`request`, but concurrent callers with the same ``key`` share one
        IB request. Needed for ib_insync requests keyed by a fixed name rather than a
        request id (positions, open orders, completed orders, executions, account
        updates): a second concurrent call would orphan the first one's future.

        The shared request is bounded by IBKR_TIMEOUT; each caller's wait by its own
        deadline (a caller giving up does not cancel it for the others).
        """
        running = self._inflight.get(key)
        if running is None or running.done():
            running = asyncio.ensure_future(self.request(factory, what=what))
            self._inflight[key] = running

            def forget(done: asyncio.Future[Any]) -> None:
                if self._inflight.get(key) is done:
                    del self._inflight[key]
                if not done.cancelled():
                    done.exception()  # retrieved here; reported to every waiter

            running.add_done_callback(forget)
        result: T = await self.request(asyncio.shield(running), what=what, context=context)
        return result

    async def qualify_details(
        self, contract: Contract, *, context: _HasTimeRemaining | None = None
    ) -> ContractDetails:
        """The one ContractDetails matching a (partial) contract.

        NOT_FOUND (CONTRACT_NOT_FOUND) when IB knows none; INVALID_ARGUMENT
        (AMBIGUOUS_CONTRACT, with the candidates in metadata) when several match.
        """
        spec = describe_contract(contract)
        details = await self.request(
            lambda: self.ib.reqContractDetailsAsync(contract),
            what=f"contract details of {spec}",
            context=context,
        )
        if not details:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                "CONTRACT_NOT_FOUND",
                f"no security definition found for {spec}",
                ib_code=200,
                metadata={"contract": spec},
            )
        if len(details) > 1:
            candidates = [describe_contract(d.contract) for d in details if d.contract]
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "AMBIGUOUS_CONTRACT",
                f"{spec} matches {len(details)} contracts; give exchange, currency, "
                f"trading class or con_id: {'; '.join(candidates[:10])}",
                metadata={"contract": spec, "candidates": "; ".join(candidates[:20])},
                field_violations=[("contract", f"ambiguous: {len(details)} matches")],
            )
        found = details[0]
        if found.contract is not None and found.contract.secType == "CONTFUT":
            # IB answers a continuous future with the front month's con_id: that future
            found.contract.secType = "FUT"
        if found.contract is not None and found.contract.lastTradeDateOrContractMonth:
            # like ib_insync: drop the time/zone part, which breaks later requests
            c = found.contract
            c.lastTradeDateOrContractMonth = c.lastTradeDateOrContractMonth.split()[0]
        return found

    async def qualify(
        self, contract: Contract, *, context: _HasTimeRemaining | None = None
    ) -> Contract:
        """The fully qualified contract (with con_id) for a partial spec; see qualify_details."""
        details = await self.qualify_details(contract, context=context)
        assert details.contract is not None
        return details.contract

    def resolve_account(self, account: str, *, field: str = "account") -> str:
        """The account a request means: the given one if managed, else the default.

        Default: IBKR_ACCOUNT, else the only / first managed account. An account this
        login does not manage is INVALID_ARGUMENT (UNKNOWN_ACCOUNT, field violation).
        """
        managed = self._accounts
        if account:
            if managed and account not in managed:
                raise GatewayError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "UNKNOWN_ACCOUNT",
                    f"account {account!r} is not managed by this login "
                    f"(managed: {', '.join(managed)})",
                    metadata={"account": account, "managed_accounts": ",".join(managed)},
                    field_violations=[(field, f"unknown account {account!r}")],
                )
            return account
        if self.settings.ibkr_account:
            return self.settings.ibkr_account
        if managed:
            return managed[0]
        self.require_connected()
        raise GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION, "NO_ACCOUNT", "TWS reported no managed account"
        )

    # --------------------------------------------------------------- internals

    async def _attempt(self) -> None:
        """One connection attempt to the current target; raises on failure."""
        self._attempting = True
        self._change(
            SessionEvent.CONNECTING,
            SessionState.CONNECTING if not self._attempts else SessionState.RECONNECTING,
            f"connecting to {self.host}:{self.port} with client id {self.client_id}",
            attempt=self._attempts,
        )
        errors_seen: list[tuple[int, str]] = []
        # ib_insync waits out its whole timeout when TWS refuses the handshake (326) and
        # closes the socket; end the attempt as soon as that is known.
        refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def note(req_id: int, code: int, message: str, contract: object) -> None:
            if code in (326, 502, 504) or (req_id == -1 and not 2100 <= code < 2200):
                errors_seen.append((code, message))
            if code == 326 and not refused.done():
                refused.set_result(message)

        def api_error(message: str) -> None:
            if not refused.done() and not self.ib.client.isReady():
                refused.set_result(message)

        self.ib.errorEvent += note
        self.ib.client.apiError += api_error
        connecting = asyncio.ensure_future(
            self.ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=self.timeout,
                account=self.settings.ibkr_account,
            )
        )
        try:
            # connectAsync bounds each of its steps by `timeout`; cap the whole.
            done, _ = await asyncio.wait(
                {connecting, refused},
                timeout=self.timeout * 3,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if connecting in done:
                connecting.result()
            elif refused in done:
                raise ConnectionError(refused.result() or "TWS closed the connection")
            else:
                raise TimeoutError()
            if not self.ib.isConnected():
                raise ConnectionError("socket closed while synchronising")
        except BaseException as exc:
            await _cancel_firmly(connecting)
            if not isinstance(exc, asyncio.CancelledError):
                code, text = errors_seen[-1] if errors_seen else (None, _describe(exc))
                self._last_error, self._last_error_code = text, code
            with contextlib.suppress(Exception):
                self.ib.disconnect()
            raise
        finally:
            self._attempting = False
            self.ib.errorEvent -= note
            self.ib.client.apiError -= api_error
        self._attempts = 0
        self._connected_since = datetime.now(UTC)
        self._server_version = self.ib.client.serverVersion()
        self._accounts = tuple(self.ib.managedAccounts())
        self._lost = asyncio.get_running_loop().create_future()
        self._last_error, self._last_error_code = "", None
        self._start_watchdog()
        self._change(
            SessionEvent.CONNECTED,
            SessionState.CONNECTED,
            f"connected to {self.host}:{self.port} (client id {self.client_id}, server "
            f"version {self._server_version}, accounts {', '.join(self._accounts) or '-'})",
            resubscribe=True,
        )

    def _connect_error(self, exc: BaseException) -> GatewayError:
        if self._last_error_code is not None:
            return errors.from_ib_error(self._last_error_code, self._last_error)
        target = f"{self.host}:{self.port}"
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return errors.not_connected(f"TWS at {target} did not answer in {self.timeout:g}s")
        return errors.not_connected(f"cannot connect to TWS at {target}: {_describe(exc)}")

    def _close(self, why: str) -> None:
        """Close the connection on our own initiative (no reconnect triggered)."""
        self._stop_watchdog()
        was_up = self.ib.client.isConnected() or self._state in (
            SessionState.CONNECTED,
            SessionState.CONNECTIVITY_LOST,
        )
        self._closing = True
        try:
            if self.ib.client.isConnected():
                # Fail every pending ib_insync future and drop stale state, as ib_insync
                # does itself when the peer closes the socket.
                self.ib.wrapper.connectionClosed()
            self.ib.disconnect()
        finally:
            self._closing = False
        self._mark_lost()
        if was_up:
            self._change(SessionEvent.DISCONNECTED, SessionState.DISCONNECTED, why)
        else:
            self._state = SessionState.DISCONNECTED
            self._state_changed.set()

    def _mark_lost(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._lost = None

    def _on_disconnected(self) -> None:
        if self._closing or self._attempting:
            return
        self._stop_watchdog()
        self._mark_lost()
        if self._state is SessionState.STOPPED:
            return
        self._last_error = self._last_error or "connection to TWS closed"
        self._change(
            SessionEvent.DISCONNECTED,
            SessionState.RECONNECTING if self._want_connected else SessionState.DISCONNECTED,
            f"connection to TWS at {self.host}:{self.port} lost",
        )
        if self._want_connected:
            self._ensure_reconnecting()

    def _on_ib_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if code in (1100, 2110):
            if self._state is SessionState.CONNECTED:
                self._change(
                    SessionEvent.CONNECTIVITY_LOST,
                    SessionState.CONNECTIVITY_LOST,
                    f"TWS lost connectivity to IB ({code}: {message})",
                    ib_code=code,
                )
        elif code in (1101, 1102):
            if self._state in (SessionState.CONNECTIVITY_LOST, SessionState.CONNECTED):
                self._change(
                    SessionEvent.CONNECTIVITY_RESTORED,
                    SessionState.CONNECTED,
                    f"TWS connectivity to IB restored ({code}: {message})",
                    ib_code=code,
                    resubscribe=code == 1101,
                )
        elif req_id == -1 and not 2100 <= code < 2200:
            self._last_error, self._last_error_code = message, code

    def _ensure_reconnecting(self) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(
                self._reconnect_loop(), name="ib-reconnect"
            )

    async def _cancel_reconnect(self) -> None:
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def backoff_delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based): exponential, equal jitter."""
        s = self.settings
        ceiling = min(s.reconnect_max_delay, s.reconnect_initial_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _reconnect_loop(self) -> None:
        max_attempts = self.settings.reconnect_max_attempts
        while self._want_connected and not self.connected:
            self._attempts += 1
            delay = self.backoff_delay(self._attempts)
            self._change(
                SessionEvent.RECONNECTING,
                SessionState.RECONNECTING,
                f"retrying {self.host}:{self.port} in {delay:.2f}s (attempt {self._attempts}"
                + (f", last error: {self._last_error})" if self._last_error else ")"),
                attempt=self._attempts,
                retry_in=delay,
            )
            await asyncio.sleep(delay)
            async with self._lock:
                if not self._want_connected or self.connected:
                    return
                try:
                    await self._attempt()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "reconnect attempt %d to %s:%s failed: %s",
                        self._attempts,
                        self.host,
                        self.port,
                        self._last_error or _describe(exc),
                    )
                    self._state = SessionState.RECONNECTING
            if max_attempts and self._attempts >= max_attempts:
                self._want_connected = False
                self._change(
                    SessionEvent.DISCONNECTED,
                    SessionState.DISCONNECTED,
                    f"giving up after {self._attempts} attempts (IBGW_RECONNECT_MAX_ATTEMPTS)",
                )
                return

    def _start_watchdog(self) -> None:
        self._stop_watchdog()
        if self.watchdog_interval > 0:
            self._watchdog_task = asyncio.get_running_loop().create_task(
                self._watchdog(), name="ib-watchdog"
            )

    def _stop_watchdog(self) -> None:
        task, self._watchdog_task = self._watchdog_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _watchdog(self) -> None:
        """Ping TWS; a connection that stops answering is closed and reconnected."""
        misses = 0
        while True:
            await asyncio.sleep(self.watchdog_interval)
            if not self.ib.isConnected():
                return
            try:
                await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.timeout)
                misses = 0
            except (TimeoutError, ConnectionError, RequestError) as exc:
                misses += 1
                log.warning("TWS did not answer the watchdog ping (%s), miss %d", exc, misses)
                if misses >= 2:
                    self._last_error = "TWS stopped answering (watchdog)"
                    self._watchdog_task = None
                    # An unanswered socket: fail pending requests and close it;
                    # _on_disconnected then starts reconnecting.
                    self.ib.wrapper.connectionClosed()
                    self.ib.disconnect()
                    return


async def _cancel_firmly(task: asyncio.Future[Any], within: float = 2.0) -> None:
    """Cancel ``task`` and wait for it to end. Python 3.11's asyncio.wait_for can swallow
    a cancellation that races with its inner future (ib_insync's connect is built on
    it), so the cancellation is repeated until it takes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not task.done() and loop.time() < end:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the caller reports the failure itself


def describe_contract(contract: Contract) -> str:
    """A short human description of a (partial) contract for messages and metadata."""
    parts = [
        contract.symbol or "",
        contract.secType or "",
        contract.lastTradeDateOrContractMonth or "",
        str(contract.strike) if contract.strike else "",
        contract.right or "",
        contract.exchange or "",
        contract.currency or "",
    ]
    text = " ".join(p for p in parts if p)
    if contract.tradingClass and contract.secType in ("OPT", "FOP", "FUT"):
        # what tells apart e.g. SPX (monthly) and SPXW (weekly) options
        text = f"{text} class={contract.tradingClass}"
    if contract.conId:
        text = f"{text} conId={contract.conId}".strip()
    return text or "an empty contract"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is TWS running and its API port open?)"
    return str(exc) or type(exc).__name__
