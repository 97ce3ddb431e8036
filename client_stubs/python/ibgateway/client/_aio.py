"""The asyncio client: ``AsyncClient(target)`` with the services as attributes."""

from __future__ import annotations

import asyncio
import builtins
import random
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
from google.protobuf.duration_pb2 import Duration

from ibgateway.client._channel import open_channel
from ibgateway.client._errors import GatewayError
from ibgateway.client._types import (
    ContractLike,
    DecimalLike,
    Order,
    OrderEvent,
    Position,
    Quote,
    StreamRestarted,
    contract_msg,
    decimal_msg,
    enum_value,
    to_decimal,
)
from ibgateway.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)

T = TypeVar("T")

#: what StreamQuotes yields
QuoteStreamItem: TypeAlias = (
    Quote | market_data_pb2.SubscriptionStatus | common_pb2.ConnectionStateChange | StreamRestarted
)
#: what StreamOrderEvents yields
OrderStreamItem: TypeAlias = (
    OrderEvent | orders_pb2.ReplayGap | common_pb2.ConnectionStateChange | StreamRestarted
)
#: an order by its client_order_id (str) or IB's order id (int)
OrderRef: TypeAlias = str | int

# a stream that ends with one of these is re-opened (the gateway went away or restarted)
_REOPEN_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)


async def _unary(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise GatewayError.from_rpc_error(exc) from None


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _order_key(ref: OrderRef) -> orders_pb2.OrderKey:
    if isinstance(ref, str):
        return orders_pb2.OrderKey(client_order_id=ref)
    return orders_pb2.OrderKey(order_id=ref)


@dataclass(frozen=True)
class Reconnect:
    """How a stream re-opens itself: exponential backoff with jitter, forever unless
    ``max_attempts`` (consecutive failures) is set."""

    initial_delay: float = 0.2
    max_delay: float = 5.0
    max_attempts: int | None = None

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        return float(base * random.uniform(0.5, 1.0))


class _Service:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def _reopening(
        self,
        open_stream: Callable[[], AsyncIterable[Any]],
        handle: Callable[[Any], Iterable[T]],
        reconnect: Reconnect | None,
        reopen_codes: frozenset[grpc.StatusCode] = _REOPEN_CODES,
    ) -> AsyncIterator[T | StreamRestarted]:
        """Yield ``handle(message)`` for every message; when the stream breaks (or the
        gateway ends it at shutdown), re-open it and go on, announcing it with
        :class:`StreamRestarted`. Any other error is raised as :class:`GatewayError`."""
        failures = 0  # consecutive re-opens that brought nothing
        restarts = 0
        announce: StreamRestarted | None = None  # yielded once the stream is back
        last_error: GatewayError | None = None
        channel = self._client.channel
        while True:
            if failures and reconnect is not None:
                # re-opening: wait, within bounds, until the gateway can be reached again
                try:
                    await asyncio.wait_for(channel.channel_ready(), reconnect.delay(failures) + 1)
                except TimeoutError:
                    failures += 1
                    if reconnect.max_attempts is not None and failures > reconnect.max_attempts:
                        assert last_error is not None
                        raise last_error from None
                    continue
            call = open_stream()
            error: GatewayError | None = None
            try:
                async for message in call:
                    if announce is not None:
                        yield announce
                        announce, failures = None, 0
                    for item in handle(message):
                        yield item
            except grpc.aio.AioRpcError as exc:
                error = GatewayError.from_rpc_error(exc)
                if reconnect is None or error.code not in reopen_codes:
                    raise error from None
            finally:
                cancel = getattr(call, "cancel", None)
                if cancel is not None:
                    cancel()
            if reconnect is None:
                return
            if error is None:
                error = GatewayError(grpc.StatusCode.UNAVAILABLE, "the gateway ended the stream")
            failures += 1
            restarts += 1
            announce, last_error = StreamRestarted(error, restarts), error
            if reconnect.max_attempts is not None and failures > reconnect.max_attempts:
                raise error
            await asyncio.sleep(reconnect.delay(failures))


class ConnectionService(_Service):
    """ConnectionService: the state of the gateway's IB session."""

    async def status(self) -> connection_pb2.ConnectionStatus:
        stub = self._client.stubs.connection
        response = await _unary(
            stub.GetConnectionStatus(connection_pb2.GetConnectionStatusRequest())
        )
        return response.status

    async def test(self, sample_symbol: str = "") -> connection_pb2.TestConnectionResponse:
        request = connection_pb2.TestConnectionRequest(sample_symbol=sample_symbol)
        return await _unary(self._client.stubs.connection.TestConnection(request))


@dataclass(frozen=True)
class Balance:
    """An account's balances in its base currency."""

    account_id: str
    currency: str
    cash: Decimal | None
    net_liquidation: Decimal | None
    buying_power: Decimal | None
    available_funds: Decimal | None
    excess_liquidity: Decimal | None
    proto: account_pb2.GetBalanceResponse


@dataclass(frozen=True)
class PnL:
    """An account's profit and loss today."""

    account_id: str
    daily_pnl: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal | None


class AccountService(_Service):
    """AccountService: accounts, balances, P&L."""

    async def list(self) -> list[str]:
        """The managed account ids."""
        response = await _unary(
            self._client.stubs.accounts.ListAccounts(account_pb2.ListAccountsRequest())
        )
        return [a.account_id for a in response.accounts]

    async def balance(self, account_id: str = "") -> Balance:
        r = await _unary(
            self._client.stubs.accounts.GetBalance(
                account_pb2.GetBalanceRequest(account_id=account_id)
            )
        )
        return Balance(
            r.account_id,
            r.currency,
            to_decimal(r.cash),
            to_decimal(r.net_liquidation),
            to_decimal(r.buying_power),
            to_decimal(r.available_funds),
            to_decimal(r.excess_liquidity),
            r,
        )

    async def pnl(self, account_id: str = "") -> PnL:
        r = await _unary(
            self._client.stubs.accounts.GetPnL(account_pb2.GetPnLRequest(account_id=account_id))
        )
        return PnL(
            r.account_id,
            to_decimal(r.daily_pnl),
            to_decimal(r.unrealized_pnl),
            to_decimal(r.realized_pnl),
        )

    async def summary(
        self, account_id: str = "", tags: Sequence[str] = ()
    ) -> builtins.list[account_pb2.AccountValue]:
        request = account_pb2.GetAccountSummaryRequest(account_id=account_id, tags=list(tags))
        response = await _unary(self._client.stubs.accounts.GetAccountSummary(request))
        return list(response.values)


class PortfolioService(_Service):
    """PortfolioService: positions."""

    async def positions(self, account_id: str = "") -> list[Position]:
        request = portfolio_pb2.ListPositionsRequest(account_id=account_id)
        response = await _unary(self._client.stubs.portfolio.ListPositions(request))
        return [Position.from_proto(p) for p in response.positions]


@dataclass(frozen=True)
class QuoteSnapshot:
    """GetQuotes' answer: the quotes, and the contracts that got none (with why)."""

    quotes: list[Quote]
    failures: list[market_data_pb2.SubscriptionStatus]

    def __iter__(self) -> Iterator[Quote]:
        return iter(self.quotes)

    def __len__(self) -> int:
        return len(self.quotes)


class MarketDataService(_Service):
    """MarketDataService: contracts, snapshots and quote streams."""

    async def resolve(self, contract: ContractLike) -> common_pb2.Contract:
        request = market_data_pb2.ResolveContractRequest(contract=contract_msg(contract))
        response = await _unary(self._client.stubs.market_data.ResolveContract(request))
        return response.contract

    async def get_quotes(self, contracts: Sequence[ContractLike]) -> QuoteSnapshot:
        request = market_data_pb2.GetQuotesRequest(contracts=[contract_msg(c) for c in contracts])
        response = await _unary(self._client.stubs.market_data.GetQuotes(request))
        return QuoteSnapshot(
            [Quote.from_proto(q) for q in response.quotes], list(response.failures)
        )

    def stream_quotes(
        self,
        contracts: Sequence[ContractLike],
        *,
        heartbeat_interval: float | None = None,
        reconnect: Reconnect | None = Reconnect(),
    ) -> AsyncIterator[QuoteStreamItem]:
        """Quotes as they change (one :class:`Quote` each), the subscription statuses, IB
        session changes, and :class:`StreamRestarted` after the stream re-opened itself
        (gateway restart, network cut). ``reconnect=None``: end with a GatewayError instead.
        """
        request = market_data_pb2.StreamQuotesRequest(
            contracts=[contract_msg(c) for c in contracts],
            heartbeat_interval=_duration(heartbeat_interval),
        )
        stubs = self._client.stubs

        def handle(message: market_data_pb2.StreamQuotesResponse) -> Iterable[QuoteStreamItem]:
            kind = message.WhichOneof("event")
            if kind == "quotes":
                return [Quote.from_proto(q) for q in message.quotes.quotes]
            if kind == "subscription_status":
                return [message.subscription_status]
            if kind == "connection_state":
                return [message.connection_state]
            return []  # heartbeats only prove the stream is alive

        return self._reopening(
            lambda: stubs.market_data.StreamQuotes(request, wait_for_ready=True),
            handle,
            reconnect,
        )


class OrderService(_Service):
    """OrderService: place, modify, cancel, list and follow orders."""

    async def place(
        self,
        client_order_id: str,
        contract: ContractLike,
        side: str,
        quantity: DecimalLike,
        *,
        limit_price: DecimalLike | None = None,
        stop_price: DecimalLike | None = None,
        order_type: str | None = None,
        time_in_force: str = "DAY",
        outside_rth: bool = False,
        account_id: str = "",
    ) -> Order:
        """Place an order. ``client_order_id`` is the idempotency key: calling again with
        the same key (after a timeout, a lost connection, a restart) returns the same order
        (``replayed=True``) and never places a second one. ``order_type`` defaults to
        LIMIT with a limit price, STOP / STOP_LIMIT with a stop price, MARKET otherwise."""
        if order_type is None:
            if stop_price is not None:
                order_type = "STOP_LIMIT" if limit_price is not None else "STOP"
            else:
                order_type = "LIMIT" if limit_price is not None else "MARKET"
        request = orders_pb2.PlaceOrderRequest(
            client_order_id=client_order_id,
            contract=contract_msg(contract),
            side=enum_value(orders_pb2.OrderSide, side, "ORDER_SIDE_"),  # type: ignore[arg-type]
            order_type=enum_value(orders_pb2.OrderType, order_type, "ORDER_TYPE_"),  # type: ignore[arg-type]
            quantity=decimal_msg(quantity),
            limit_price=decimal_msg(limit_price),
            stop_price=decimal_msg(stop_price),
            time_in_force=enum_value(orders_pb2.TimeInForce, time_in_force, "TIME_IN_FORCE_"),  # type: ignore[arg-type]
            outside_rth=outside_rth,
            account_id=account_id,
        )
        response = await _unary(self._client.stubs.orders.PlaceOrder(request))
        return Order.from_proto(response.order, replayed=response.replayed)

    async def modify(
        self,
        order: OrderRef,
        *,
        quantity: DecimalLike | None = None,
        limit_price: DecimalLike | None = None,
        stop_price: DecimalLike | None = None,
    ) -> Order:
        """Change a working order's quantity and prices (unset ones stay)."""
        request = orders_pb2.ModifyOrderRequest(
            order=_order_key(order),
            quantity=decimal_msg(quantity),
            limit_price=decimal_msg(limit_price),
            stop_price=decimal_msg(stop_price),
        )
        response = await _unary(self._client.stubs.orders.ModifyOrder(request))
        return Order.from_proto(response.order)

    async def cancel(self, order: OrderRef) -> Order:
        request = orders_pb2.CancelOrderRequest(order=_order_key(order))
        response = await _unary(self._client.stubs.orders.CancelOrder(request))
        return Order.from_proto(response.order)

    async def get(self, order: OrderRef) -> Order:
        request = orders_pb2.GetOrderRequest(order=_order_key(order))
        response = await _unary(self._client.stubs.orders.GetOrder(request))
        return Order.from_proto(response.order)

    async def list(self, filter: str = "OPEN", account_id: str = "") -> builtins.list[Order]:
        """``filter``: ``"OPEN"`` (working), ``"COMPLETED"`` or ``"ALL"``."""
        value = (
            0
            if filter.upper() == "ALL"
            else enum_value(orders_pb2.OrderFilter, filter, "ORDER_FILTER_")
        )
        request = orders_pb2.ListOrdersRequest(filter=value, account_id=account_id)  # type: ignore[arg-type]
        response = await _unary(self._client.stubs.orders.ListOrders(request))
        return [Order.from_proto(o) for o in response.orders]

    def events(
        self,
        *,
        after_sequence: int = 0,
        epoch: str = "",
        account_id: str = "",
        reconnect: Reconnect | None = Reconnect(),
    ) -> AsyncIterator[OrderStreamItem]:
        """Order events from now on (or after ``after_sequence`` of ``epoch``). When the
        stream breaks it re-opens itself after the last event it delivered, so nothing is
        lost or repeated while the gateway holds the events (a ``ReplayGap`` says when
        some are gone, e.g. after a gateway restart: re-sync with :meth:`list`)."""
        position = {"sequence": after_sequence, "epoch": epoch}
        stubs = self._client.stubs

        def open_stream() -> AsyncIterable[Any]:
            request = orders_pb2.StreamOrderEventsRequest(
                after_sequence=position["sequence"],  # type: ignore[arg-type]
                epoch=position["epoch"],  # type: ignore[arg-type]
                account_id=account_id,
            )
            return stubs.orders.StreamOrderEvents(request, wait_for_ready=True)

        def handle(message: orders_pb2.StreamOrderEventsResponse) -> Iterable[OrderStreamItem]:
            kind = message.WhichOneof("event")
            if kind == "order_event":
                event = message.order_event
                position["sequence"], position["epoch"] = event.sequence, event.epoch
                return [OrderEvent.from_proto(event)]
            if kind == "replay_gap":
                return [message.replay_gap]
            if kind == "connection_state":
                return [message.connection_state]
            return []

        # a consumer that fell too far behind is ended by the gateway: resume it
        codes = _REOPEN_CODES | {grpc.StatusCode.RESOURCE_EXHAUSTED}
        return self._reopening(open_stream, handle, reconnect, codes)


class Stubs:
    """The generated asyncio stubs on the client's channel, for any RPC the typed
    methods do not cover (errors then come as grpc.aio.AioRpcError:
    ``GatewayError.from_rpc_error(exc)`` decodes them)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.connection = connection_pb2_grpc.ConnectionServiceStub(channel)
        self.accounts = account_pb2_grpc.AccountServiceStub(channel)
        self.portfolio = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        self.market_data = market_data_pb2_grpc.MarketDataServiceStub(channel)
        self.orders = orders_pb2_grpc.OrderServiceStub(channel)


class AsyncClient:
    """A connection to one gateway, for asyncio code.

        async with AsyncClient("127.0.0.1:50051", token=...) as gw:
            quotes = await gw.market_data.get_quotes(["AAPL"])

    ``timeout`` is the deadline of every unary call (seconds); idempotent calls are
    retried on UNAVAILABLE; streams have no deadline and re-open themselves.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        timeout: float = 10.0,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.channel = open_channel(
            target,
            timeout=timeout,
            token=token,
            tls=tls,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            options=options,
        )
        self.stubs = Stubs(self.channel)
        self.connection = ConnectionService(self)
        self.accounts = AccountService(self)
        self.portfolio = PortfolioService(self)
        self.market_data = MarketDataService(self)
        self.orders = OrderService(self)

    async def wait_ready(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the channel is connected (raises GatewayError UNAVAILABLE)."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except TimeoutError:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, f"no gateway at {self.target} within {timeout}s"
            ) from None

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
