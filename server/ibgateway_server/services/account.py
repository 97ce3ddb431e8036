"""AccountService: the accounts of the IB login, their summary values and balances."""

from __future__ import annotations

from typing import Any

import grpc

from ibgateway.v1 import account_pb2, account_pb2_grpc
from ibgateway_server import convert
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib_api import AccountValue
from ibgateway_server.session import IbSession

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
    """Every account value TWS reports (tag, value, currency), per account.

    ib_insync subscribes to account updates for every managed account when it connects
    (up to 50 accounts) and TWS keeps the values current, so most calls answer from
    memory. An account without values yet (more than 50 accounts, or values still on
    their way) is requested once, shared by concurrent callers.
    """

    def __init__(self, session: IbSession) -> None:
        self.session = session

    async def values(
        self, account: str = "", *, context: Context | None = None
    ) -> list[AccountValue]:
        self.session.require_connected()
        accounts = [account] if account else self.session.accounts
        for acct in accounts:
            if not self._cached(acct):
                await self.session.shared(
                    f"account-updates:{acct}",
                    lambda acct=acct: self.session.ib.reqAccountUpdatesMultiAsync(acct),  # type: ignore[misc]
                    what=f"account values of {acct}",
                    context=context,
                )
        values = [v for acct in accounts for v in self._cached(acct)]
        return sorted(values, key=lambda v: (v.account, v.tag, v.currency))

    def _cached(self, account: str) -> list[AccountValue]:
        # modelCode "" = the account itself (not an advisor model portfolio)
        return [v for v in self.session.ib.accountValues(account) if not v.modelCode]


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
        net_liq = [v for v in values if v.tag == "NetLiquidation"]
        if not net_liq:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "BALANCE_NOT_AVAILABLE",
                f"TWS sent no balances for account {account} yet; retry shortly",
                metadata={"account": account},
                retry_after=1.0,
            )
        # the amounts in the account's base currency (the currency of NetLiquidation)
        base = net_liq[0].currency
        by_tag = {v.tag: v for v in values if v.tag in BALANCE_TAGS.values() and v.currency == base}
        response = account_pb2.GetBalanceResponse(account_id=account, currency=base)
        for field, tag in BALANCE_TAGS.items():
            if tag in by_tag:
                getattr(response, field).CopyFrom(convert.to_decimal(by_tag[tag].value))
        return response
