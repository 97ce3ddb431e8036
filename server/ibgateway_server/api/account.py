"""AccountService: the accounts of the IB login, their summary values and balances."""

from __future__ import annotations

from typing import Any

import grpc

from ibgateway.v1 import account_pb2, account_pb2_grpc
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib import convert
from ibgateway_server.ib.session import IbSession
from ibgateway_server.portfolio.accounts import AccountSummaries, PnLFigures
from ibgateway_server.portfolio.convert import account_to_proto

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


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """Thin: validate → session → convert."""

    def __init__(
        self, session: IbSession, summaries: AccountSummaries, pnl: PnLFigures | None = None
    ) -> None:
        self.session = session
        self.summaries = summaries
        self.pnl = pnl if pnl is not None else PnLFigures(session)

    async def ListAccounts(
        self, request: account_pb2.ListAccountsRequest, context: Context
    ) -> account_pb2.ListAccountsResponse:
        self.session.require_connected()
        return account_pb2.ListAccountsResponse(
            accounts=[account_to_proto(a) for a in self.session.accounts]
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

    async def GetPnL(
        self, request: account_pb2.GetPnLRequest, context: Context
    ) -> account_pb2.GetPnLResponse:
        self.session.require_connected()
        account = self.session.resolve_account(request.account_id, field="account_id")
        daily, unrealized, realized = await self.pnl.read(account, context=context)
        return account_pb2.GetPnLResponse(
            account_id=account,
            daily_pnl=convert.to_decimal(daily),
            unrealized_pnl=convert.to_decimal(unrealized),
            realized_pnl=convert.to_decimal(realized),
        )
