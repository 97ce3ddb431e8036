"""Contract details and symbol matches as protos (pure)."""

from __future__ import annotations

from typing import Any

from ibgateway.v1 import market_data_pb2
from ibgateway_server.ib import convert


def details_to_proto(details: Any) -> market_data_pb2.ContractDetails:
    """The proto ContractDetails of an ib_insync ContractDetails."""

    def split(text: str | None) -> list[str]:
        return [part for part in (text or "").split(",") if part]

    return market_data_pb2.ContractDetails(
        long_name=details.longName or "",
        min_tick=convert.to_decimal(details.minTick or None),
        time_zone_id=details.timeZoneId or "",
        trading_hours=details.tradingHours or "",
        liquid_hours=details.liquidHours or "",
        valid_exchanges=split(details.validExchanges),
        order_types=split(details.orderTypes),
        underlying_con_id=details.underConId or 0,
        underlying_symbol=details.underSymbol or "",
        contract_month=details.contractMonth or "",
    )


def match_to_proto(description: Any) -> market_data_pb2.ContractMatch:
    """The proto ContractMatch of an ib_insync ContractDescription."""
    contract = description.contract
    return market_data_pb2.ContractMatch(
        contract=convert.contract_to_proto(contract) if contract is not None else None,
        derivative_sec_types=list(description.derivativeSecTypes or []),
        # TWS sends a description from server version 176 on
        description=(getattr(contract, "description", "") or "") if contract else "",
    )
