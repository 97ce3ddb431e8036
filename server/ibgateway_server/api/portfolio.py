"""PortfolioService: positions with cost, market value and P&L; WatchPortfolio."""

from __future__ import annotations

from typing import Any

import grpc

from ibgateway.v1 import portfolio_pb2, portfolio_pb2_grpc
from ibgateway_server.api.validation import Violations, heartbeat_seconds
from ibgateway_server.ib.session import IbSession, SessionEvent, StateChange
from ibgateway_server.portfolio.convert import position_to_proto
from ibgateway_server.portfolio.positions import fetch_positions, merge_portfolio
from ibgateway_server.portfolio.watch import PnlSubscriptions, PortfolioWatch

Context = grpc.aio.ServicerContext[Any, Any]


class PortfolioServicer(portfolio_pb2_grpc.PortfolioServiceServicer):
    """Positions asked from TWS on each call, valued with its portfolio updates."""

    def __init__(self, session: IbSession, *, heartbeat_seconds: float = 5.0) -> None:
        self.session = session
        self.heartbeat_seconds = heartbeat_seconds
        self.pnl = PnlSubscriptions(session)
        self._watches: set[PortfolioWatch] = set()
        session.add_state_listener(self._on_state)

    def _on_state(self, change: StateChange) -> None:
        if change.event is SessionEvent.CONNECTED:
            self.pnl.resubscribe()  # IB forgot every P&L subscription

    async def close(self) -> None:
        """End every WatchPortfolio stream (the gateway is shutting down)."""
        for watch in list(self._watches):
            watch.close()

    async def WatchPortfolio(  # type: ignore[override]
        self, request: portfolio_pb2.WatchPortfolioRequest, context: Context
    ) -> None:
        violations = Violations()
        heartbeat = heartbeat_seconds(
            request.heartbeat_interval if request.HasField("heartbeat_interval") else None,
            self.heartbeat_seconds,
            violations,
        )
        violations.raise_if_any()
        self.session.require_connected()
        account = self.session.resolve_account(request.account_id, field="account_id")
        watch = PortfolioWatch(self.session, self.pnl, account)
        self._watches.add(watch)
        watch.open()
        try:
            await watch.run(context.write, heartbeat)
        finally:
            watch.close()
            self._watches.discard(watch)

    async def ListPositions(
        self, request: portfolio_pb2.ListPositionsRequest, context: Context
    ) -> portfolio_pb2.ListPositionsResponse:
        self.session.require_connected()
        account = (
            self.session.resolve_account(request.account_id, field="account_id")
            if request.account_id
            else ""
        )
        positions = await fetch_positions(self.session, context)
        items = merge_portfolio(
            [p for p in positions if not account or p.account == account],
            self.session.ib.portfolio(account) if account else self.session.ib.portfolio(),
        )
        items.sort(key=lambda i: (i.account, i.contract.symbol, i.contract.conId))
        return portfolio_pb2.ListPositionsResponse(positions=[position_to_proto(i) for i in items])
