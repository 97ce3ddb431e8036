"""PortfolioService: positions with cost, market value and P&L."""

from __future__ import annotations

from typing import Any

import grpc

from ibgateway.v1 import portfolio_pb2, portfolio_pb2_grpc
from ibgateway_server.ib.session import IbSession
from ibgateway_server.portfolio.convert import position_to_proto
from ibgateway_server.portfolio.positions import fetch_positions, merge_portfolio

Context = grpc.aio.ServicerContext[Any, Any]


class PortfolioServicer(portfolio_pb2_grpc.PortfolioServiceServicer):
    """Positions asked from TWS on each call, valued with its portfolio updates."""

    def __init__(self, session: IbSession) -> None:
        self.session = session

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
