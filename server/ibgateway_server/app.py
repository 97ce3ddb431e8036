"""Builds and runs the gateway: grpc.aio server, servicers, reflection, health,
interceptors, metrics, graceful shutdown and the embedded TWS simulator.

    async with Gateway(settings) as gw:      # listening on gw.address
        await gw.wait_stopped()              # or: await run(settings) for SIGTERM/SIGINT
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
from typing import Any, cast

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import start_http_server

from ibgateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    connection_pb2,
    connection_pb2_grpc,
    market_data_pb2,
    orders_pb2,
    orders_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from ibgateway_server.api import metrics as gateway_metrics
from ibgateway_server.api.account import AccountServicer
from ibgateway_server.api.connection import ConnectionServicer, ConnectTargets
from ibgateway_server.api.interceptors import (
    AccessLogInterceptor,
    AdmissionInterceptor,
    AdmissionLimits,
    AuthInterceptor,
    ErrorMappingInterceptor,
    GatewayMetrics,
    MetricsInterceptor,
    RequestCheckInterceptor,
)
from ibgateway_server.api.market_data import (
    MarketDataServicer,
    add_market_data_service,
    market_data_handlers,
)
from ibgateway_server.api.orders import OrderServicer
from ibgateway_server.api.portfolio import PortfolioServicer
from ibgateway_server.api.reflection import add_reflection
from ibgateway_server.cluster.edge import EdgeNode, PassThroughEncoder
from ibgateway_server.cluster.order_events import EdgeOrderBook
from ibgateway_server.cluster.owner import OwnerNode, StandbyGuard
from ibgateway_server.config import ConfigError, Settings
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.session import IbSession, SessionEvent, SessionState, StateChange
from ibgateway_server.market_data.depth import DepthHub
from ibgateway_server.market_data.history import HistoryService
from ibgateway_server.market_data.hub import QuoteHub
from ibgateway_server.market_data.live_bars import BarHub
from ibgateway_server.orders.book import OrderBook
from ibgateway_server.orders.journal import SqliteJournal
from ibgateway_server.portfolio.accounts import AccountSummaries
from tws_simulator import SimulatorConfig, TwsSimulator

log = logging.getLogger(__name__)

KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
PENDING_CALLS = 20_000
PENDING_CALLS_HARD = 30_000

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GatewayHealth(HealthServicer):
    """grpc.health.v1 whose Watch streams end (with OK) when the gateway shuts down, after
    they have sent NOT_SERVING: client-side health checking keeps a Watch open on every
    channel, and those must not hold the shutdown for the whole grace period."""

    def __init__(self) -> None:
        super().__init__()
        self.watches_end = asyncio.Event()

    async def Watch(self, request: Any, context: Any) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        ending = asyncio.ensure_future(self.watches_end.wait())
        try:
            await asyncio.wait({watching, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watching, ending):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching


def _service_name(module: Any, name: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[name].full_name)


class Gateway:
    """One gateway: a grpc.aio server over one IbSession (and, for backend "sim", an
    embedded TWS simulator on 127.0.0.1 in the same event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.history: HistoryService | None = None
        gateway_metrics.register(
            self.metrics.registry,
            gateway_metrics.Sources(
                session=lambda: self.session,
                hub=lambda: self.hub,
                order_book=lambda: self.order_book,
                history=lambda: self.history,
                line_budget=settings.quote_line_budget,
            ),
        )
        self.health = GatewayHealth()
        self.simulator: TwsSimulator | None = None
        self.session: IbSession | None = None
        self.hub: QuoteHub | None = None
        self.order_book: OrderBook | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.address = ""
        self.metrics_port: int | None = None
        self.ib_service_names: list[str] = []
        self._metrics_http: Any = None
        self._health_dirty = asyncio.Event()
        self._health_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self._closers: list[Any] = []

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        refusal, warnings = s.exposure()
        if refusal is not None:
            log.critical("%s", refusal)
            raise ConfigError(refusal)
        for warning in warnings:
            log.warning("%s", warning)
        try:
            await self._start_backend()
            assert self.session is not None
            self.server = self._build_server()
            for name in self.ib_service_names:
                await self.health.set(name, NOT_SERVING)
            host, port = s.listen_host_port
            bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.port = self._bind(bind)
            self._bind_internal()
            shown_host = "127.0.0.1" if host in ("0.0.0.0", "*", "::") else host
            self.address = f"{shown_host}:{self.port}"
            await self.server.start()
            self._start_metrics_http()
            self.session.add_state_listener(self._on_session_change)
            self._health_task = asyncio.get_running_loop().create_task(
                self._sync_health(), name="health-sync"
            )
            self._log_listening()
            await self._start_session()
            self._health_dirty.set()
        except BaseException:
            await self.stop(0)
            raise

    async def _start_backend(self) -> None:
        s = self.settings
        host, port = s.ibkr_host, s.ibkr_port
        if s.backend == "sim":
            config = SimulatorConfig(host="127.0.0.1", port=s.sim_port, seed=s.sim_seed)
            if s.sim_tick_interval is not None:
                config = dataclasses.replace(config, tick_interval=s.sim_tick_interval)
            self.simulator = TwsSimulator(config)
            await self.simulator.start()
            host, port = self.simulator.host, self.simulator.port
            log.info("embedded TWS simulator on %s:%s", host, port)
        self.session = IbSession(s, host=host, port=port)

    def _log_listening(self) -> None:
        assert self.session is not None
        log.info(
            "ibgateway listening on %s (backend %s, TWS %s:%s, read-only %s)",
            self.address,
            self.settings.backend,
            self.session.host,
            self.session.port,
            self.settings.read_only,
        )

    async def _start_session(self) -> None:
        assert self.session is not None
        await self.session.start()

    def _bind_internal(self) -> None:
        """An extra port for the process itself (the owner of a cluster replays
        forwarded calls on it); none in the all-in-one gateway."""

    def _admission_limits(self) -> AdmissionLimits:
        s = self.settings
        # An owner replays calls its edges forwarded (they limit their own clients).
        rate = 0.0 if s.role == "owner" else s.rate_limit
        return AdmissionLimits(
            max_streams=s.max_streams,
            max_streams_per_client=s.max_streams_per_client,
            unary_rate=rate,
            unary_burst=max(1, int(rate * 2)),
        )

    def _extra_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Interceptors inside the error mapper (a cluster role's own)."""
        return []

    def _ready(self) -> bool:
        """Whether the ibgateway services are SERVING (readiness)."""
        return self.session is not None and self.session.connected

    def _build_server(self) -> grpc.aio.Server:
        assert self.session is not None
        interceptors: list[grpc.aio.ServerInterceptor] = [
            MetricsInterceptor(self.metrics),
            AccessLogInterceptor(),
            ErrorMappingInterceptor(),
        ]
        tokens = self.settings.tokens()
        if tokens:
            interceptors.append(AuthInterceptor(tokens))
            log.info("bearer-token authentication on (%d token(s))", len(tokens))
        interceptors.append(AdmissionInterceptor(self._admission_limits()))
        interceptors.append(RequestCheckInterceptor(self.settings.max_request_bytes))
        interceptors += self._extra_interceptors()
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                # The request interceptor refuses (logged, counted) what exceeds
                # IBGW_MAX_REQUEST_BYTES; the transport only stops what is far beyond it.
                ("grpc.max_receive_message_length", 4 * self.settings.max_request_bytes),
                # several edges of a cluster may share one port (one process per core)
                ("grpc.so_reuseport", 1 if self.settings.reuse_port_effective else 0),
                # Ping idle connections so that a client that vanished without closing
                # (crashed host, cut network) is detected and its streams and quote lines
                # are released instead of being held until TCP gives up.
                ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                # Calls waiting for the server to pick them up: beyond grpc's defaults
                # (1000, hard 3000) it resets them (the client sees CANCELLED, nothing
                # logged); with room here every one reaches the admission limits and gets
                # a clear RESOURCE_EXHAUSTED instead.
                ("grpc.server.max_pending_requests", PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS_HARD),
            ],
        )
        names = self._add_services(server)
        self.ib_service_names = names
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        add_reflection(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
        return server

    def _add_services(self, server: grpc.aio.Server) -> list[str]:
        """Register the ibgateway.v1 services; returns their names."""
        assert self.session is not None
        session = self.session
        summaries = AccountSummaries(session)
        connection = ConnectionServicer(
            session,
            summaries,
            backend=self.settings.backend,
            sample_symbol=self.settings.check_symbol,
            heartbeat_seconds=self.settings.heartbeat_seconds,
            connect_targets=ConnectTargets.parse(
                self.settings.connect_allow, session.host, session.port
            ),
        )
        # at shutdown WatchConnectionStatus streams end (OK) before the server drains
        self._closers.append(connection.close)
        connection_pb2_grpc.add_ConnectionServiceServicer_to_server(connection, server)
        account_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(session, summaries), server
        )
        portfolio = PortfolioServicer(session, heartbeat_seconds=self.settings.heartbeat_seconds)
        # at shutdown WatchPortfolio streams end (OK) before the server drains
        self._closers.append(portfolio.close)
        portfolio_pb2_grpc.add_PortfolioServiceServicer_to_server(portfolio, server)
        names = [
            _service_name(connection_pb2, "ConnectionService"),
            _service_name(account_pb2, "AccountService"),
            _service_name(portfolio_pb2, "PortfolioService"),
        ]
        names += self._add_trading_services(server)
        return names

    def _add_trading_services(self, server: grpc.aio.Server) -> list[str]:
        """Market data (through the QuoteHub) and orders; returns the services' names."""
        assert self.session is not None
        self.hub = QuoteHub(
            self.session,
            line_budget=self.settings.quote_line_budget,
            heartbeat_seconds=self.settings.heartbeat_seconds,
        )
        self.hub.start()
        # at shutdown the hub ends every quote stream before the server drains
        self._closers.append(self.hub.close)
        history = HistoryService(
            self.session,
            requests_per_10min=self.settings.history_requests_per_10min,
            cache_seconds=self.settings.history_cache_seconds,
        )
        self.history = history
        bars = BarHub(self.session, self.hub, history.pacer)
        bars.start()
        # at shutdown StreamBars streams end (OK) before the server drains
        self._closers.append(bars.close)
        depth = DepthHub(self.session)
        # at shutdown StreamDepth streams end (OK) before the server drains
        self._closers.append(depth.close)
        market_data = MarketDataServicer(
            self.session, self.hub, history=history, bars=bars, depth=depth
        )
        names = [add_market_data_service(server, market_data)]

        journal_path = self.settings.order_journal_path()
        journal = (
            SqliteJournal(
                journal_path,
                max_events=self.settings.journal_max_events,
                max_age_days=self.settings.journal_max_age_days,
            )
            if journal_path is not None
            else None
        )
        self.order_book = OrderBook(self.session, journal=journal)
        self.order_book.start()  # rebuilds itself from TWS on every (re)connect
        self._closers.append(self.order_book.close)
        orders_pb2_grpc.add_OrderServiceServicer_to_server(
            OrderServicer(self.session, self.order_book, self.settings), server
        )
        names.append(_service_name(orders_pb2, "OrderService"))
        return names

    def _bind(self, address: str) -> int:
        assert self.server is not None
        s = self.settings
        if s.tls_cert is None or s.tls_key is None:
            return self.server.add_insecure_port(address)
        ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
        credentials = grpc.ssl_server_credentials(
            [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )
        return self.server.add_secure_port(address, credentials)

    def _start_metrics_http(self) -> None:
        port = self.settings.metrics_port
        if port is None:
            return
        host = self.settings.metrics_host
        server, _thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        self._metrics_http = server
        self.metrics_port = int(server.server_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.metrics_port)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING everywhere, streams end, RPCs drain within
        ``grace`` seconds (IBGW_SHUTDOWN_GRACE), then IB and the simulator go down."""
        async with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.settings.shutdown_grace if grace is None else grace
            log.info("ibgateway shutting down (grace %.1fs)", grace)
            await self.health.enter_graceful_shutdown()
            await asyncio.sleep(0.05)  # let Watch streams send NOT_SERVING, then end them
            self.health.watches_end.set()
            for close in self._closers:
                with contextlib.suppress(Exception):
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
            if self.server is not None:
                await self.server.stop(grace)
            if self._health_task is not None:
                self._health_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._health_task
            if self.session is not None:
                await self.session.stop()
            if self.simulator is not None:
                await self.simulator.stop()
            if self._metrics_http is not None:
                self._metrics_http.shutdown()
                self._metrics_http.server_close()
            self._stopped.set()
            log.info("ibgateway stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --------------------------------------------------------------- health

    def _on_session_change(self, change: StateChange) -> None:
        m = self.metrics
        connected = change.state is SessionState.CONNECTED
        m.ib_connected.set(1 if connected else 0)
        for state in SessionState:
            m.ib_state.labels(state.value).set(1 if state is change.state else 0)
        if change.event is SessionEvent.DISCONNECTED and change.state is SessionState.RECONNECTING:
            m.ib_disconnects.inc()
        self._health_dirty.set()

    async def _sync_health(self) -> None:
        """Each ibgateway.v1 service is SERVING exactly while the IB session is up."""
        current: int | None = None
        while True:
            await self._health_dirty.wait()
            self._health_dirty.clear()
            assert self.session is not None
            wanted = SERVING if self._ready() else NOT_SERVING
            if wanted != current:
                for name in self.ib_service_names:
                    await self.health.set(name, wanted)
                current = wanted
                log.info(
                    "health: ibgateway services %s",
                    "SERVING" if wanted == SERVING else "NOT_SERVING",
                )


class OwnerGateway(Gateway):
    """``ibgw serve --role owner``: the all-in-one gateway whose IB session starts only
    while it holds the cluster's owner lease, and which then also publishes on NATS
    (see :mod:`ibgateway_server.cluster.owner`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.node: OwnerNode | None = None
        self.internal_port = 0

    def _bind_internal(self) -> None:
        # forwarded calls are replayed here: loopback, plaintext, whatever the listener
        assert self.server is not None
        self.internal_port = self.server.add_insecure_port("127.0.0.1:0")

    def _extra_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [StandbyGuard(lambda: self.node is not None and self.node.holding)]

    async def _start_session(self) -> None:
        assert self.session is not None and self.hub is not None
        assert self.order_book is not None
        self.node = OwnerNode(
            self.settings,
            self.session,
            self.hub,
            self.order_book,
            internal_target=lambda: f"127.0.0.1:{self.internal_port}",
            registry=self.metrics.registry,
        )
        # at shutdown the node fences (IB down) and gives the lease up first
        self._closers.insert(0, self.node.stop)
        await self.node.start()


class EdgeGateway(Gateway):
    """``ibgw serve --role edge``: the whole gRPC API with no IB connection; streams are
    served here from NATS, calls that need IB go to the owner (see
    :mod:`ibgateway_server.cluster.edge`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.node = EdgeNode(settings, self.metrics.registry)
        self.node.on_ready_change = self._health_dirty.set

    async def _start_backend(self) -> None:
        # the servicers and the hub use the session's interface, which RemoteSession has
        self.session = cast(IbSession, self.node.session)

    def _log_listening(self) -> None:
        log.info(
            "ibgateway edge listening on %s (NATS %s, cluster %s)",
            self.address,
            self.settings.nats_url,
            self.settings.cluster,
        )

    def _ready(self) -> bool:
        return self.node.ready

    def _add_services(self, server: grpc.aio.Server) -> list[str]:
        s = self.settings
        session = self.session
        assert session is not None
        self.hub = QuoteHub(
            session,
            line_budget=s.quote_line_budget,
            heartbeat_seconds=s.heartbeat_seconds,
            encoder=PassThroughEncoder,
        )
        self.hub.start()
        self._closers.append(self.hub.close)
        connection = ConnectionServicer(
            session,
            AccountSummaries(session),
            backend=s.backend,
            heartbeat_seconds=s.heartbeat_seconds,
        )
        self._closers.append(connection.close)
        market_data = MarketDataServicer(session, self.hub)
        # order events from the edge's JetStream mirror; the other order calls go to the owner
        orders = OrderServicer(session, cast(OrderBook, EdgeOrderBook(self.node.mirror)), s)
        self._closers.append(self.node.mirror.close)
        # the streams are served here; every unary call goes to the owner
        local: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "StreamQuotes": market_data_handlers(market_data)["StreamQuotes"],
            "WatchConnectionStatus": grpc.unary_stream_rpc_method_handler(
                connection.WatchConnectionStatus,
                request_deserializer=connection_pb2.WatchConnectionStatusRequest.FromString,
                response_serializer=connection_pb2.WatchConnectionStatusResponse.SerializeToString,
            ),
            "StreamOrderEvents": grpc.unary_stream_rpc_method_handler(
                orders.StreamOrderEvents,
                request_deserializer=orders_pb2.StreamOrderEventsRequest.FromString,
                response_serializer=orders_pb2.StreamOrderEventsResponse.SerializeToString,
            ),
        }
        names = []
        for module in (connection_pb2, account_pb2, portfolio_pb2, market_data_pb2, orders_pb2):
            for service in module.DESCRIPTOR.services_by_name.values():
                handlers = {
                    m.name: (local.get(m.name) or _not_on_edge(m.name))
                    if m.server_streaming
                    else self.node_forwarder(f"/{service.full_name}/{m.name}")
                    for m in service.methods
                }
                server.add_generic_rpc_handlers(
                    (grpc.method_handlers_generic_handler(service.full_name, handlers),)
                )
                server.add_registered_method_handlers(service.full_name, handlers)
                names.append(service.full_name)
        return names

    def node_forwarder(self, method: str) -> grpc.RpcMethodHandler[Any, Any]:
        async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return await self.node.forwarder.handler_call(method, request, context)

        return grpc.unary_unary_rpc_method_handler(forward)


def _not_on_edge(method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A stream an edge does not serve (yet): UNIMPLEMENTED, reason NOT_ON_EDGE."""

    async def refuse(request: bytes, context: Any) -> None:
        raise GatewayError(
            grpc.StatusCode.UNIMPLEMENTED,
            "NOT_ON_EDGE",
            f"{method} is not served by edges yet; connect to the owner",
        )

    return grpc.unary_stream_rpc_method_handler(refuse)


def make_gateway(settings: Settings) -> Gateway:
    """The gateway of the configured role."""
    if settings.role == "owner":
        return OwnerGateway(settings)
    if settings.role == "edge":
        return EdgeGateway(settings)
    return Gateway(settings)


# Young collections every 20,000 allocations instead of 700 (most objects of a call or a
# message die young, by reference counting, long before), and a full collection only
# after 100 middle ones instead of 10: with 1,000 streams open a full collection walks
# every call's objects and pauses the loop for 100+ ms (the quote latency tail, bench/).
GC_THRESHOLD = (20_000, 20, 100)


def freeze_startup_objects() -> None:
    """Move everything built at start-up (it lives as long as the process) out of the
    garbage collector's reach, so that full collections stay short, and space the
    collections out (:data:`GC_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = make_gateway(settings)
    try:
        # a signal during start-up (e.g. while TWS keeps us waiting) stops at once
        starting = asyncio.ensure_future(gateway.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            freeze_startup_objects()
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await gateway.stop()
