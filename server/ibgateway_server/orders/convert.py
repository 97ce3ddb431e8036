"""IB → proto for orders: an ib_insync ``Trade`` as ``orders_pb2.Order``, fills,
executions and what-if previews. Floats from IB go through their shortest repr, so prices
never show a float artefact. Pure: nothing here touches the network or the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import UNSET_DOUBLE, Fill, OrderState, Trade
from ibgateway_server.orders.ib_terms import (
    CAPPED_TYPES,
    DONE_STATUSES,
    LIMIT_TYPES,
    OCA_TYPE_FROM_IB,
    SIDE_FROM_IB,
    STOP_TYPES,
    TIF_FROM_IB,
    TRAILING_TYPES,
    TYPE_FROM_IB,
    bracket_of,
    good_till_time,
    ib_number,
    status_from_ib,
    strip_error_prefix,
    trailing_offsets,
)


def is_done(trade: Trade) -> bool:
    """Nothing of the order is working any more (filled, cancelled or inactive)."""
    return status_from_ib(trade.orderStatus.status) in DONE_STATUSES


def filled_quantity(trade: Trade) -> Decimal:
    """What executed so far: the best of IB's cumulative figure and the fills seen.

    A live order's orderStatus carries the cumulative quantity; a completed order fetched
    after a restart only has its fills (reqExecutions) or the order's filledQuantity.
    """
    candidates = [
        ib_number(trade.orderStatus.filled),
        _sum(ib_number(f.execution.shares) for f in trade.fills),
        ib_number(getattr(trade.order, "filledQuantity", None)),
    ]
    return max((c for c in candidates if c is not None), default=Decimal(0))


def _sum(values: object) -> Decimal:
    total = Decimal(0)
    for value in values:  # type: ignore[attr-defined]
        if value is not None:
            total += value
    return total


def average_fill_price(trade: Trade) -> str:
    """IB's average fill price, else the exact quantity-weighted mean of the fills."""
    if trade.orderStatus.filled and trade.orderStatus.avgFillPrice:
        text = convert.decimal_text(trade.orderStatus.avgFillPrice)
        if text and text != "0":
            return text
    quantity, value = Decimal(0), Decimal(0)
    for fill in trade.fills:
        shares, price = ib_number(fill.execution.shares), ib_number(fill.execution.price)
        if shares and price is not None:
            quantity += shares
            value += shares * price
    if not quantity:
        return ""
    return convert.decimal_text((value / quantity).quantize(Decimal("1e-10")))


def fill_to_proto(fill: Fill) -> orders_pb2.Fill:
    execution = fill.execution
    msg = orders_pb2.Fill(
        execution_id=execution.execId,
        quantity=convert.to_decimal(execution.shares),
        price=convert.to_decimal(execution.price),
        exchange=execution.exchange or "",
    )
    when = fill_time(fill)
    _stamp(msg.execution_time, when)
    report = fill.commissionReport
    if report is not None and report.execId:
        msg.commission.value = convert.decimal_text(report.commission)
        msg.commission_currency = report.currency or ""
        # ib_insync turns IB's "unset" into 0.0: only a non-zero P&L means a close.
        if report.realizedPNL and report.realizedPNL != UNSET_DOUBLE:
            msg.realized_pnl.value = convert.decimal_text(report.realizedPNL)
    return msg


def fill_time(fill: Fill) -> datetime | None:
    when = fill.execution.time
    if isinstance(when, datetime):
        return when
    return fill.time if isinstance(fill.time, datetime) else None


def total_commission(fills: Sequence[Fill]) -> str:
    """The sum of the commission reports received so far; "" before the first one."""
    reported = [
        ib_number(f.commissionReport.commission)
        for f in fills
        if f.commissionReport is not None and f.commissionReport.execId
    ]
    known = [c for c in reported if c is not None]
    return convert.decimal_text(sum(known, Decimal(0))) if known else ""


def trade_to_proto(
    trade: Trade,
    *,
    create_time: datetime | None = None,
    message: tuple[int, str] | None = None,
    children: Sequence[Trade] = (),
) -> orders_pb2.Order:
    """The proto Order of an ib_insync Trade.

    ``message`` is the latest (IB code, text) about the order (e.g. 201 and its reason,
    202 cancelled); without it, the newest error recorded in the trade's log is used.
    ``children`` are the orders whose parent it is.
    """
    order, status = trade.order, trade.orderStatus
    order_type = order.orderType or ""
    quantity = ib_number(order.totalQuantity) or Decimal(0)
    filled = filled_quantity(trade)
    proto_status = status_from_ib(status.status)
    remaining = Decimal(0) if proto_status in DONE_STATUSES else max(Decimal(0), quantity - filled)
    fills = sorted(trade.fills, key=_fill_sort_key)
    msg = orders_pb2.Order(
        client_order_id=order.orderRef or "",
        order_id=order.orderId or status.orderId or 0,
        perm_id=order.permId or status.permId or 0,
        account_id=order.account or next((f.execution.acctNumber for f in fills), "") or "",
        contract=convert.contract_to_proto(trade.contract),
        side=SIDE_FROM_IB.get((order.action or "").upper(), orders_pb2.ORDER_SIDE_UNSPECIFIED),
        order_type=TYPE_FROM_IB.get(order_type, orders_pb2.ORDER_TYPE_UNSPECIFIED),
        quantity=common_pb2.Decimal(value=convert.decimal_text(quantity)),
        time_in_force=TIF_FROM_IB.get(
            (order.tif or "").upper(), orders_pb2.TIME_IN_FORCE_UNSPECIFIED
        ),
        outside_rth=bool(order.outsideRth),
        status=proto_status,
        filled_quantity=common_pb2.Decimal(value=convert.decimal_text(filled)),
        remaining_quantity=common_pb2.Decimal(value=convert.decimal_text(remaining)),
        average_fill_price=common_pb2.Decimal(value=average_fill_price(trade)),
        fills=[fill_to_proto(f) for f in fills],
        total_commission=common_pb2.Decimal(value=total_commission(fills)),
    )
    if order_type in LIMIT_TYPES:
        msg.limit_price.value = convert.decimal_text(order.lmtPrice)
    elif order_type in CAPPED_TYPES and ib_number(order.lmtPrice):
        msg.limit_price.value = convert.decimal_text(order.lmtPrice)
    if order_type in STOP_TYPES:
        msg.stop_price.value = convert.decimal_text(order.auxPrice)
    elif order_type in TRAILING_TYPES:
        msg.stop_price.value = convert.decimal_text(order.trailStopPrice)
        amount, percent = trailing_offsets(order)
        msg.trailing_amount.value = amount
        msg.trailing_percent.value = percent
        if order_type == "TRAIL LIMIT":
            msg.limit_offset.value = convert.decimal_text(order.lmtPriceOffset)
    elif order_type == "REL":
        msg.peg_offset.value = convert.decimal_text(order.auxPrice) or "0"
    _bracket_fields(msg, trade, children)
    code, text = message if message is not None else _last_logged_error(trade)
    msg.ib_code = code
    msg.status_message = text
    created = create_time or (trade.log[0].time if trade.log else None)
    _stamp(msg.create_time, created)
    _stamp(msg.update_time, last_update_time(trade))
    return msg


def _bracket_fields(msg: orders_pb2.Order, trade: Trade, children: Sequence[Trade]) -> None:
    """GTD expiry, OCA group, parent and children, and the bracket the order is a leg of."""
    order = trade.order
    _stamp(msg.good_till_time, good_till_time(order.goodTillDate or ""))
    msg.oca_group = order.ocaGroup or ""
    if msg.oca_group:
        msg.oca_type = OCA_TYPE_FROM_IB.get(order.ocaType or 3, orders_pb2.OCA_TYPE_UNSPECIFIED)
    msg.parent_order_id = int(order.parentId or trade.orderStatus.parentId or 0)
    msg.child_order_ids.extend(sorted(int(c.order.orderId or 0) for c in children))
    bracket, role = bracket_of(order.orderRef or "")
    if bracket and (role != orders_pb2.BRACKET_ROLE_ENTRY or children):
        msg.bracket_client_order_id = bracket
        msg.bracket_role = role


def _stamp(target: Timestamp, when: datetime | None) -> None:
    stamp = convert.timestamp(when)
    if stamp is not None:
        target.CopyFrom(stamp)


def _fill_sort_key(fill: Fill) -> tuple[float, str]:
    when = fill_time(fill)
    return (when.timestamp() if when is not None else 0.0, fill.execution.execId)


def _last_logged_error(trade: Trade) -> tuple[int, str]:
    for entry in reversed(trade.log):
        if entry.errorCode:
            return entry.errorCode, strip_error_prefix(entry.message)
    return 0, ""


def last_update_time(trade: Trade) -> datetime | None:
    times: list[datetime] = [e.time for e in trade.log if isinstance(e.time, datetime)]
    times += [t for t in (fill_time(f) for f in trade.fills) if t is not None]
    return max(times, key=lambda t: t.timestamp()) if times else None


def ib_amount(value: str | float | None) -> str:
    """One of IB's what-if figures as exact decimal text; IB's "unset" (the largest
    double, as text or float) and empty values become ""."""
    text = convert.decimal_text(value)
    if not text:
        return ""
    if abs(Decimal(text)) >= _IB_UNSET_DECIMAL:
        return ""
    return text


_IB_UNSET_DECIMAL = Decimal(repr(UNSET_DOUBLE))


def preview_to_proto(
    state: OrderState, contract: common_pb2.Contract, account: str
) -> orders_pb2.PreviewOrderResponse:
    """The PreviewOrderResponse of TWS's what-if answer."""

    def impact(before: str, change: str, after: str) -> orders_pb2.MarginImpact:
        return orders_pb2.MarginImpact(
            before=common_pb2.Decimal(value=ib_amount(before)),
            change=common_pb2.Decimal(value=ib_amount(change)),
            after=common_pb2.Decimal(value=ib_amount(after)),
        )

    return orders_pb2.PreviewOrderResponse(
        contract=contract,
        account_id=account,
        initial_margin=impact(
            state.initMarginBefore, state.initMarginChange, state.initMarginAfter
        ),
        maintenance_margin=impact(
            state.maintMarginBefore, state.maintMarginChange, state.maintMarginAfter
        ),
        equity_with_loan=impact(
            state.equityWithLoanBefore, state.equityWithLoanChange, state.equityWithLoanAfter
        ),
        commission=common_pb2.Decimal(value=ib_amount(state.commission)),
        min_commission=common_pb2.Decimal(value=ib_amount(state.minCommission)),
        max_commission=common_pb2.Decimal(value=ib_amount(state.maxCommission)),
        commission_currency=state.commissionCurrency or "",
        warning_text=state.warningText or "",
    )


def execution_to_proto(fill: Fill, order_ref: str = "") -> orders_pb2.Execution:
    """One execution with its order's ids; ``order_ref`` when the fill does not carry it."""
    execution = fill.execution
    return orders_pb2.Execution(
        fill=fill_to_proto(fill),
        client_order_id=execution.orderRef or order_ref,
        order_id=execution.orderId or 0,
        perm_id=execution.permId or 0,
        account_id=execution.acctNumber or "",
        contract=convert.contract_to_proto(fill.contract),
        side=SIDE_FROM_IB.get(_side_of(execution.side), orders_pb2.ORDER_SIDE_UNSPECIFIED),
    )


def _side_of(side: str) -> str:
    """Executions say "BOT" / "SLD"; orders say "BUY" / "SELL"."""
    side = (side or "").upper()
    return {"BOT": "BUY", "SLD": "SELL"}.get(side, side)


def execution_time(fill: Fill) -> datetime | None:
    return fill_time(fill)
