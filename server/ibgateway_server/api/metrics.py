"""The gateway's own Prometheus metrics (``ibgw_*``), read from the domains' stats when
Prometheus scrapes, so that the quote and order paths pay nothing for them; and the
process metrics (CPU, memory, file descriptors, GC) on the gateway's registry.

The gRPC metrics (``grpc_server_*``) are counted per call by the MetricsInterceptor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ibgateway_server.ib.session import IbSession
from ibgateway_server.market_data.history import HistoryService
from ibgateway_server.market_data.hub import QuoteHub
from ibgateway_server.orders.book import OrderBook


@dataclass
class Sources:
    """Where the numbers come from; each may be absent (e.g. an edge has no order book)."""

    session: Callable[[], IbSession | None]
    hub: Callable[[], QuoteHub | None]
    order_book: Callable[[], OrderBook | None]
    history: Callable[[], HistoryService | None]
    line_budget: int


class GatewayCollector(Collector):
    """``ibgw_*`` metrics of the IB session, the quote hub, the order-event log and the
    historical-data pacer, computed at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        yield from self._session()
        yield from self._quotes()
        yield from self._orders()
        yield from self._history()

    def _session(self) -> Iterable[Metric]:
        session = self.sources.session()
        if session is None:
            return
        status = session.status()
        yield GaugeMetricFamily(
            "ibgw_ib_reconnect_attempts",
            "Failed attempts of the current reconnect (0 while connected)",
            value=status.reconnect_attempts,
        )

    def _quotes(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "ibgw_quote_line_budget",
            "IB market-data lines the quote hub may use (IBGW_QUOTE_LINE_BUDGET)",
            value=self.sources.line_budget,
        )
        hub = self.sources.hub()
        if hub is None:
            return
        stats = hub.stats()
        yield GaugeMetricFamily(
            "ibgw_quote_lines",
            "IB market-data lines held (active, pending, paused or lingering)",
            value=stats.lines,
        )
        yield GaugeMetricFamily(
            "ibgw_quote_lines_active",
            "IB market-data lines with a consumer",
            value=stats.active_lines,
        )
        yield GaugeMetricFamily(
            "ibgw_quote_subscriptions_waiting",
            "Contracts of open streams waiting for a line (LIMIT_REACHED)",
            value=stats.waiting,
        )
        yield GaugeMetricFamily(
            "ibgw_quote_streams", "Open StreamQuotes streams", value=stats.streams
        )
        yield CounterMetricFamily(
            "ibgw_quote_updates",
            "Quote updates received from IB (each reaches every stream of its contract)",
            value=stats.updates,
        )
        yield GaugeMetricFamily(
            "ibgw_quote_stream_max_lag",
            "Updates the slowest quote stream has not been sent yet (conflated when it catches up)",
            value=stats.max_lag,
        )

    def _orders(self) -> Iterable[Metric]:
        book = self.sources.order_book()
        if book is None:
            return
        stats = book.events.stats()
        yield CounterMetricFamily(
            "ibgw_order_events", "Order events of this gateway run", value=stats.last_sequence
        )
        yield GaugeMetricFamily(
            "ibgw_order_events_held", "Order events held for resume", value=stats.held
        )
        yield GaugeMetricFamily(
            "ibgw_order_event_streams", "Open StreamOrderEvents streams", value=stats.streams
        )
        yield GaugeMetricFamily(
            "ibgw_order_event_stream_max_lag",
            "Events the slowest order-event stream has not sent yet",
            value=stats.max_lag,
        )

    def _history(self) -> Iterable[Metric]:
        history = self.sources.history()
        if history is None:
            return
        yield GaugeMetricFamily(
            "ibgw_history_requests_10min",
            "Historical-data requests sent to IB in the last 10 minutes (IB's pacing window)",
            value=history.pacer.used,
        )
        yield GaugeMetricFamily(
            "ibgw_history_requests_10min_limit",
            "The most the gateway sends in 10 minutes (IBGW_HISTORY_REQUESTS_PER_10MIN)",
            value=history.pacer.limit,
        )


def register(registry: CollectorRegistry, sources: Sources) -> None:
    """The gateway collector and the process, platform and GC collectors."""
    registry.register(GatewayCollector(sources))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
