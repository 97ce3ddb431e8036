"""Accounts and positions as protos (pure)."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from ibgateway.v1 import account_pb2, common_pb2, portfolio_pb2
from ibgateway_server.ib.convert import contract_to_proto, decimal_text, to_decimal
from ibgateway_server.ib.insync import (
    UNSET_DOUBLE,
    PortfolioItem,
)


def is_paper_account(account_id: str) -> bool:
    """IB paper accounts start with "D" (DU… individual, DF… advisor)."""
    return account_id.upper().startswith("D")


def account_to_proto(account_id: str) -> account_pb2.Account:
    return account_pb2.Account(account_id=account_id, paper=is_paper_account(account_id))


def unrealized_pnl_percent(item: PortfolioItem) -> str:
    """Unrealized P&L as a percentage of the cost basis (|quantity × average cost|)."""
    try:
        cost = abs(Decimal(repr(float(item.position))) * Decimal(repr(float(item.averageCost))))
        pnl = Decimal(repr(float(item.unrealizedPNL)))
    except (InvalidOperation, ValueError):
        return ""
    if not cost or not pnl.is_finite() or math.isnan(item.unrealizedPNL):
        return ""
    if item.unrealizedPNL == UNSET_DOUBLE:
        return ""
    return decimal_text((pnl / cost * 100).quantize(Decimal("0.0001")))


def position_to_proto(item: PortfolioItem) -> portfolio_pb2.Position:
    return portfolio_pb2.Position(
        account_id=item.account,
        contract=contract_to_proto(item.contract),
        quantity=to_decimal(item.position),
        average_cost=to_decimal(item.averageCost),
        market_price=to_decimal(item.marketPrice),
        market_value=to_decimal(item.marketValue),
        unrealized_pnl=to_decimal(item.unrealizedPNL),
        unrealized_pnl_percent=common_pb2.Decimal(value=unrealized_pnl_percent(item)),
        realized_pnl=to_decimal(item.realizedPNL),
    )
