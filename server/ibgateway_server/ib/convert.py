"""Pure conversions between ib_insync objects and ibgateway.v1 messages.

Numbers become exact decimal strings: a float from IB is rendered through its shortest
round-trip representation (``repr``), so 150.1 stays "150.1"; IB's "unset" sentinels and
NaN become "" (not available).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from ibgateway.v1 import common_pb2
from ibgateway_server.ib.insync import UNSET_DOUBLE, UNSET_INTEGER, Contract

if TYPE_CHECKING:
    from ibgateway_server.ib.session import StateChange

Number = float | int | Decimal | str | None

# IB secType ↔ proto enum.
SEC_TYPE_TO_IB: dict[common_pb2.SecurityType.ValueType, str] = {
    common_pb2.SECURITY_TYPE_UNSPECIFIED: "STK",
    common_pb2.SECURITY_TYPE_STOCK: "STK",
    common_pb2.SECURITY_TYPE_OPTION: "OPT",
    common_pb2.SECURITY_TYPE_FUTURE: "FUT",
    common_pb2.SECURITY_TYPE_FOREX: "CASH",
    common_pb2.SECURITY_TYPE_INDEX: "IND",
    common_pb2.SECURITY_TYPE_CFD: "CFD",
    common_pb2.SECURITY_TYPE_CRYPTO: "CRYPTO",
    common_pb2.SECURITY_TYPE_FUTURE_OPTION: "FOP",
    common_pb2.SECURITY_TYPE_BOND: "BOND",
    common_pb2.SECURITY_TYPE_FUND: "FUND",
    common_pb2.SECURITY_TYPE_COMMODITY: "CMDTY",
    common_pb2.SECURITY_TYPE_WARRANT: "WAR",
}
SEC_TYPE_FROM_IB: dict[str, common_pb2.SecurityType.ValueType] = {
    ib: proto
    for proto, ib in SEC_TYPE_TO_IB.items()
    if proto != common_pb2.SECURITY_TYPE_UNSPECIFIED
}
# IbSession state (session.SessionState values) → proto ConnectionState. An explicit
# connect attempt counts as reconnecting; a stopped session is disconnected.
CONNECTION_STATES: dict[str, common_pb2.ConnectionState.ValueType] = {
    "connected": common_pb2.CONNECTION_STATE_CONNECTED,
    "disconnected": common_pb2.CONNECTION_STATE_DISCONNECTED,
    "stopped": common_pb2.CONNECTION_STATE_DISCONNECTED,
    "connecting": common_pb2.CONNECTION_STATE_RECONNECTING,
    "reconnecting": common_pb2.CONNECTION_STATE_RECONNECTING,
    "connectivity_lost": common_pb2.CONNECTION_STATE_IB_LINK_LOST,
}
RIGHT_TO_IB = {common_pb2.OPTION_RIGHT_CALL: "C", common_pb2.OPTION_RIGHT_PUT: "P"}
RIGHT_FROM_IB = {"C": common_pb2.OPTION_RIGHT_CALL, "CALL": common_pb2.OPTION_RIGHT_CALL,
                 "P": common_pb2.OPTION_RIGHT_PUT, "PUT": common_pb2.OPTION_RIGHT_PUT}  # fmt: skip


def decimal_text(value: Number) -> str:
    """An exact plain decimal string ("150.25", "-3", "0.00005"), or "" if unavailable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value) or value == UNSET_DOUBLE:
            return ""
        number = Decimal(repr(value))
    elif isinstance(value, int):
        if value == UNSET_INTEGER:
            return ""
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return ""
        try:
            number = Decimal(text)
        except InvalidOperation:
            return ""
    else:
        number = value
    if not number.is_finite():
        return ""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def to_decimal(value: Number) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=decimal_text(value))


def timestamp(moment: datetime | float | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from an aware datetime (naive = UTC) or epoch seconds; None stays None."""
    if moment is None:
        return None
    ts = timestamp_pb2.Timestamp()
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ts.FromDatetime(moment)
    else:
        ts.FromNanoseconds(int(moment * 1e9))
    return ts


def connection_state_to_proto(state: str) -> common_pb2.ConnectionState.ValueType:
    """The proto ConnectionState of a session.SessionState."""
    return CONNECTION_STATES.get(state, common_pb2.CONNECTION_STATE_DISCONNECTED)


def state_change_to_proto(change: StateChange) -> common_pb2.ConnectionStateChange:
    """The ConnectionStateChange that streams report for one session state change."""
    msg = common_pb2.ConnectionStateChange(
        state=connection_state_to_proto(change.state),
        message=change.message,
        ib_code=change.ib_code or 0,
    )
    msg.change_time.FromDatetime(change.time)
    return msg


def heartbeat_now() -> common_pb2.Heartbeat:
    """A stream heartbeat stamped with the gateway's clock."""
    beat = common_pb2.Heartbeat()
    beat.heartbeat_time.GetCurrentTime()
    return beat


def contract_to_proto(contract: Contract) -> common_pb2.Contract:
    """The proto Contract of an (ideally qualified) IB contract."""
    msg = common_pb2.Contract(
        con_id=contract.conId or 0,
        symbol=contract.symbol or "",
        sec_type=SEC_TYPE_FROM_IB.get(contract.secType or "", common_pb2.SECURITY_TYPE_UNSPECIFIED),
        exchange=contract.exchange or "",
        primary_exchange=contract.primaryExchange or "",
        currency=contract.currency or "",
        last_trade_date_or_contract_month=contract.lastTradeDateOrContractMonth or "",
        right=RIGHT_FROM_IB.get(
            (contract.right or "").upper(), common_pb2.OPTION_RIGHT_UNSPECIFIED
        ),
        multiplier=contract.multiplier or "",
        local_symbol=contract.localSymbol or "",
        trading_class=contract.tradingClass or "",
    )
    if contract.strike and contract.strike != UNSET_DOUBLE:
        msg.strike.value = decimal_text(contract.strike)
    return msg


def contract_from_proto(msg: common_pb2.Contract) -> Contract:
    """An IB Contract from a (partial) request spec, with the documented defaults.

    A con_id alone identifies the instrument. A symbol without further detail means a
    stock on SMART in USD; a forex pair defaults to IDEALPRO; a future without a contract
    month means the front month (IB's CONTFUT). The strike is expected to be
    validated already (see validation.parse_decimal).
    """
    sec_type = SEC_TYPE_TO_IB.get(msg.sec_type, "STK")
    if msg.con_id and not msg.symbol:
        # The con_id is enough; an exchange helps IB but is optional.
        return Contract(conId=msg.con_id, exchange=msg.exchange or "")
    # Stocks and options route through SMART by default; futures, futures options and
    # indices live on one exchange each, which IB finds from the symbol.
    if sec_type == "FUT" and not (msg.last_trade_date_or_contract_month or msg.local_symbol):
        sec_type = "CONTFUT"  # no month: the front month, IB's continuous future
    default_exchange = {"CASH": "IDEALPRO", "STK": "SMART", "OPT": "SMART"}.get(sec_type, "")
    exchange = msg.exchange or default_exchange
    currency = msg.currency or ("USD" if sec_type in ("STK", "OPT", "CASH") else "")
    strike = float(msg.strike.value) if msg.HasField("strike") and msg.strike.value else 0.0
    return Contract(
        conId=msg.con_id or 0,
        symbol=msg.symbol.strip().upper(),
        secType=sec_type,
        exchange=exchange,
        primaryExchange=msg.primary_exchange,
        currency=currency.upper(),
        lastTradeDateOrContractMonth=msg.last_trade_date_or_contract_month,
        strike=strike,
        right=RIGHT_TO_IB.get(msg.right, ""),
        multiplier=msg.multiplier,
        localSymbol=msg.local_symbol,
        tradingClass=msg.trading_class,
    )
