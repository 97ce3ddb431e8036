"""Positions: asked from TWS, valued with its portfolio updates."""

from __future__ import annotations

from typing import Any

import grpc

from ibgateway_server.ib.insync import (
    PortfolioItem,
    Position,
)
from ibgateway_server.ib.session import IbSession

Context = grpc.aio.ServicerContext[Any, Any]


async def fetch_positions(session: IbSession, context: Context | None = None) -> list[Position]:
    """Every position of every account, asked from TWS now (reqPositions).

    TWS answers positions at once, while its portfolio valuations may lag by minutes;
    quantities and average costs come from here.
    """
    positions: list[Position] = await session.shared(
        "positions", lambda: session.ib.reqPositionsAsync(), what="positions", context=context
    )
    return [p for p in positions if p.position]


def merge_portfolio(
    positions: list[Position], portfolio: list[PortfolioItem]
) -> list[PortfolioItem]:
    """Positions valued with TWS's portfolio data where it matches; unvalued ones get NaN
    (reported as "not available") for market price, value and P&L."""
    valued = {(i.account, i.contract.conId): i for i in portfolio}
    items: list[PortfolioItem] = []
    for pos in positions:
        item = valued.get((pos.account, pos.contract.conId))
        if item is not None and item.position == pos.position:
            items.append(item._replace(averageCost=pos.avgCost))
            continue
        nan = float("nan")
        items.append(
            PortfolioItem(
                contract=pos.contract,
                position=pos.position,
                marketPrice=nan,
                marketValue=nan,
                averageCost=pos.avgCost,
                unrealizedPNL=nan,
                realizedPNL=item.realizedPNL if item is not None else nan,
                account=pos.account,
            )
        )
    return items
