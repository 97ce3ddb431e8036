"""OrderService: PlaceOrder, PlaceBracketOrder, CancelOrder, GetOrder, ListOrders,
StreamOrderEvents, ModifyOrder, PreviewOrder, CancelAllOrders, ListExecutions.

Thin: check safety → validate → ask the :class:`~ibgateway_server.orders.book.OrderBook`
→ convert. Safety rules (a user of a trading gateway wants these spelled out):

* Read-only mode (IBGW_READ_ONLY): PlaceOrder, PlaceBracketOrder, CancelOrder, ModifyOrder
  and CancelAllOrders are PERMISSION_DENIED (``READ_ONLY_MODE``); GetOrder, ListOrders,
  ListExecutions and PreviewOrder still work, since they change nothing.
* Live accounts: an account that is not a paper account (IB paper account ids start with
  "D": DU… individual, DF… advisor; live ones with U, F or I) is PERMISSION_DENIED
  (``LIVE_TRADING_DISABLED``) for PlaceOrder, PlaceBracketOrder, CancelOrder, ModifyOrder
  and CancelAllOrders
  (without account_id: if any managed account is live) unless IBGW_ALLOW_LIVE_TRADING is
  set. PreviewOrder is allowed on live accounts: a what-if order places nothing.
* An account the login does not manage is INVALID_ARGUMENT with a field violation; an
  omitted account is fine only when it is unambiguous (IBKR_ACCOUNT, or one managed
  account).
* Not connected to TWS: UNAVAILABLE, for every RPC (the book's copy may be stale) except
  StreamOrderEvents, which serves the gateway's own event log: it opens (and replays)
  while TWS is away, says so first, and carries on when the session is back.

StreamOrderEvents reads the order book's event log (see ``order_events``): validate,
open a stream at the requested position, write until the client leaves or the gateway
shuts down (then it ends with OK). Read-only mode does not refuse it.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc

from ibgateway.v1 import orders_pb2, orders_pb2_grpc
from ibgateway_server.api import order_requests
from ibgateway_server.api.validation import Violations, heartbeat_seconds
from ibgateway_server.config import Settings
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib import convert
from ibgateway_server.ib.session import IbSession
from ibgateway_server.orders import brackets, ib_orders, ib_terms
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders.book import OrderBook
from ibgateway_server.orders.events import OrderEventStream
from ibgateway_server.portfolio.convert import is_paper_account

Context = grpc.aio.ServicerContext[Any, Any]

MAX_EPOCH_LENGTH = 100


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    """The OrderService over one session and its order book."""

    def __init__(self, session: IbSession, order_book: OrderBook, config: Settings) -> None:
        self.session = session
        self.book = order_book
        self.config = config

    async def PlaceOrder(
        self, request: orders_pb2.PlaceOrderRequest, context: Context
    ) -> orders_pb2.PlaceOrderResponse:
        self._refuse_if_read_only("PlaceOrder")
        intent = order_requests.validate_place_order(request)
        self.session.require_connected()
        account = self._order_account(intent.account)
        self._refuse_if_live(account, "PlaceOrder")
        placement = await self.book.place(
            intent,
            convert.contract_from_proto(request.contract),
            ib_orders.build_ib_order(intent, account),
            context=context,
        )
        return orders_pb2.PlaceOrderResponse(
            order=placement.entry.to_proto(), replayed=placement.replayed
        )

    async def PlaceBracketOrder(
        self, request: orders_pb2.PlaceBracketOrderRequest, context: Context
    ) -> orders_pb2.PlaceBracketOrderResponse:
        self._refuse_if_read_only("PlaceBracketOrder")
        bracket = order_requests.validate_place_bracket(request)
        self.session.require_connected()
        account = self._order_account(bracket.entry.account)
        self._refuse_if_live(account, "PlaceBracketOrder")
        placement = await brackets.place_bracket(
            self.book,
            bracket,
            convert.contract_from_proto(request.contract),
            account,
            context=context,
        )
        response = orders_pb2.PlaceBracketOrderResponse(
            entry=placement.entry.to_proto(), replayed=placement.replayed
        )
        if placement.take_profit is not None:
            response.take_profit.CopyFrom(placement.take_profit.to_proto())
        if placement.stop_loss is not None:
            response.stop_loss.CopyFrom(placement.stop_loss.to_proto())
        return response

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: Context
    ) -> orders_pb2.CancelOrderResponse:
        self._refuse_if_read_only("CancelOrder")
        key = order_requests.validate_order_key(request.order, "order")
        self.session.require_connected()
        entry = await self.book.locate(key, context=context)
        self._refuse_if_live(entry.account, "CancelOrder")
        outcome = await self.book.cancel_entry(entry, context=context)
        return orders_pb2.CancelOrderResponse(
            order=outcome.entry.to_proto(), already_cancelled=outcome.already_cancelled
        )

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: Context
    ) -> orders_pb2.GetOrderResponse:
        key = order_requests.validate_order_key(request.order, "order")
        self.session.require_connected()
        entry = await self.book.locate(key, context=context)
        return orders_pb2.GetOrderResponse(order=entry.to_proto())

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: Context
    ) -> orders_pb2.ListOrdersResponse:
        self.session.require_connected()
        account = (
            self.session.resolve_account(request.account_id, field="account_id")
            if request.account_id
            else ""
        )
        await self.book.wait_synced(self.session.budget(context))
        await self.book.refresh(context=context)  # include other clients' latest orders
        orders = [e.to_proto() for e in self.book.entries()]
        wanted = request.filter
        return orders_pb2.ListOrdersResponse(
            orders=[
                o
                for o in orders
                if (not account or o.account_id == account) and _passes(o.status, wanted)
            ]
        )

    async def StreamOrderEvents(  # type: ignore[override]
        self, request: orders_pb2.StreamOrderEventsRequest, context: Context
    ) -> None:
        stream = self.open_event_stream(request)
        try:
            await stream.run(context.write)
        finally:
            stream.close()

    def open_event_stream(self, request: orders_pb2.StreamOrderEventsRequest) -> OrderEventStream:
        """Validate a StreamOrderEventsRequest and open its stream on the event log."""
        violations = Violations()
        heartbeat = heartbeat_seconds(
            request.heartbeat_interval if request.HasField("heartbeat_interval") else None,
            self.config.heartbeat_seconds,
            violations,
        )
        if len(request.epoch) > MAX_EPOCH_LENGTH:
            violations.add("epoch", f"at most {MAX_EPOCH_LENGTH} characters (an OrderEvent.epoch)")
        violations.raise_if_any()
        account = (
            self.session.resolve_account(request.account_id, field="account_id")
            if request.account_id
            else ""
        )
        return self.book.events.open_stream(
            after_sequence=request.after_sequence,
            epoch=request.epoch,
            account=account,
            heartbeat=heartbeat,
        )

    async def ModifyOrder(
        self, request: orders_pb2.ModifyOrderRequest, context: Context
    ) -> orders_pb2.ModifyOrderResponse:
        self._refuse_if_read_only("ModifyOrder")
        change = order_requests.validate_modify_order(request)
        self.session.require_connected()
        entry = await self.book.locate(change.key, context=context)
        self._refuse_if_live(entry.account, "ModifyOrder")
        entry = await self.book.modify(entry, change, context=context)
        return orders_pb2.ModifyOrderResponse(order=entry.to_proto())

    async def PreviewOrder(
        self, request: orders_pb2.PreviewOrderRequest, context: Context
    ) -> orders_pb2.PreviewOrderResponse:
        # Neither read-only mode nor a live account refuses a preview: it places nothing.
        intent = order_requests.validate_preview_order(request)
        self.session.require_connected()
        account = self._order_account(intent.account)
        contract = await self.session.qualify(
            convert.contract_from_proto(request.contract), context=context
        )
        order = ib_orders.build_ib_order(intent, account)
        state = await self.session.request(
            lambda: self.session.ib.whatIfOrderAsync(contract, order),
            what="order preview (what-if)",
            context=context,
        )
        return oc.preview_to_proto(state, convert.contract_to_proto(contract), account)

    async def CancelAllOrders(
        self, request: orders_pb2.CancelAllOrdersRequest, context: Context
    ) -> orders_pb2.CancelAllOrdersResponse:
        self._refuse_if_read_only("CancelAllOrders")
        self.session.require_connected()
        if request.account_id:
            account = self.session.resolve_account(request.account_id, field="account_id")
            self._refuse_if_live(account, "CancelAllOrders")
        else:
            account = ""
            for managed in self.session.accounts:
                self._refuse_if_live(managed, "CancelAllOrders")
        entries = await self.book.cancel_all(account, context=context)
        return orders_pb2.CancelAllOrdersResponse(orders=[e.to_proto() for e in entries])

    async def ListExecutions(
        self, request: orders_pb2.ListExecutionsRequest, context: Context
    ) -> orders_pb2.ListExecutionsResponse:
        self.session.require_connected()
        account = (
            self.session.resolve_account(request.account_id, field="account_id")
            if request.account_id
            else ""
        )
        symbol = request.symbol.strip().upper()
        since = request.since_time.ToDatetime(UTC) if request.HasField("since_time") else None
        fills = await self.book.executions(context=context)
        chosen = []
        for fill in fills:
            when = oc.execution_time(fill)
            if account and fill.execution.acctNumber != account:
                continue
            if symbol and (fill.contract.symbol or "").upper() != symbol:
                continue
            if since is not None and (when is None or when < since):
                continue
            chosen.append((when.timestamp() if when else 0.0, fill.execution.execId, fill))
        chosen.sort(key=lambda item: (item[0], item[1]))
        return orders_pb2.ListExecutionsResponse(
            executions=[oc.execution_to_proto(f, self.book.order_ref_of(f)) for *_, f in chosen]
        )

    # ------------------------------------------------------------------ safety

    def _refuse_if_read_only(self, rpc: str) -> None:
        if self.config.read_only:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "READ_ONLY_MODE",
                f"{rpc} is refused: the gateway runs in read-only mode (IBGW_READ_ONLY)",
                metadata={"rpc": rpc},
            )

    def _refuse_if_live(self, account: str, rpc: str) -> None:
        if account and not is_paper_account(account) and not self.config.allow_live_trading:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "LIVE_TRADING_DISABLED",
                f"{rpc} is refused for account {account}: it is a live (non-paper) account "
                "and live trading is not enabled (IBGW_ALLOW_LIVE_TRADING)",
                metadata={"account": account, "rpc": rpc},
            )

    def _order_account(self, given: str) -> str:
        """The account an order goes to; ambiguity is an error, never a guess."""
        if given or self.config.ibkr_account:
            return self.session.resolve_account(given, field="account_id")
        managed = self.session.accounts
        if len(managed) > 1:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "ACCOUNT_REQUIRED",
                f"account_id is required: this login manages several accounts "
                f"({', '.join(managed)})",
                metadata={"managed_accounts": ",".join(managed)},
                field_violations=[("account_id", "required when several accounts are managed")],
            )
        return self.session.resolve_account("", field="account_id")


_OPEN = frozenset(
    {
        orders_pb2.ORDER_STATUS_UNSPECIFIED,
        orders_pb2.ORDER_STATUS_PENDING_SUBMIT,
        orders_pb2.ORDER_STATUS_PRE_SUBMITTED,
        orders_pb2.ORDER_STATUS_SUBMITTED,
        orders_pb2.ORDER_STATUS_PENDING_CANCEL,
    }
)


def _passes(status: orders_pb2.OrderStatus.ValueType, wanted: int) -> bool:
    if wanted == orders_pb2.ORDER_FILTER_OPEN:
        return status in _OPEN
    if wanted == orders_pb2.ORDER_FILTER_COMPLETED:
        return status in ib_terms.DONE_STATUSES
    return True
