"""MarketDataService: ResolveContract, SearchContracts, GetOptionChain, GetQuotes
(snapshots) and StreamQuotes (fan-out).

The servicer stays thin: it validates, asks the session or the :class:`QuoteHub`, and
converts. StreamQuotes writes pre-encoded message bytes (built once per IB update by the
hub), so the service must be registered with :func:`add_market_data_service`, whose
StreamQuotes handler passes those bytes through unchanged; clients still see an ordinary
``StreamQuotesResponse`` (the bytes are a valid encoding of one).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import grpc

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from ibgateway_server.api.validation import (
    Violations,
    check_contract,
    heartbeat_seconds,
    parse_decimal,
)
from ibgateway_server.errors import GatewayError, deadline_exceeded
from ibgateway_server.ib import convert
from ibgateway_server.ib.session import IbSession
from ibgateway_server.market_data.bars import (
    BAR_SIZES,
    DURATION_UNITS,
    WHAT_TO_SHOW,
    BarSpec,
    duration_seconds,
    duration_text,
    what_to_show_for,
)
from ibgateway_server.market_data.contracts import details_to_proto, match_to_proto
from ibgateway_server.market_data.depth import DEFAULT_ROWS, MAX_ROWS, DepthHub, DepthStream
from ibgateway_server.market_data.history import HistoryQuery, HistoryService
from ibgateway_server.market_data.hub import (
    FAILED,
    MAX_SEND_WINDOW,
    QuoteHub,
    QuoteStream,
    failure_of,
    state_for_error,
)
from ibgateway_server.market_data.live_bars import REALTIME_SECONDS, BarHub, BarStream
from ibgateway_server.market_data.options import (
    ChainFilter,
    filter_chains,
    fut_fop_exchange,
    reference_price,
)

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = market_data_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name
MAX_CONTRACTS = 1000  # per request; the line budget caps distinct contracts anyway
MAX_PATTERN_LENGTH = 64  # SearchContracts; IB matches symbol / name prefixes
MATCHING_SYMBOLS_WAIT = 4.0  # ib_insync gives up on reqMatchingSymbols after this
_MARKET_DATA_TYPES = frozenset(common_pb2.MarketDataType.values())
_EXPIRY = re.compile(r"^\d{8}$")
MAX_STRIKES_AROUND = 500  # per side; IB lists a few hundred strikes at most
MAX_NAME_LENGTH = 32  # exchange, trading class


def chain_filter(request: market_data_pb2.GetOptionChainRequest) -> ChainFilter:
    """The validated filters of a GetOptionChain request (violations raised at once)."""
    v = Violations()
    check_contract(request.underlying if request.HasField("underlying") else None, "underlying", v)
    for name in ("exchange", "trading_class"):
        value = getattr(request, name)
        v.check(len(value) <= MAX_NAME_LENGTH, name, f"at most {MAX_NAME_LENGTH} characters")
    for name in ("min_expiry", "max_expiry"):
        value = getattr(request, name)
        v.check(not value or bool(_EXPIRY.match(value)), name, "a date as YYYYMMDD")
    low = parse_decimal(request.min_strike, "min_strike", v, non_negative=True)
    high = parse_decimal(request.max_strike, "max_strike", v, non_negative=True)
    if low is not None and high is not None:
        v.check(low <= high, "max_strike", "must not be below min_strike")
    if request.min_expiry and request.max_expiry:
        v.check(request.min_expiry <= request.max_expiry, "max_expiry", "before min_expiry")
    v.check(
        0 <= request.strikes_around_price <= MAX_STRIKES_AROUND,
        "strikes_around_price",
        f"between 0 and {MAX_STRIKES_AROUND}",
    )
    v.raise_if_any()
    return ChainFilter(
        exchange=request.exchange.strip(),
        trading_class=request.trading_class.strip(),
        min_expiry=request.min_expiry,
        max_expiry=request.max_expiry,
        min_strike=low,
        max_strike=high,
        strikes_around_price=request.strikes_around_price,
    )


def validate_contracts(contracts: Any, violations: Violations) -> None:
    if not contracts:
        violations.add("contracts", "at least one contract is required")
    elif len(contracts) > MAX_CONTRACTS:
        violations.add("contracts", f"at most {MAX_CONTRACTS} contracts per request")
    else:
        for index, contract in enumerate(contracts):
            check_contract(contract, f"contracts[{index}]", violations)


def validate_market_data_type(value: int, violations: Violations) -> None:
    if value not in _MARKET_DATA_TYPES:
        violations.add("market_data_type", f"unknown market data type {value}")


def send_window_seconds(request: Any, violations: Violations) -> float | None:
    """A StreamQuotes send window in seconds; None (unset) means the gateway's default."""
    if not request.HasField("send_window"):
        return None
    window = request.send_window
    seconds = window.seconds + window.nanos / 1e9
    if not 0 <= seconds <= MAX_SEND_WINDOW:
        violations.add(
            "send_window", f"must be between 0 and {MAX_SEND_WINDOW:g}s (got {seconds:g}s)"
        )
    return seconds


def validate_history(request: market_data_pb2.GetHistoricalBarsRequest) -> None:
    """Every field of a GetHistoricalBars request, including IB's duration limits."""
    v = Violations()
    check_contract(request.contract if request.HasField("contract") else None, "contract", v)
    spec = BAR_SIZES.get(request.bar_size)
    v.check(spec is not None, "bar_size", "required: one of IB's bar sizes (BAR_SIZE_*)")
    v.check(
        request.what_to_show in WHAT_TO_SHOW or request.what_to_show == 0,
        "what_to_show",
        f"unknown value {request.what_to_show}",
    )
    duration = request.duration
    unit_ok = v.check(
        duration.unit in DURATION_UNITS, "duration.unit", "required (DURATION_UNIT_*)"
    )
    count_ok = v.check(duration.count >= 1, "duration.count", "must be at least 1")
    if spec is not None and unit_ok and count_ok:
        seconds = duration_seconds(duration.count, duration.unit)
        v.check(
            seconds <= spec.max_seconds,
            "duration",
            f"IB serves at most {spec.max_text} of {spec.ib_text} bars per request "
            f"(got {duration_text(duration.count, duration.unit)}); ask for a shorter "
            "duration or a larger bar size",
        )
    if request.HasField("end_time"):
        end = request.end_time.ToDatetime(tzinfo=UTC)
        v.check(end <= datetime.now(UTC), "end_time", "must not be in the future")
        v.check(
            request.what_to_show != market_data_pb2.WHAT_TO_SHOW_ADJUSTED_LAST,
            "end_time",
            "IB serves ADJUSTED_LAST only up to now: leave end_time unset",
        )
    v.raise_if_any()


_REALTIME_WHAT = frozenset(
    {
        market_data_pb2.WHAT_TO_SHOW_UNSPECIFIED,
        market_data_pb2.WHAT_TO_SHOW_TRADES,
        market_data_pb2.WHAT_TO_SHOW_MIDPOINT,
        market_data_pb2.WHAT_TO_SHOW_BID,
        market_data_pb2.WHAT_TO_SHOW_ASK,
    }
)


def validate_live_bars(
    request: market_data_pb2.StreamBarsRequest, violations: Violations
) -> BarSpec:
    """The bar size of a StreamBars request (unset: IB's real-time 5-second bars)."""
    size = request.bar_size or market_data_pb2.BAR_SIZE_5_SECONDS
    spec = BAR_SIZES.get(size)
    if spec is None:
        violations.add("bar_size", f"unknown value {request.bar_size}")
        return BAR_SIZES[market_data_pb2.BAR_SIZE_5_SECONDS]
    violations.check(
        spec.seconds != 1, "bar_size", "IB has no live 1-second bars; the smallest is 5 seconds"
    )
    if spec.seconds == REALTIME_SECONDS:
        violations.check(
            request.what_to_show in _REALTIME_WHAT,
            "what_to_show",
            "IB's real-time 5-second bars offer TRADES, MIDPOINT, BID and ASK",
        )
    else:
        violations.check(
            request.what_to_show in WHAT_TO_SHOW or request.what_to_show == 0,
            "what_to_show",
            f"unknown value {request.what_to_show}",
        )
        violations.check(
            request.what_to_show != market_data_pb2.WHAT_TO_SHOW_ADJUSTED_LAST,
            "what_to_show",
            "IB does not keep ADJUSTED_LAST bars up to date",
        )
    return spec


def _status(
    index: int, contract: common_pb2.Contract, state: int, message: str, ib_code: int = 0
) -> market_data_pb2.SubscriptionStatus:
    return market_data_pb2.SubscriptionStatus(
        index=index,
        contract=contract,
        state=state,  # type: ignore[arg-type]
        message=message,
        ib_code=ib_code,
    )


class MarketDataServicer(market_data_pb2_grpc.MarketDataServiceServicer):
    """Quotes through the hub (one IB line per contract), contracts through the session."""

    def __init__(
        self,
        session: IbSession,
        hub: QuoteHub,
        *,
        heartbeat_seconds: float | None = None,
        history: HistoryService | None = None,
        bars: BarHub | None = None,
        depth: DepthHub | None = None,
    ) -> None:
        self.session = session
        self.hub = hub
        self.history = history or HistoryService(session)
        self.bars = bars or BarHub(session, hub, self.history.pacer)
        self.bars.start()
        self.depth = depth or DepthHub(session)
        self.heartbeat_seconds = (
            heartbeat_seconds if heartbeat_seconds is not None else hub.heartbeat_seconds
        )

    async def ResolveContract(
        self, request: market_data_pb2.ResolveContractRequest, context: Context
    ) -> market_data_pb2.ResolveContractResponse:
        violations = Violations()
        check_contract(
            request.contract if request.HasField("contract") else None, "contract", violations
        )
        violations.raise_if_any()
        self.session.require_connected()
        details = await self.session.qualify_details(
            convert.contract_from_proto(request.contract), context=context
        )
        assert details.contract is not None
        return market_data_pb2.ResolveContractResponse(
            contract=convert.contract_to_proto(details.contract),
            details=details_to_proto(details),
        )

    async def SearchContracts(
        self, request: market_data_pb2.SearchContractsRequest, context: Context
    ) -> market_data_pb2.SearchContractsResponse:
        pattern = request.pattern.strip()
        violations = Violations()
        if violations.check(pattern != "", "pattern", "required"):
            violations.check(
                len(pattern) <= MAX_PATTERN_LENGTH,
                "pattern",
                f"at most {MAX_PATTERN_LENGTH} characters",
            )
        violations.raise_if_any()
        self.session.require_connected()
        what = f"contracts matching {pattern!r}"
        found = await self.session.request(
            lambda: self.session.ib.reqMatchingSymbolsAsync(pattern), what=what, context=context
        )
        if found is None:  # ib_insync's own wait ran out before TWS answered
            raise deadline_exceeded(what, MATCHING_SYMBOLS_WAIT)
        return market_data_pb2.SearchContractsResponse(matches=[match_to_proto(d) for d in found])

    async def GetOptionChain(
        self, request: market_data_pb2.GetOptionChainRequest, context: Context
    ) -> market_data_pb2.GetOptionChainResponse:
        flt = chain_filter(request)
        self.session.require_connected()
        loop = asyncio.get_running_loop()
        budget = self.session.budget(context)
        start = loop.time()
        contract = await self.hub.resolve(request.underlying, max_wait=budget)
        what = f"option chain of {contract.symbol}"
        chains = await self.session.request(
            lambda: self.session.ib.reqSecDefOptParamsAsync(
                contract.symbol, fut_fop_exchange(contract), contract.secType, contract.conId
            ),
            what=what,
            context=context,
        )
        price = None
        if flt.strikes_around_price:
            remaining = max(0.0, budget - (loop.time() - start))
            line = await self.hub.snapshot(
                contract, common_pb2.MARKET_DATA_TYPE_UNSPECIFIED, max_wait=remaining
            )
            try:
                price = reference_price(line.ticker)
            finally:
                self.hub.release(line)
            if price is None:
                raise deadline_exceeded(f"a price of {contract.symbol}", remaining)
        response = market_data_pb2.GetOptionChainResponse(
            underlying=convert.contract_to_proto(contract),
            chains=filter_chains(chains or [], flt, price),
        )
        if price is not None:
            response.underlying_price.value = convert.decimal_text(price)
        return response

    async def GetHistoricalBars(
        self, request: market_data_pb2.GetHistoricalBarsRequest, context: Context
    ) -> market_data_pb2.GetHistoricalBarsResponse:
        validate_history(request)
        self.session.require_connected()
        # qualified contracts and their time zones are cached: a repeated request costs
        # no IB round trip before the history itself (or none at all, from the cache)
        contract = await self.hub.resolve(request.contract, max_wait=self.session.budget(context))
        time_zone = await self.history.time_zone(contract, context)
        query = HistoryQuery(
            contract=contract,
            end=request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None,
            duration=duration_text(request.duration.count, request.duration.unit),
            spec=BAR_SIZES[request.bar_size],
            what_to_show=what_to_show_for(request.what_to_show, contract.secType),
            regular_hours=request.regular_trading_hours_only,
        )
        answer = await self.history.fetch(query, time_zone, context)
        return market_data_pb2.GetHistoricalBarsResponse(
            contract=convert.contract_to_proto(contract),
            bars=answer.bars,
            time_zone=answer.time_zone,
            cached=answer.cached,
        )

    async def StreamBars(  # type: ignore[override]
        self, request: market_data_pb2.StreamBarsRequest, context: Context
    ) -> None:
        violations = Violations()
        validate_contracts(request.contracts, violations)
        spec = validate_live_bars(request, violations)
        heartbeat = heartbeat_seconds(
            request.heartbeat_interval if request.HasField("heartbeat_interval") else None,
            self.heartbeat_seconds,
            violations,
        )
        violations.raise_if_any()
        self.session.require_connected()
        what = request.what_to_show
        stream = BarStream(
            self.bars,
            request.contracts,
            spec,
            lambda contract: what_to_show_for(what, contract.secType),
            request.regular_trading_hours_only,
            heartbeat,
        )
        try:
            await stream.open(self.session.budget(context))
            await stream.run(context.write)
        finally:
            stream.close()

    async def StreamDepth(  # type: ignore[override]
        self, request: market_data_pb2.StreamDepthRequest, context: Context
    ) -> None:
        violations = Violations()
        check_contract(
            request.contract if request.HasField("contract") else None, "contract", violations
        )
        violations.check(
            0 <= request.rows <= MAX_ROWS, "rows", f"between 1 and {MAX_ROWS} (0: {DEFAULT_ROWS})"
        )
        heartbeat = heartbeat_seconds(
            request.heartbeat_interval if request.HasField("heartbeat_interval") else None,
            self.heartbeat_seconds,
            violations,
        )
        violations.raise_if_any()
        self.session.require_connected()
        contract = await self.hub.resolve(request.contract, max_wait=self.session.budget(context))
        stream = DepthStream(self.depth, contract, request.rows or DEFAULT_ROWS, heartbeat)
        try:
            stream.open(request.smart_depth)
            await stream.run(context.write)
        finally:
            stream.close()

    async def GetQuotes(
        self, request: market_data_pb2.GetQuotesRequest, context: Context
    ) -> market_data_pb2.GetQuotesResponse:
        violations = Violations()
        validate_contracts(request.contracts, violations)
        validate_market_data_type(request.market_data_type, violations)
        violations.raise_if_any()
        self.session.require_connected()
        budget = self.session.budget(context)
        md_type = request.market_data_type
        if len(request.contracts) == 1:
            # the common case, awaited in place: gather would cost a task and a loop pass
            results = [await self._snapshot_one(0, request.contracts[0], md_type, budget)]
        else:
            results = await asyncio.gather(
                *(
                    self._snapshot_one(index, spec, md_type, budget)
                    for index, spec in enumerate(request.contracts)
                )
            )
        response = market_data_pb2.GetQuotesResponse()
        timeouts: list[GatewayError] = []
        for quote, failure, timeout in results:
            if quote is not None:
                response.quotes.append(quote)
            if failure is not None:
                response.failures.append(failure)
            if timeout is not None:
                timeouts.append(timeout)
        if timeouts and len(timeouts) == len(results):
            raise timeouts[0]  # nothing at all in time: the call itself timed out
        return response

    async def _snapshot_one(
        self, index: int, spec: common_pb2.Contract, md_type: int, budget: float
    ) -> tuple[
        market_data_pb2.Quote | None, market_data_pb2.SubscriptionStatus | None, GatewayError | None
    ]:
        """(quote, failure, the timeout behind the failure if it was one)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            contract = await self.hub.resolve(spec, max_wait=budget)
            remaining = max(0.0, budget - (loop.time() - start))
            line = await self.hub.snapshot(contract, md_type, max_wait=remaining)
        except Exception as exc:
            err = failure_of(exc)
            failure = _status(index, spec, state_for_error(err), err.message, err.ib_code or 0)
            timed_out = err if err.code is grpc.StatusCode.DEADLINE_EXCEEDED else None
            return None, failure, timed_out
        try:
            if not line.alive:
                state, message, ib_code = line.status_fields()
                return None, _status(index, line.contract_pb, state, message, ib_code), None
            if line.quote is None:
                symbol = line.contract_pb.symbol or str(line.key[0])
                err = deadline_exceeded(f"a quote of {symbol}", budget)
                return None, _status(index, line.contract_pb, FAILED, err.message), err
            return market_data_pb2.Quote.FromString(line.quote), None, None
        finally:
            self.hub.release(line)

    async def StreamQuotes(  # type: ignore[override]
        self, request: market_data_pb2.StreamQuotesRequest, context: Context
    ) -> None:
        violations = Violations()
        validate_contracts(request.contracts, violations)
        validate_market_data_type(request.market_data_type, violations)
        heartbeat = heartbeat_seconds(
            request.heartbeat_interval if request.HasField("heartbeat_interval") else None,
            self.heartbeat_seconds,
            violations,
        )
        window = send_window_seconds(request, violations)
        violations.raise_if_any()
        self.session.require_connected()
        stream = QuoteStream(
            self.hub, request.contracts, request.market_data_type, heartbeat, window
        )
        try:
            await stream.open()
            await stream.run(context.write)
        finally:
            stream.close()


def _pass_through(message: bytes) -> bytes:
    # StreamQuotes messages arrive here already serialized (see module docstring).
    return message


def market_data_handlers(
    servicer: MarketDataServicer,
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The method handlers of MarketDataService, StreamQuotes with a pass-through
    response serializer."""
    md = market_data_pb2
    return {
        "ResolveContract": grpc.unary_unary_rpc_method_handler(
            servicer.ResolveContract,
            request_deserializer=md.ResolveContractRequest.FromString,
            response_serializer=md.ResolveContractResponse.SerializeToString,
        ),
        "SearchContracts": grpc.unary_unary_rpc_method_handler(
            servicer.SearchContracts,
            request_deserializer=md.SearchContractsRequest.FromString,
            response_serializer=md.SearchContractsResponse.SerializeToString,
        ),
        "GetOptionChain": grpc.unary_unary_rpc_method_handler(
            servicer.GetOptionChain,
            request_deserializer=md.GetOptionChainRequest.FromString,
            response_serializer=md.GetOptionChainResponse.SerializeToString,
        ),
        "GetHistoricalBars": grpc.unary_unary_rpc_method_handler(
            servicer.GetHistoricalBars,
            request_deserializer=md.GetHistoricalBarsRequest.FromString,
            response_serializer=md.GetHistoricalBarsResponse.SerializeToString,
        ),
        "StreamDepth": grpc.unary_stream_rpc_method_handler(
            servicer.StreamDepth,
            request_deserializer=md.StreamDepthRequest.FromString,
            response_serializer=md.StreamDepthResponse.SerializeToString,
        ),
        "StreamBars": grpc.unary_stream_rpc_method_handler(
            servicer.StreamBars,
            request_deserializer=md.StreamBarsRequest.FromString,
            response_serializer=md.StreamBarsResponse.SerializeToString,
        ),
        "GetQuotes": grpc.unary_unary_rpc_method_handler(
            servicer.GetQuotes,
            request_deserializer=md.GetQuotesRequest.FromString,
            response_serializer=md.GetQuotesResponse.SerializeToString,
        ),
        "StreamQuotes": grpc.unary_stream_rpc_method_handler(
            servicer.StreamQuotes,
            request_deserializer=md.StreamQuotesRequest.FromString,
            response_serializer=_pass_through,
        ),
    }


def add_market_data_service(server: grpc.aio.Server, servicer: MarketDataServicer) -> str:
    """Register MarketDataService on ``server`` (use this, not the generated
    ``add_MarketDataServiceServicer_to_server``); returns the service's full name."""
    handlers = market_data_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    return str(SERVICE_NAME)


__all__ = [
    "SERVICE_NAME",
    "GatewayError",
    "MarketDataServicer",
    "add_market_data_service",
    "market_data_handlers",
]
