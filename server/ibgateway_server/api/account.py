"""AccountService: the accounts of the IB login, their summary values and balances."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ibgateway.v1 import account_pb2, account_pb2_grpc
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import AccountValue, PnL, RequestError
from ibgateway_server.ib.session import IbSession

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


class PnLFigures:
    """Today's profit and loss of one account, read from TWS on demand (reqPnL).

    Each read opens a reqPnL subscription, takes TWS's first update and cancels it: the
    figures are always fresh and no subscription outlives the call (TWS keeps pushing
    PnL once a second to every open one). Concurrent reads of one account share one
    subscription (ib_insync allows only one per account and model).
    """

    def __init__(self, session: IbSession) -> None:
        self.session = session

    async def read(
        self, account: str, *, context: Context | None = None
    ) -> tuple[float, float, float]:
        """(daily, unrealized, realized) P&L; NaN / IB's unset double where TWS sent none."""
        return await self.session.shared(
            f"pnl:{account}",
            lambda: self._first_update(account),
            what=f"P&L of {account}",
            context=context,
        )

    async def _first_update(self, account: str) -> tuple[float, float, float]:
        ib = self.session.ib
        first: asyncio.Future[PnL] = asyncio.get_running_loop().create_future()
        req_id: int | None = None

        def on_pnl(pnl: PnL) -> None:
            if pnl.account == account and not pnl.modelCode and not first.done():
                first.set_result(pnl)

        def on_error(error_req_id: int, code: int, message: str, contract: object) -> None:
            # reqPnL has no ib_insync future: its errors only come as events
            if error_req_id == req_id and not 2100 <= code < 2200 and not first.done():
                first.set_exception(RequestError(error_req_id, code, message))

        ib.pnlEvent += on_pnl
        ib.errorEvent += on_error
        try:
            ib.reqPnL(account)
            req_id = ib.wrapper.pnlKey2ReqId.get((account, ""))
            try:
                pnl = await first
                return (pnl.dailyPnL, pnl.unrealizedPnL, pnl.realizedPnL)
            finally:
                if ib.isConnected():
                    ib.cancelPnL(account)
                else:  # the connection is gone, and with it TWS's side; forget ours
                    ib.wrapper.pnlKey2ReqId.pop((account, ""), None)
        finally:
            ib.pnlEvent -= on_pnl
            ib.errorEvent -= on_error


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
