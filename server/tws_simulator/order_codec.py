"""Order messages on the wire: decode placeOrder, encode the order-related answers.

Pure functions, no I/O. Layouts follow what a real TWS sends (see
``shared/reference/tws-captures/``: open_order_spy_mkt, order_status_filled,
execution_details_eurusd, commission_report) for every negotiated server version the
simulator serves (157..178). The version gates are IB's own ``MIN_SERVER_VER_*`` numbers:

====  =====================================================================
158   DURATION: ``duration`` in placeOrder and openOrder
160   POST_TO_ATS: ``postToAts``
162   AUTO_CANCEL_PARENT: ``autoCancelParent`` (openOrder; completedOrder always has it)
166   ADVANCED_ORDER_REJECT: ``advancedErrorOverride`` in placeOrder
169   MANUAL_ORDER_TIME: ``manualOrderTime`` in placeOrder (and cancelOrder)
170   PEGBEST_PEGMID_OFFSETS: five peg fields in openOrder/completedOrder, conditional
      ones in placeOrder
177   FA_PROFILE_DESUPPORT: the deprecated ``faProfile`` field disappears everywhere
178   PENDING_PRICE_REVISION: ``pendingPriceRevision`` ends execDetails
====  =====================================================================

TWS formats numbers differently per field (``0`` vs ``0.0``, empty vs
``1.7976931348623157E308`` for "unset"); the encoders reproduce the captures exactly, field
by field, so each field below says which convention it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from tws_simulator import versions
from tws_simulator.message_ids import Out
from tws_simulator.wire import (
    UNSET_DOUBLE,
    UNSET_DOUBLE_TEXT,
    UNSET_INTEGER,
    UNSET_INTEGER_TEXT,
    fmt_float,
)

# Number of wire fields (condition type included) of each order condition type, as
# ib_insync/ib_async send them: price, time, margin, execution, volume, percent change.
_CONDITION_FIELDS = {1: 7, 3: 4, 4: 4, 5: 5, 6: 6, 7: 6}


class DecodeError(ValueError):
    """A placeOrder message that cannot be parsed (too short, bad number, ...)."""


# --------------------------------------------------------------------------- decoding


@dataclass
class ContractSpec:
    """The contract as a client sent it in placeOrder (possibly partial)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    sec_id_type: str = ""
    sec_id: str = ""
    combo_legs: int = 0


@dataclass
class OrderRequest:
    """Everything of a placeOrder the simulator uses; the rest is parsed and skipped.

    Optional numbers are ``None`` when the client left them unset (an empty field).
    """

    order_id: int
    contract: ContractSpec
    action: str = ""
    total_quantity: Decimal = Decimal(0)
    order_type: str = ""
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = ""
    oca_group: str = ""
    account: str = ""
    open_close: str = ""
    origin: int = 0
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    block_order: bool = False
    sweep_to_fill: bool = False
    display_size: int | None = None
    trigger_method: int = 0
    outside_rth: bool = False
    hidden: bool = False
    discretionary_amt: float | None = None
    good_after_time: str = ""
    good_till_date: str = ""
    fa_group: str = ""
    fa_method: str = ""
    fa_percentage: str = ""
    model_code: str = ""
    short_sale_slot: int = 0
    designated_location: str = ""
    exempt_code: int = -1
    oca_type: int = 0
    rule80a: str = ""
    settling_firm: str = ""
    all_or_none: bool = False
    min_qty: int | None = None
    percent_offset: float | None = None
    auction_strategy: int = 0
    starting_price: float | None = None
    stock_ref_price: float | None = None
    delta: float | None = None
    stock_range_lower: float | None = None
    stock_range_upper: float | None = None
    volatility: float | None = None
    volatility_type: int | None = None
    delta_neutral_order_type: str = ""
    continuous_update: bool = False
    reference_price_type: int | None = None
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    scale_init_level_size: int | None = None
    scale_subs_level_size: int | None = None
    scale_price_increment: float | None = None
    hedge_type: str = ""
    opt_out_smart_routing: bool = False
    clearing_account: str = ""
    clearing_intent: str = ""
    not_held: bool = False
    algo_strategy: str = ""
    algo_params: list[tuple[str, str]] = field(default_factory=list)
    what_if: bool = False
    solicited: bool = False
    randomize_size: bool = False
    randomize_price: bool = False
    conditions: int = 0
    cash_qty: float | None = None
    dont_use_auto_price_for_hedge: bool = False
    is_oms_container: bool = False
    discretionary_up_to_limit_price: bool = False
    use_price_mgmt_algo: bool | None = None
    duration: int | None = None
    post_to_ats: int | None = None
    auto_cancel_parent: bool = False
    advanced_error_override: str = ""
    manual_order_time: str = ""
    min_trade_qty: int | None = None
    min_compete_size: int | None = None
    compete_against_best_offset: float | None = None
    mid_offset_at_whole: float | None = None
    mid_offset_at_half: float | None = None
    lmt_price_offset: float | None = None


class _Reader:
    """Sequential typed access to the fields of one message."""

    def __init__(self, fields: list[str]) -> None:
        self._fields = fields
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._fields) - self._pos

    def text(self) -> str:
        if self._pos >= len(self._fields):
            raise DecodeError(f"message ends after {len(self._fields)} fields")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def skip(self, count: int) -> None:
        for _ in range(count):
            self.text()

    def integer(self, default: int = 0) -> int:
        text = self.text()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            try:  # a client may format an int as a float ("1.0")
                return int(float(text))
            except ValueError:
                raise DecodeError(f"not an integer: {text!r}") from None

    def integer_max(self) -> int | None:
        """An int where empty (or TWS's unset 2147483647) means "not set"."""
        text = self.text()
        if not text:
            return None
        try:
            value = int(float(text))
        except ValueError:
            raise DecodeError(f"not an integer: {text!r}") from None
        return None if value == UNSET_INTEGER else value

    def number_max(self) -> float | None:
        """A double where empty (or the unset 1.797e308) means "not set"."""
        text = self.text()
        if not text:
            return None
        if text == "Infinite":  # how ib_insync/ib_async send math.inf
            return math.inf
        try:
            value = float(text)
        except ValueError:
            raise DecodeError(f"not a number: {text!r}") from None
        return None if value == UNSET_DOUBLE else value

    def flag(self) -> bool:
        text = self.text()
        if not text:
            return False
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        try:
            return int(float(text)) != 0
        except ValueError:
            raise DecodeError(f"not a boolean: {text!r}") from None

    def quantity(self) -> Decimal:
        text = self.text()
        if not text:
            return Decimal(0)
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise DecodeError(f"not a quantity: {text!r}") from None
        if not value.is_finite():
            raise DecodeError(f"not a quantity: {text!r}")
        return value


def decode_place_order(
    fields: list[str], server_version: int, *, strict: bool = False
) -> OrderRequest:
    """Parse a placeOrder message (the fields after the message id).

    Follows the field order of ib_insync 0.9.86 / ib_async 2.x ``Client.placeOrder``
    (which is the official EClient's) for the negotiated ``server_version``. Trailing
    fields a newer client might add are ignored unless ``strict`` (used by the tests).
    """
    r = _Reader(fields)
    order_id = r.integer()
    c = ContractSpec(
        con_id=r.integer(),
        symbol=r.text(),
        sec_type=r.text(),
        last_trade_date=r.text(),
        strike=r.number_max() or 0.0,
        right=r.text(),
        multiplier=r.text(),
        exchange=r.text(),
        primary_exchange=r.text(),
        currency=r.text(),
        local_symbol=r.text(),
        trading_class=r.text(),
        sec_id_type=r.text(),
        sec_id=r.text(),
    )
    o = OrderRequest(order_id=order_id, contract=c)
    o.action = r.text()
    o.total_quantity = r.quantity()
    o.order_type = r.text()
    o.lmt_price = r.number_max()
    o.aux_price = r.number_max()
    o.tif = r.text()
    o.oca_group = r.text()
    o.account = r.text()
    o.open_close = r.text()
    o.origin = r.integer()
    o.order_ref = r.text()
    o.transmit = r.flag()
    o.parent_id = r.integer()
    o.block_order = r.flag()
    o.sweep_to_fill = r.flag()
    o.display_size = r.integer_max()
    o.trigger_method = r.integer()
    o.outside_rth = r.flag()
    o.hidden = r.flag()
    if c.sec_type == "BAG":
        c.combo_legs = r.integer()
        r.skip(8 * c.combo_legs)
        r.skip(r.integer())  # order combo leg prices
        r.skip(2 * r.integer())  # smart combo routing params
    r.text()  # deprecated sharesAllocation
    o.discretionary_amt = r.number_max()
    o.good_after_time = r.text()
    o.good_till_date = r.text()
    o.fa_group = r.text()
    o.fa_method = r.text()
    o.fa_percentage = r.text()
    if server_version < versions.FA_PROFILE_DESUPPORT:
        r.text()  # faProfile
    o.model_code = r.text()
    o.short_sale_slot = r.integer()
    o.designated_location = r.text()
    o.exempt_code = r.integer(-1)
    o.oca_type = r.integer()
    o.rule80a = r.text()
    o.settling_firm = r.text()
    o.all_or_none = r.flag()
    o.min_qty = r.integer_max()
    o.percent_offset = r.number_max()
    r.skip(3)  # eTradeOnly, firmQuoteOnly, nbboPriceCap (deprecated)
    o.auction_strategy = r.integer()
    o.starting_price = r.number_max()
    o.stock_ref_price = r.number_max()
    o.delta = r.number_max()
    o.stock_range_lower = r.number_max()
    o.stock_range_upper = r.number_max()
    r.text()  # overridePercentageConstraints
    o.volatility = r.number_max()
    o.volatility_type = r.integer_max()
    o.delta_neutral_order_type = r.text()
    r.number_max()  # deltaNeutralAuxPrice
    if o.delta_neutral_order_type:
        r.skip(8)  # conId, settlingFirm, clearing account/intent, openClose, short sale x3
    o.continuous_update = r.flag()
    o.reference_price_type = r.integer_max()
    o.trail_stop_price = r.number_max()
    o.trailing_percent = r.number_max()
    o.scale_init_level_size = r.integer_max()
    o.scale_subs_level_size = r.integer_max()
    o.scale_price_increment = r.number_max()
    if o.scale_price_increment is not None and 0 < o.scale_price_increment:
        r.skip(7)  # scale price adjust value/interval, profit offset, auto reset, ...
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    o.hedge_type = r.text()
    if o.hedge_type:
        r.text()  # hedgeParam
    o.opt_out_smart_routing = r.flag()
    o.clearing_account = r.text()
    o.clearing_intent = r.text()
    o.not_held = r.flag()
    if r.flag():  # delta-neutral contract present
        r.skip(3)
    o.algo_strategy = r.text()
    if o.algo_strategy:
        for _ in range(r.integer()):
            o.algo_params.append((r.text(), r.text()))
    r.text()  # algoId
    o.what_if = r.flag()
    r.text()  # orderMiscOptions
    o.solicited = r.flag()
    o.randomize_size = r.flag()
    o.randomize_price = r.flag()
    if o.order_type in ("PEG BENCH", "PEGBENCH"):
        r.skip(5)
    o.conditions = r.integer()
    if o.conditions:
        for _ in range(o.conditions):
            kind = r.integer()
            if kind not in _CONDITION_FIELDS:
                raise DecodeError(f"unknown order condition type {kind}")
            r.skip(_CONDITION_FIELDS[kind] - 1)
        r.skip(2)  # conditionsIgnoreRth, conditionsCancelOrder
    r.text()  # adjustedOrderType
    r.text()  # triggerPrice
    o.lmt_price_offset = r.number_max()  # TRAIL LIMIT's limit offset
    r.skip(3)  # adjusted stop / stop limit / trailing amount
    r.text()  # adjustableTrailingUnit
    r.text()  # extOperator
    r.skip(2)  # softDollarTier name, value
    o.cash_qty = r.number_max()
    r.skip(4)  # MiFID II decision maker / algo, execution trader / algo
    o.dont_use_auto_price_for_hedge = r.flag()
    o.is_oms_container = r.flag()
    o.discretionary_up_to_limit_price = r.flag()
    use_price_mgmt = r.text()
    o.use_price_mgmt_algo = None if use_price_mgmt == "" else use_price_mgmt not in ("0", "")
    if server_version >= versions.DURATION:
        o.duration = r.integer_max()
    if server_version >= versions.POST_TO_ATS:
        o.post_to_ats = r.integer_max()
    if server_version >= versions.AUTO_CANCEL_PARENT:
        o.auto_cancel_parent = r.flag()
    if server_version >= versions.ADVANCED_ORDER_REJECT:
        o.advanced_error_override = r.text()
    if server_version >= versions.MANUAL_ORDER_TIME:
        o.manual_order_time = r.text()
    if server_version >= versions.PEGBEST_PEGMID_OFFSETS:
        if c.exchange == "IBKRATS":
            o.min_trade_qty = r.integer_max()
        if o.order_type in ("PEG BEST", "PEGBEST"):
            o.min_compete_size = r.integer_max()
            o.compete_against_best_offset = r.number_max()
            if o.compete_against_best_offset == math.inf:
                o.mid_offset_at_whole = r.number_max()
                o.mid_offset_at_half = r.number_max()
        elif o.order_type in ("PEG MID", "PEGMID"):
            o.mid_offset_at_whole = r.number_max()
            o.mid_offset_at_half = r.number_max()
    if strict and r.remaining:
        raise DecodeError(f"{r.remaining} unexpected trailing fields")
    return o


@dataclass(frozen=True)
class CancelRequest:
    order_id: int
    manual_cancel_order_time: str = ""


def decode_cancel_order(fields: list[str], server_version: int) -> CancelRequest:
    """cancelOrder: version, orderId[, manualCancelOrderTime (>= 169)]."""
    r = _Reader(fields)
    r.text()  # message version
    order_id = r.integer()
    manual_time = r.text() if server_version >= versions.MANUAL_ORDER_TIME and fields[2:] else ""
    return CancelRequest(order_id, manual_time)


@dataclass(frozen=True)
class ExecutionFilter:
    """reqExecutions' filter: empty / zero fields match everything."""

    client_id: int = 0
    account: str = ""
    time: str = ""
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    side: str = ""


def decode_req_executions(fields: list[str]) -> tuple[int, ExecutionFilter]:
    """reqExecutions: version, reqId, then the seven filter fields."""
    r = _Reader(fields)
    r.text()  # message version
    req_id = r.integer()
    flt = ExecutionFilter(
        client_id=r.integer(),
        account=r.text(),
        time=r.text(),
        symbol=r.text(),
        sec_type=r.text(),
        exchange=r.text(),
        side=r.text(),
    )
    return req_id, flt


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class ContractFields:
    """The qualified contract as TWS describes it in order messages."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""


@dataclass(frozen=True)
class WhatIfState:
    """The margin/commission preview of a what-if order (strings as TWS sends them)."""

    init_margin_before: str = UNSET_DOUBLE_TEXT
    maint_margin_before: str = UNSET_DOUBLE_TEXT
    equity_with_loan_before: str = UNSET_DOUBLE_TEXT
    init_margin_change: str = UNSET_DOUBLE_TEXT
    maint_margin_change: str = UNSET_DOUBLE_TEXT
    equity_with_loan_change: str = UNSET_DOUBLE_TEXT
    init_margin_after: str = UNSET_DOUBLE_TEXT
    maint_margin_after: str = UNSET_DOUBLE_TEXT
    equity_with_loan_after: str = UNSET_DOUBLE_TEXT
    commission: float | None = None
    min_commission: float | None = None
    max_commission: float | None = None
    commission_currency: str = ""
    warning_text: str = ""


def _java(value: float | None, unset: str = "") -> str:
    """A double the way Java's Double.toString writes it ("0.0", "1.08735")."""
    return unset if value is None else fmt_float(value)


def _compact(value: float | None, unset: str = "") -> str:
    """A double written without a trailing ".0" when integral ("0", "1.08725")."""
    if value is None:
        return unset
    if not math.isfinite(value):  # a client may send "Infinite"/"nan"; never int() those
        return fmt_float(value)
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _opt_int(value: int | None) -> str:
    return "" if value is None else str(value)


def _bool(value: bool) -> str:
    return "1" if value else "0"


def _qty(value: Decimal) -> str:
    """A quantity as TWS's Decimal: no exponent, no trailing zeros ("1000", "0.5")."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _contract_fields(c: ContractFields, *, strike: str, right: str) -> list[str]:
    return [
        str(c.con_id),
        c.symbol,
        c.sec_type,
        c.last_trade_date,
        strike,
        right,
        c.multiplier,
        c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


def encode_open_order(
    server_version: int,
    order: OrderRequest,
    contract: ContractFields,
    *,
    client_id: int,
    perm_id: int,
    status: str,
    trail_stop_price: float | None = None,
    what_if: WhatIfState | None = None,
) -> list[str]:
    """openOrder (no version field at these server versions), 136 fields at 176.

    ``contract`` is the qualified contract; its ``exchange`` is the order's routing
    destination. ``trail_stop_price`` is the live stop of a TRAIL order.
    """
    o = order
    trail_stop = trail_stop_price if trail_stop_price is not None else o.trail_stop_price
    state = what_if or WhatIfState()
    f: list[str] = [str(int(Out.OPEN_ORDER)), str(o.order_id)]
    # Contract: strike written compact ("0"), an empty right as "?".
    f += _contract_fields(contract, strike=_compact(contract.strike), right=contract.right or "?")
    f += [
        o.action,
        _qty(o.total_quantity),
        o.order_type,
        _java(o.lmt_price, "0.0"),  # unset prices are 0.0 in openOrder
        _java(o.aux_price, "0.0"),
        o.tif,
        o.oca_group,
        o.account,
        o.open_close,
        str(o.origin),
        o.order_ref,
        str(client_id),
        str(perm_id),
        _bool(o.outside_rth),
        _bool(o.hidden),
        _compact(o.discretionary_amt, "0"),
        o.good_after_time,
        f"{perm_id}.0/{o.account}/100",  # deprecated sharesAllocation, as TWS fills it
        o.fa_group,
        o.fa_method,
        o.fa_percentage,
    ]
    if server_version < versions.FA_PROFILE_DESUPPORT:
        f.append("")  # faProfile
    f += [
        o.model_code,
        o.good_till_date,
        o.rule80a,
        _java(o.percent_offset),
        o.settling_firm,
        str(o.short_sale_slot),
        o.designated_location,
        str(o.exempt_code),
        str(o.auction_strategy),
        _java(o.starting_price),
        _java(o.stock_ref_price),
        _java(o.delta),
        _java(o.stock_range_lower),
        _java(o.stock_range_upper),
        str(o.display_size or UNSET_INTEGER),  # 0 / unset: no display size
        _bool(o.block_order),
        _bool(o.sweep_to_fill),
        _bool(o.all_or_none),
        _opt_int(o.min_qty),
        str(o.oca_type or 3),  # TWS reports its default OCA type 3 for "none given"
        "0",  # eTradeOnly
        "0",  # firmQuoteOnly
        "",  # nbboPriceCap
        str(o.parent_id),
        str(o.trigger_method),
        _java(o.volatility),
        str(o.volatility_type or 0),
        # TWS writes the literal "None" here, which makes every decoder read the
        # eight delta-neutral fields that follow.
        o.delta_neutral_order_type or "None",
        "",  # deltaNeutralAuxPrice
        "0",  # deltaNeutralConId
        "",  # deltaNeutralSettlingFirm
        "",  # deltaNeutralClearingAccount
        "",  # deltaNeutralClearingIntent
        "?",  # deltaNeutralOpenClose
        "0",  # deltaNeutralShortSale
        "0",  # deltaNeutralShortSaleSlot
        "",  # deltaNeutralDesignatedLocation
        _bool(o.continuous_update),
        str(o.reference_price_type or 0),
        _java(trail_stop),
        _java(o.trailing_percent),
        "",  # basisPoints
        "",  # basisPointsType
        "",  # comboLegsDescrip
        "0",  # comboLegs count
        "0",  # orderComboLegs count
        "0",  # smartComboRoutingParams count
        str(o.scale_init_level_size if o.scale_init_level_size is not None else UNSET_INTEGER),
        str(o.scale_subs_level_size if o.scale_subs_level_size is not None else UNSET_INTEGER),
        "",  # scalePriceIncrement (no scale order: the scale detail fields are absent)
        o.hedge_type,
    ]
    if o.hedge_type:
        f.append("")  # hedgeParam
    f += [
        _bool(o.opt_out_smart_routing),
        o.clearing_account,
        o.clearing_intent or "IB",
        _bool(o.not_held),
        "0",  # delta-neutral contract present
        o.algo_strategy,
    ]
    if o.algo_strategy:
        f.append(str(len(o.algo_params)))
        for tag, value in o.algo_params:
            f += [tag, value]
    f += [
        _bool(o.solicited),
        _bool(o.what_if),
        status,
        state.init_margin_before,
        state.maint_margin_before,
        state.equity_with_loan_before,
        state.init_margin_change,
        state.maint_margin_change,
        state.equity_with_loan_change,
        state.init_margin_after,
        state.maint_margin_after,
        state.equity_with_loan_after,
        _java(state.commission),
        _java(state.min_commission),
        _java(state.max_commission),
        state.commission_currency,
        state.warning_text,
        _bool(o.randomize_size),
        _bool(o.randomize_price),
        "0",  # conditions count (conditions are not simulated; see orders.py)
        "None",  # adjustedOrderType
        UNSET_DOUBLE_TEXT,  # triggerPrice
        _java(trail_stop, UNSET_DOUBLE_TEXT),
        _java(o.lmt_price_offset, UNSET_DOUBLE_TEXT),
        UNSET_DOUBLE_TEXT,  # adjustedStopPrice
        UNSET_DOUBLE_TEXT,  # adjustedStopLimitPrice
        UNSET_DOUBLE_TEXT,  # adjustedTrailingAmount
        "0",  # adjustableTrailingUnit
        "",  # softDollarTier name
        "",  # softDollarTier value
        "",  # softDollarTier display name
        _compact(o.cash_qty, "0"),
        "1",  # dontUseAutoPriceForHedge: TWS reports true whatever was sent
        _bool(o.is_oms_container),
        _bool(o.discretionary_up_to_limit_price),
        _bool(bool(o.use_price_mgmt_algo)),
    ]
    if server_version >= versions.DURATION:
        f.append(_opt_int(o.duration))
    if server_version >= versions.POST_TO_ATS:
        f.append(_opt_int(o.post_to_ats))
    if server_version >= versions.AUTO_CANCEL_PARENT:
        f.append(_bool(o.auto_cancel_parent))
    if server_version >= versions.PEGBEST_PEGMID_OFFSETS:
        f += [
            _opt_int(o.min_trade_qty),
            _opt_int(o.min_compete_size),
            _java(o.compete_against_best_offset),
            _java(o.mid_offset_at_whole),
            _java(o.mid_offset_at_half),
        ]
    return f


def encode_order_status(
    *,
    order_id: int,
    status: str,
    filled: Decimal,
    remaining: Decimal,
    avg_fill_price: float,
    perm_id: int,
    parent_id: int,
    last_fill_price: float,
    client_id: int,
    why_held: str = "",
    mkt_cap_price: float = 0.0,
) -> list[str]:
    """orderStatus (no version field at these server versions), 12 fields."""
    return [
        str(int(Out.ORDER_STATUS)),
        str(order_id),
        status,
        _qty(filled),
        _qty(remaining),
        _compact(avg_fill_price),
        str(perm_id),
        str(parent_id),
        _compact(last_fill_price),
        str(client_id),
        why_held,
        _compact(mkt_cap_price),
    ]


@dataclass(frozen=True)
class ExecutionFields:
    """One execution (fill) as execDetails and reqExecutions report it."""

    exec_id: str
    time: str  # "yyyymmdd hh:mm:ss Zone/Name"
    account: str
    exchange: str
    side: str  # BOT / SLD
    shares: Decimal
    price: float
    perm_id: int
    client_id: int
    order_id: int
    cum_qty: Decimal
    avg_price: float
    order_ref: str
    last_liquidity: int  # 1 added liquidity (resting order), 2 removed (marketable)
    liquidation: int = 0
    model_code: str = ""


def encode_exec_details(
    server_version: int, req_id: int, contract: ContractFields, ex: ExecutionFields
) -> list[str]:
    """execDetails: reqId -1 for live fills, the request id for reqExecutions."""
    f = [str(int(Out.EXEC_DETAILS)), str(req_id), str(ex.order_id)]
    # Contract: strike Java style ("0.0"), right as given (empty).
    f += _contract_fields(contract, strike=_java(contract.strike), right=contract.right)
    f += [
        ex.exec_id,
        ex.time,
        ex.account,
        ex.exchange,
        ex.side,
        _qty(ex.shares),
        _java(ex.price),
        str(ex.perm_id),
        str(ex.client_id),
        str(ex.liquidation),
        _qty(ex.cum_qty),
        _java(ex.avg_price),
        ex.order_ref,
        "",  # evRule
        "",  # evMultiplier
        ex.model_code,
        str(ex.last_liquidity),
    ]
    if server_version >= versions.PENDING_PRICE_REVISION:
        f.append("0")  # pendingPriceRevision
    return f


def encode_commission_report(
    exec_id: str, commission: float, currency: str, realized_pnl: float | None
) -> list[str]:
    """commissionReport; an opening fill has no realized P&L (the unset double)."""
    return [
        str(int(Out.COMMISSION_REPORT)),
        "1",  # message version
        exec_id,
        _java(commission),
        currency,
        _java(realized_pnl, UNSET_DOUBLE_TEXT),
        UNSET_DOUBLE_TEXT,  # yield
        "",  # yieldRedemptionDate
    ]


def encode_completed_order(
    server_version: int,
    order: OrderRequest,
    contract: ContractFields,
    *,
    perm_id: int,
    status: str,
    filled_quantity: Decimal,
    completed_time: str,
    completed_status: str,
    trail_stop_price: float | None = None,
    parent_perm_id: int | None = None,
) -> list[str]:
    """completedOrder: like openOrder without order id, client id and open-order-only
    attributes, plus the completion fields (official ``processCompletedOrderMsg`` order).
    """
    o = order
    trail_stop = trail_stop_price if trail_stop_price is not None else o.trail_stop_price
    f: list[str] = [str(int(Out.COMPLETED_ORDER))]
    f += _contract_fields(contract, strike=_compact(contract.strike), right=contract.right or "?")
    f += [
        o.action,
        _qty(o.total_quantity),
        o.order_type,
        _java(o.lmt_price, "0.0"),
        _java(o.aux_price, "0.0"),
        o.tif,
        o.oca_group,
        o.account,
        o.open_close,
        str(o.origin),
        o.order_ref,
        str(perm_id),
        _bool(o.outside_rth),
        _bool(o.hidden),
        _compact(o.discretionary_amt, "0"),
        o.good_after_time,
        o.fa_group,
        o.fa_method,
        o.fa_percentage,
    ]
    if server_version < versions.FA_PROFILE_DESUPPORT:
        f.append("")  # faProfile
    f += [
        o.model_code,
        o.good_till_date,
        o.rule80a,
        _java(o.percent_offset),
        o.settling_firm,
        str(o.short_sale_slot),
        o.designated_location,
        str(o.exempt_code),
        _java(o.starting_price),
        _java(o.stock_ref_price),
        _java(o.delta),
        _java(o.stock_range_lower),
        _java(o.stock_range_upper),
        str(o.display_size or UNSET_INTEGER),  # 0 / unset: no display size
        _bool(o.sweep_to_fill),
        _bool(o.all_or_none),
        _opt_int(o.min_qty),
        str(o.oca_type or 3),
        str(o.trigger_method),
        _java(o.volatility),
        str(o.volatility_type or 0),
        o.delta_neutral_order_type or "None",
        "",  # deltaNeutralAuxPrice
        # completedOrder carries four (not eight) delta-neutral fields.
        "0",  # deltaNeutralConId
        "0",  # deltaNeutralShortSale
        "0",  # deltaNeutralShortSaleSlot
        "",  # deltaNeutralDesignatedLocation
        _bool(o.continuous_update),
        str(o.reference_price_type or 0),
        _java(trail_stop),
        _java(o.trailing_percent),
        "",  # comboLegsDescrip
        "0",  # comboLegs count
        "0",  # orderComboLegs count
        "0",  # smartComboRoutingParams count
        str(o.scale_init_level_size if o.scale_init_level_size is not None else UNSET_INTEGER),
        str(o.scale_subs_level_size if o.scale_subs_level_size is not None else UNSET_INTEGER),
        "",  # scalePriceIncrement
        o.hedge_type,
    ]
    if o.hedge_type:
        f.append("")  # hedgeParam
    f += [
        o.clearing_account,
        o.clearing_intent or "IB",
        _bool(o.not_held),
        "0",  # delta-neutral contract present
        o.algo_strategy,
    ]
    if o.algo_strategy:
        f.append(str(len(o.algo_params)))
        for tag, value in o.algo_params:
            f += [tag, value]
    f += [
        _bool(o.solicited),
        status,
        _bool(o.randomize_size),
        _bool(o.randomize_price),
        "0",  # conditions count
        _java(trail_stop, UNSET_DOUBLE_TEXT),
        _java(o.lmt_price_offset, UNSET_DOUBLE_TEXT),
        _compact(o.cash_qty, "0"),
        "1",  # dontUseAutoPriceForHedge: TWS reports true whatever was sent
        _bool(o.is_oms_container),
        "",  # autoCancelDate
        _qty(filled_quantity),
        UNSET_INTEGER_TEXT,  # refFuturesConId
        _bool(o.auto_cancel_parent),
        "Not an insider or substantial shareholder",  # shareholder, TWS's default
        "0",  # imbalanceOnly
        "0",  # routeMarketableToBbo
        str(parent_perm_id or 0),
        completed_time,
        completed_status,
    ]
    if server_version >= versions.PEGBEST_PEGMID_OFFSETS:
        f += [
            _opt_int(o.min_trade_qty),
            _opt_int(o.min_compete_size),
            _java(o.compete_against_best_offset),
            _java(o.mid_offset_at_whole),
            _java(o.mid_offset_at_half),
        ]
    return f


def encode_open_order_end() -> list[str]:
    return [str(int(Out.OPEN_ORDER_END)), "1"]


def encode_exec_details_end(req_id: int) -> list[str]:
    return [str(int(Out.EXEC_DETAILS_END)), "1", str(req_id)]


def encode_completed_orders_end() -> list[str]:
    return [str(int(Out.COMPLETED_ORDERS_END))]
