"""Account values and P&L of the IB login, read from TWS and shared between callers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ibgateway_server.ib.insync import (
    AccountValue,
    PnL,
    RequestError,
)
from ibgateway_server.ib.session import IbSession

Context = grpc.aio.ServicerContext[Any, Any]


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
