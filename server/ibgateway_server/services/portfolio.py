"""PortfolioService: positions with cost, market value and P&L."""

from __future__ import annotations

from typing import Any

import grpc

from ibgateway.v1 import portfolio_pb2, portfolio_pb2_grpc
from ibgateway_server import convert
from ibgateway_server.ib_api import PortfolioItem
from ibgateway_server.session import IbSession

Context = grpc.aio.ServicerContext[Any, Any]


class PortfolioServicer(portfolio_pb2_grpc.PortfolioServiceServicer):
    """Positions come from TWS's portfolio updates, which it keeps current by itself."""

    def __init__(self, session: IbSession) -> None:
        self.session = session

    async def ListPositions(
        self, request: portfolio_pb2.ListPositionsRequest, context: Context
    ) -> portfolio_pb2.ListPositionsResponse:
        self.session.require_connected()
        accounts = (
            [self.session.resolve_account(request.account_id, field="account_id")]
            if request.account_id
            else self.session.accounts
        )
        items = [item for account in accounts for item in self._items(account)]
        items.sort(key=lambda i: (i.account, i.contract.symbol, i.contract.conId))
        return portfolio_pb2.ListPositionsResponse(
            positions=[convert.position_to_proto(i) for i in items]
        )

    def _items(self, account: str) -> list[PortfolioItem]:
        """Portfolio items, plus bare positions TWS valued nowhere (no market fields)."""
        ib = self.session.ib
        items = [i for i in ib.portfolio(account) if i.position]
        valued = {i.contract.conId for i in items}
        for pos in ib.positions(account):
            if pos.position and pos.contract.conId not in valued:
                items.append(
                    PortfolioItem(
                        contract=pos.contract,
                        position=pos.position,
                        marketPrice=float("nan"),
                        marketValue=float("nan"),
                        averageCost=pos.avgCost,
                        unrealizedPNL=float("nan"),
                        realizedPNL=float("nan"),
                        account=pos.account,
                    )
                )
        return items
