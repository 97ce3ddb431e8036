"""AccountService: the accounts of the IB login, their summary values and balances."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ibgateway.v1 import account_pb2, account_pb2_grpc
from ibgateway_server import convert
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib_api import AccountValue
from ibgateway_server.session import IbSession, SessionEvent, StateChange

Context = grpc.aio.ServicerContext[Any, Any]

# GetBalance field → IB account-summary tag.
BALANCE_TAGS = {
    "cash": "TotalCashValue",
    "net_liquidation": "NetLiquidation",
    "buying_power": "BuyingPower",
    "available_funds": "AvailableFunds",
    "excess_liquidity": "ExcessLiquidity",
    "gross_position_value": "GrossPositionValue",
}


class AccountSummaries:
    """IB's account summary for every account, loaded once per connection.

    The first call subscribes (reqAccountSummary, group "All", every tag); TWS then keeps
    the values current, so later calls answer from memory. Concurrent first calls share
    the one request (TWS allows only two summary subscriptions at a time).
    """

    def __init__(self, session: IbSession) -> None:
        self.session = session
        self._loading: asyncio.Future[None] | None = None
        self._loaded = False
        session.add_state_listener(self._on_state)

    def _on_state(self, change: StateChange) -> None:
        if change.event in (SessionEvent.CONNECTED, SessionEvent.DISCONNECTED):
            # ib_insync forgets the subscription with the connection
            self._loaded = False
            self._loading = None

    async def values(
        self, account: str = "", *, context: Context | None = None
    ) -> list[AccountValue]:
        self.session.require_connected()
        if not self._loaded:
            if self._loading is None or self._loading.done():
                self._loading = asyncio.ensure_future(self._load())
                # a failure is reported to the callers awaiting it; never "unretrieved"
                self._loading.add_done_callback(_consume_exception)
            # shield: one caller's deadline must not cancel the shared request
            await self.session.request(
                asyncio.shield(self._loading), what="account summary", context=context
            )
        # ib_insync keeps the subscribed values here (its accountSummary() would block)
        values = [
            v
            for v in self.session.ib.wrapper.acctSummary.values()
            if not account or v.account == account
        ]
        return sorted(values, key=lambda v: (v.account, v.tag, v.currency))

    async def _load(self) -> None:
        await self.session.request(
            lambda: self.session.ib.reqAccountSummaryAsync(), what="account summary"
        )
        self._loaded = True


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """Thin: validate → session → convert."""

    def __init__(self, session: IbSession, summaries: AccountSummaries) -> None:
        self.session = session
        self.summaries = summaries

    async def ListAccounts(
        self, request: account_pb2.ListAccountsRequest, context: Context
    ) -> account_pb2.ListAccountsResponse:
        self.session.require_connected()
        return account_pb2.ListAccountsResponse(
            accounts=[convert.account_to_proto(a) for a in self.session.accounts]
        )

    async def GetAccountSummary(
        self, request: account_pb2.GetAccountSummaryRequest, context: Context
    ) -> account_pb2.GetAccountSummaryResponse:
        self.session.require_connected()
        account = (
            self.session.resolve_account(request.account_id, field="account_id")
            if request.account_id
            else ""
        )
        wanted = {t.strip() for t in request.tags if t.strip()}
        values = await self.summaries.values(account, context=context)
        return account_pb2.GetAccountSummaryResponse(
            values=[
                account_pb2.AccountValue(
                    account_id=v.account, tag=v.tag, value=v.value, currency=v.currency
                )
                for v in values
                if not wanted or v.tag in wanted
            ]
        )

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: Context
    ) -> account_pb2.GetBalanceResponse:
        self.session.require_connected()
        account = self.session.resolve_account(request.account_id, field="account_id")
        values = await self.summaries.values(account, context=context)
        by_tag = {v.tag: v for v in values if v.tag in BALANCE_TAGS.values()}
        if "NetLiquidation" not in by_tag:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "BALANCE_NOT_AVAILABLE",
                f"TWS sent no balances for account {account} yet; retry shortly",
                metadata={"account": account},
                retry_after=1.0,
            )
        response = account_pb2.GetBalanceResponse(
            account_id=account, currency=by_tag["NetLiquidation"].currency
        )
        for field, tag in BALANCE_TAGS.items():
            if tag in by_tag:
                getattr(response, field).CopyFrom(convert.to_decimal(by_tag[tag].value))
        return response


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
