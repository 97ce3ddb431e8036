"""The order side of the simulator: placeOrder, cancels, order/execution queries, fills.

:class:`OrderDesk` keeps every order the simulator accepted, runs working orders through
the :mod:`~tws_simulator.matching` engine on each quote change, books fills on the
account, and sends each order's messages to the client that owns it, in TWS's order:

* accepted:   openOrder → orderStatus (PreSubmitted for stop types, else Submitted)
* each fill:  execDetails → openOrder → orderStatus → commissionReport
  (the account's portfolio/position/value updates go out between the last two)
* cancelled:  error 202 "Order Canceled - reason:" → orderStatus Cancelled
* rejected:   one error message with IB's code; no order is created (an order whose
  exposure exceeds the buying power left after what the working orders reserve is 201)

Orders outlive their client's connection, as in TWS; a reconnecting client sees them via
reqOpenOrders / reqCompletedOrders / reqExecutions. Only the owning client gets an order's
messages (there is no master client id).

Attached orders and OCA groups:

* ``transmit=False`` holds an order in TWS untransmitted: nothing is answered (the API
  client keeps it as PendingSubmit), it does not work and reqOpenOrders does not list it.
  The next order of the same client with ``transmit=True`` whose ``parentId`` names it
  (or the order itself, placed again with ``transmit=True``) transmits the parent and
  every held child at once, in order id order. Held orders die with their client's
  connection (TWS keeps them in its window; no API client sees them again).
* A child (``parentId``) waits (PreSubmitted) until its parent has filled completely,
  then works. Cancelling the parent, or the parent ending unfilled, cancels the children.
  ``parentId`` naming no order of the client is error 10006 "Missing parent order".
* An OCA group (``ocaGroup``, per account) links orders; the children of one parent form
  one implicitly (type 2). Type 1 cancels the others on any fill of one; type 2 reduces
  their quantity by each fill at once ("with block": one quote never fills two of the
  group); type 3 reduces them after the quote ("without block": two may fill on one
  quote, an overfill IB warns about). Reduced to nothing, an order is cancelled.

Time (``sim.clock``): GTD orders expire at their goodTillDate; with
``SimulatorConfig.trading_hours`` orders work only in their instrument's session (extended
hours with outsideRth for limit-type orders), DAY orders expire at the close (outside-RTH
ones at the end of after-hours), OPG orders fill in the opening auction and MOC / LOC in
the closing one. An expired order ends Cancelled (orderStatus only, no error message).

Not simulated (rejected with error 201 and a reason that says so): order conditions,
algos and hedge orders.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from . import clock
from .account import INITIAL_MARGIN_RATE
from .contracts import candidates
from .instruments import Instrument
from .market import Quote
from .matching import (
    AMBIGUOUS_CONTRACT,
    CLOSE_AUCTION_TYPES,
    GTD_DATE_MISSING,
    GTD_IN_PAST,
    NO_SECURITY_DEFINITION,
    OUTSIDE_RTH_TYPES,
    TRIGGERED_TYPES,
    Fill,
    MatchingEngine,
    OrderSpec,
    Rejection,
    WorkingOrder,
    margin_check,
    order_commission,
    round_to_tick,
    validate,
)
from .message_ids import In
from .order_codec import (
    ContractFields,
    DecodeError,
    ExecutionFields,
    ExecutionFilter,
    OrderRequest,
    WhatIfState,
    decode_cancel_order,
    decode_place_order,
    decode_req_executions,
    encode_commission_report,
    encode_completed_order,
    encode_completed_orders_end,
    encode_exec_details,
    encode_exec_details_end,
    encode_open_order,
    encode_open_order_end,
    encode_order_status,
)
from .wire import UNSET_DOUBLE

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

EXCHANGE_TIME_ZONE = "US/Eastern"  # execution and completion times are written in it
_EASTERN = ZoneInfo(EXCHANGE_TIME_ZONE)

LIVE_STATES = frozenset({"PreSubmitted", "Submitted"})
# Where SMART sends a stock's executions (the venue TWS reports), by primary exchange.
_VENUE = {"NASDAQ": "ISLAND"}

ORDER_CANCELED = (202, "Order Canceled - reason:")
CANT_MODIFY_FILLED = (104, "Can't modify a filled order.")
DUPLICATE_ORDER_ID = (103, "Duplicate order id")
MODIFY_MISMATCH = (105, "Order being modified does not match original order.")
PARSE_FAILED = (320, "Server error when reading an API client request.")
MISSING_PARENT = Rejection(10006, "Missing parent order.")
MISSING_EXCHANGE = Rejection(321, "Error validating request.-'bN' : cause - Missing order exchange")
# OCA type TWS applies when none is given (it reports 3), and to a parent's children.
DEFAULT_OCA_TYPE = 3
BRACKET_OCA_TYPE = 2


def _not_simulated(what: str) -> Rejection:
    return Rejection(201, f"Order rejected - reason:{what} are not supported by the simulator")


def _rejected(reason: str) -> Rejection:
    return Rejection(201, f"Order rejected - reason:{reason}")


def exchange_time(epoch: float) -> str:
    """TWS's "yyyymmdd hh:mm:ss Zone/Name" timestamp, in the exchange's time zone."""
    moment = datetime.fromtimestamp(epoch, _EASTERN)
    return f"{moment:%Y%m%d %H:%M:%S} {EXCHANGE_TIME_ZONE}"


@dataclass
class Execution:
    """One fill as reported to clients, with its commission report."""

    fields: ExecutionFields
    contract: ContractFields
    sec_type: str
    commission: float
    realized_pnl: float | None
    currency: str
    epoch: float


@dataclass
class SimOrder:
    """An order the simulator accepted, from submission to its final state."""

    perm_id: int
    client_id: int
    request: OrderRequest
    instrument: Instrument
    contract: ContractFields
    work: WorkingOrder
    status: str
    executions: list[Execution] = field(default_factory=list)
    last_fill_price: float = 0.0
    completed_time: str = ""
    completed_status: str = ""
    parent: SimOrder | None = None
    children: list[SimOrder] = field(default_factory=list)
    expires_at: float | None = None  # GTD: the goodTillDate as epoch seconds

    @property
    def order_id(self) -> int:
        return self.request.order_id

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATES


def _spec(req: OrderRequest) -> OrderSpec:
    return OrderSpec(
        action=req.action,
        quantity=req.total_quantity,
        order_type=req.order_type,
        lmt_price=req.lmt_price,
        aux_price=req.aux_price,
        trailing_percent=req.trailing_percent,
        trail_stop_price=req.trail_stop_price,
        tif=req.tif or "DAY",
        trigger_method=req.trigger_method,
        lmt_price_offset=req.lmt_price_offset,
        percent_offset=req.percent_offset,
        outside_rth=req.outside_rth,
    )


def _unsupported_feature(req: OrderRequest) -> Rejection | None:
    if req.conditions:
        return _not_simulated("Order conditions")
    if req.algo_strategy:
        return _not_simulated("Algo orders")
    if req.hedge_type:
        return _not_simulated("Hedge orders")
    return None


def _oca_key(order: SimOrder) -> tuple[str, ...] | None:
    """The OCA group an order belongs to: its ocaGroup (per account), else its parent's
    children."""
    req = order.request
    if req.oca_group:
        return ("oca", req.account, req.oca_group)
    if order.parent is not None:
        return ("children", str(order.client_id), str(order.parent.order_id))
    return None


def _oca_type(order: SimOrder) -> int:
    req = order.request
    if req.oca_group:
        return req.oca_type if req.oca_type in (1, 2, 3) else DEFAULT_OCA_TYPE
    return BRACKET_OCA_TYPE


class OrderDesk:
    """Every order of one simulator, the matching engine, and the wire handlers."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = MatchingEngine()
        self.orders: dict[int, SimOrder] = {}  # by perm id, in submission order
        self._live: dict[int, SimOrder] = {}  # the working ones, by perm id
        self._by_client: dict[tuple[int, int], SimOrder] = {}
        self._by_work: dict[int, SimOrder] = {}  # engine key (= perm id) → order
        self._last_order_id: dict[int, int] = {}  # highest order id placed, per client id
        self.completed: list[SimOrder] = []  # in completion order
        self.executions: list[Execution] = []
        # Orders placed with transmit=False, by (client id, order id): not working yet.
        self._untransmitted: dict[tuple[int, int], tuple[OrderRequest, Instrument]] = {}
        self.clock = sim.clock
        self.trading_hours = sim.config.trading_hours
        self._time_seen = self.clock.now()
        self._deferred_oca: list[tuple[SimOrder, Decimal]] = []  # type-3 reductions
        start = int(time.time())
        # Ids that stay unique across simulator restarts, like TWS's.
        self._perm_ids = itertools.count(1_000_000_000 + (start % 9_000_000) * 100)
        self._exec_prefix = start & 0xFFFFFFFF
        self._exec_numbers = itertools.count(1)

    # -- wiring --------------------------------------------------------------------------

    def install(self) -> None:
        sim = self.sim
        sim.register(In.PLACE_ORDER, self.place_order)
        sim.register(In.CANCEL_ORDER, self.cancel_order)
        sim.register(In.REQ_OPEN_ORDERS, self.req_open_orders)
        sim.register(In.REQ_ALL_OPEN_ORDERS, self.req_all_open_orders)
        sim.register(In.REQ_AUTO_OPEN_ORDERS, self.req_auto_open_orders)
        sim.register(In.REQ_EXECUTIONS, self.req_executions)
        sim.register(In.REQ_COMPLETED_ORDERS, self.req_completed_orders)
        sim.register(In.REQ_GLOBAL_CANCEL, self.req_global_cancel)
        sim.market.add_listener(self.on_quote)
        sim.add_disconnect_listener(self._forget_untransmitted)
        self.clock.add_listener(lambda _before, after: self.on_time(after))
        sim.add_background(self._follow_clock)

    # -- queries -------------------------------------------------------------------------

    def order(self, client_id: int, order_id: int) -> SimOrder | None:
        return self._by_client.get((client_id, order_id))

    def live_orders(self) -> list[SimOrder]:
        return list(self._live.values())

    # -- placeOrder ----------------------------------------------------------------------

    def place_order(self, conn: ClientConnection, fields: list[str]) -> None:
        try:
            req = decode_place_order(fields, conn.server_version)
        except DecodeError as exc:
            log.warning("%r sent an unreadable placeOrder: %s", conn, exc)
            order_id = int(fields[0]) if fields and fields[0].lstrip("-").isdigit() else -1
            conn.send_error(order_id, PARSE_FAILED[0], f"{PARSE_FAILED[1]} {exc}")
            return
        self.sim.reserve_order_id(req.order_id)
        fault = self.sim.faults.reject_next_order
        if fault is not None:
            self.sim.faults.reject_next_order = None
            conn.send_error(req.order_id, *fault)
            return
        held = self._untransmitted.get((conn.client_id, req.order_id))
        if held is not None:
            # An untransmitted order placed again: new terms, and maybe transmitted now.
            del self._untransmitted[(conn.client_id, req.order_id)]
        existing = self.order(conn.client_id, req.order_id)
        if existing is not None:
            if existing.is_live:
                self._modify(conn, existing, req)
            elif existing.status == "Filled":
                conn.send_error(req.order_id, *CANT_MODIFY_FILLED)
            else:
                conn.send_error(req.order_id, *DUPLICATE_ORDER_ID)
            return
        if held is None and req.order_id <= self._last_order_id.get(conn.client_id, 0):
            # TWS wants each new order id above every earlier one of the same client.
            conn.send_error(req.order_id, *DUPLICATE_ORDER_ID)
            return
        instrument = self._check_new(conn, req)
        if isinstance(instrument, Rejection):
            conn.send_error(req.order_id, instrument.code, instrument.message)
            return
        if req.what_if:
            self._answer_what_if(conn, req, instrument)
            return
        quote = self.sim.market.quote(instrument.con_id)
        if not req.parent_id:  # a child closes what its parent opens
            margin = self._margin_rejection(req, instrument, quote, req.total_quantity)
            if margin is not None:
                conn.send_error(req.order_id, margin.code, margin.message)
                return
        self._last_order_id[conn.client_id] = max(
            req.order_id, self._last_order_id.get(conn.client_id, 0)
        )
        if not req.transmit:
            self._untransmitted[(conn.client_id, req.order_id)] = (req, instrument)
            log.info("order %d (client %d) held untransmitted", req.order_id, conn.client_id)
            return
        self._transmit(conn, req, instrument)

    def _transmit(self, conn: ClientConnection, req: OrderRequest, instrument: Instrument) -> None:
        """Send ``req`` and the untransmitted orders it completes (its parent, the
        parent's other children) to the market, parent first."""
        chain: list[tuple[OrderRequest, Instrument]] = []
        root = req.parent_id or req.order_id
        for (client_id, order_id), held in sorted(self._untransmitted.items()):
            if client_id != conn.client_id:
                continue
            if order_id == root or held[0].parent_id == root:
                chain.append(held)
                del self._untransmitted[(client_id, order_id)]
        chain.append((req, instrument))
        chain.sort(key=lambda item: item[0].order_id)
        for each, inst in chain:
            self._accept(conn, each, inst, self.sim.market.quote(inst.con_id))

    def _forget_untransmitted(self, conn: ClientConnection) -> None:
        for key in [k for k in self._untransmitted if k[0] == conn.client_id]:
            del self._untransmitted[key]

    def _resolve(self, req: OrderRequest) -> Instrument | Rejection:
        matches = candidates(self.sim.universe, req.contract)
        if not matches:
            return NO_SECURITY_DEFINITION
        if len(matches) > 1:
            return AMBIGUOUS_CONTRACT
        return matches[0]

    def _check_new(self, conn: ClientConnection, req: OrderRequest) -> Instrument | Rejection:
        """Everything that refuses a new order before it reaches the market."""
        if not req.contract.exchange.strip():
            # TWS checks the routing before it looks the contract up.
            return MISSING_EXCHANGE
        instrument = self._resolve(req)
        if isinstance(instrument, Rejection):
            return instrument
        account = self.sim.account.account_id
        if req.account and req.account != account:
            return _rejected(f"The account code {req.account} is not valid for this login")
        unsupported = _unsupported_feature(req) or self._check_terms(req, instrument)
        if unsupported is not None:
            return unsupported
        if req.parent_id:
            parent = self.order(conn.client_id, req.parent_id)
            if parent is None and (conn.client_id, req.parent_id) not in self._untransmitted:
                return MISSING_PARENT
            if parent is not None and not parent.is_live and parent.status != "Filled":
                return _rejected(f"The parent order {req.parent_id} is {parent.status}")
        return instrument

    def _check_terms(self, req: OrderRequest, instrument: Instrument) -> Rejection | None:
        """The order's terms against its instrument and the clock (GTD)."""
        invalid = validate(
            _spec(req),
            sec_type=instrument.sec_type,
            min_tick=instrument.min_tick,
            order_types=instrument.order_types,
        )
        if invalid is not None:
            return invalid
        if req.tif == "GTD":
            until = clock.parse_good_till(req.good_till_date)
            if until is None:
                return GTD_DATE_MISSING
            if until <= self.clock.now():
                return GTD_IN_PAST
        return None

    def _margin_rejection(
        self, req: OrderRequest, instrument: Instrument, quote: Quote, quantity: Decimal
    ) -> Rejection | None:
        account = self.sim.account
        position = account.position(instrument.con_id)
        return margin_check(
            action=req.action,
            quantity=quantity,
            price=_reference_price(req, quote) * instrument.price_multiplier,
            position=position.quantity if position else Decimal(0),
            equity=account.net_liquidation(),
            buying_power=max(0.0, account.buying_power() - self.reserved_buying_power()),
            currency=account.currency,
        )

    def reserved_buying_power(self) -> float:
        """What the working orders would spend if they filled: the unfilled part of every
        live order that opens exposure (a child only closes what its parent opens, and
        what closes a position needs nothing), at the price its funds are checked at."""
        account = self.sim.account
        reserved = 0.0
        for order in self._live.values():
            req = order.request
            if order.parent is not None:
                continue
            position = account.position(order.instrument.con_id)
            held = position.quantity if position else Decimal(0)
            closing = held < 0 if req.action == "BUY" else held > 0
            remaining = order.work.remaining - (
                min(order.work.remaining, abs(held)) if closing else 0
            )
            if remaining > 0:
                quote = self.sim.market.quote(order.instrument.con_id)
                reserved += (
                    float(remaining)
                    * _reference_price(req, quote)
                    * order.instrument.price_multiplier
                )
        return reserved

    def _accept(
        self, conn: ClientConnection, req: OrderRequest, instrument: Instrument, quote: Quote
    ) -> None:
        req.account = req.account or self.sim.account.account_id
        req.tif = req.tif or "DAY"
        perm_id = next(self._perm_ids)
        work = WorkingOrder(
            key=perm_id,
            con_id=instrument.con_id,
            spec=_spec(req),
            min_tick=instrument.min_tick,
            sec_type=instrument.sec_type,
        )
        parent = self.order(conn.client_id, req.parent_id) if req.parent_id else None
        order = SimOrder(
            perm_id=perm_id,
            client_id=conn.client_id,
            request=req,
            instrument=instrument,
            contract=_contract_fields(instrument, req.contract.exchange or instrument.exchange),
            work=work,
            status="Submitted",
            parent=parent,
            expires_at=clock.parse_good_till(req.good_till_date) if req.tif == "GTD" else None,
        )
        if parent is not None:
            parent.children.append(order)
        work.held = self._must_wait(order)
        order.status = self._working_status(order)
        self.orders[perm_id] = order
        self._live[perm_id] = order
        self._by_client[(conn.client_id, req.order_id)] = order
        self._by_work[perm_id] = order
        log.info(
            "order %d (client %d, perm %d): %s %s %s %s",
            req.order_id,
            conn.client_id,
            perm_id,
            req.action,
            req.total_quantity,
            instrument.local_symbol,
            req.order_type,
        )
        # Evaluate before announcing, so a stop that triggers at once shows as Submitted;
        # the announcement itself shows the order as it was before these fills.
        result = self.engine.submit(work, quote)
        order.status = self._working_status(order)
        self._send_state(order, before=result.fills)
        for fill in result.fills:
            self._execute(order, fill)
        self._apply_deferred_oca()
        if result.expired and order.status != "Filled":
            self._finish(order, "Cancelled", "Cancelled")
            self._send_status(order)
            self._end_children(order)

    # -- holding, sessions, expiry ---------------------------------------------------------

    def _must_wait(self, order: SimOrder) -> bool:
        """Whether a live order may not work now: its parent has not filled, or its
        instrument's session does not allow it (auction orders wait for their auction)."""
        parent = order.parent
        if parent is not None and parent.status != "Filled":
            return True
        if not self.trading_hours or order.work.spec.auction_only:
            return False
        now_phase = clock.phase(order.instrument.sec_type, self.clock.now())
        if now_phase is clock.Phase.REGULAR:
            return False
        if now_phase is clock.Phase.EXTENDED:
            req = order.request
            return not (req.outside_rth and req.order_type in OUTSIDE_RTH_TYPES)
        return True

    def _working_status(self, order: SimOrder) -> str:
        """PreSubmitted while held or waiting for a trigger, else Submitted."""
        work = order.work
        if work.held or (work.spec.order_type in TRIGGERED_TYPES and not work.triggered):
            return "PreSubmitted"
        return "Submitted"

    def _release(self, order: SimOrder) -> None:
        """Re-judge a live order's hold; one that may work now is evaluated at once."""
        if not order.is_live:
            return
        wait = self._must_wait(order)
        if wait == order.work.held:
            return
        fills: list[Fill] = []
        if wait:
            order.work.held = True
        else:
            quote = self.sim.market.quote(order.instrument.con_id)
            fills = self.engine.activate(order.perm_id, quote)
        before = order.status
        order.status = self._working_status(order)
        if order.status != before or fills:
            self._send_state(order, before=fills)
        for fill in fills:
            self._execute(order, fill)
        self._apply_deferred_oca()

    async def _follow_clock(self) -> None:
        """Time passing on its own: expiry and session changes, checked every second."""
        while True:
            await asyncio.sleep(1.0)
            self.on_time(self.clock.now())

    def on_time(self, now: float) -> None:
        """Bring the orders to ``now``: session boundaries since the last look (auctions,
        DAY expiry, holds), then GTD expiry. The clock moved backwards: holds only."""
        since, self._time_seen = self._time_seen, now
        if self.trading_hours and now > since:
            events = [
                (moment, kind, sec_type)
                for sec_type in {o.instrument.sec_type for o in self._live.values()}
                for moment, kind in clock.boundaries(sec_type, since, now)
            ]
            for moment, kind, sec_type in sorted(events, key=lambda e: e[0]):
                self._expire_gtd(moment)
                self._at_boundary(kind, sec_type)
        self._expire_gtd(now)
        for order in self.live_orders():
            self._release(order)

    def _at_boundary(self, kind: clock.Boundary, sec_type: str) -> None:
        orders = [o for o in self.live_orders() if o.instrument.sec_type == sec_type]
        log.info("%s %s: %d live order(s)", sec_type, kind.value, len(orders))
        if kind is clock.Boundary.OPEN:
            self._auction(orders, lambda o: o.work.spec.tif == "OPG")
        elif kind is clock.Boundary.CLOSE:
            self._auction(orders, lambda o: o.request.order_type in CLOSE_AUCTION_TYPES)
            for order in orders:
                day = order.request.tif == "DAY"
                # Extended hours keep outside-RTH orders until the extended close.
                keeps = order.request.outside_rth and sec_type in ("STK", "FUT", "FOP")
                if order.is_live and day and not keeps:
                    self._expire(order)
        else:
            for order in orders:
                if order.is_live and order.request.tif == "DAY":
                    self._expire(order)
        for order in self.live_orders():
            self._release(order)

    def _auction(self, orders: list[SimOrder], wanted: Callable[[SimOrder], bool]) -> None:
        """Fill the chosen orders at the auction price (the last trade); cancel the rest."""
        chosen = [o for o in orders if o.is_live and not o.work.held and wanted(o)]
        by_instrument: dict[int, list[SimOrder]] = {}
        for order in chosen:
            by_instrument.setdefault(order.instrument.con_id, []).append(order)
        for con_id, group in by_instrument.items():
            quote = self.sim.market.quote(con_id)
            price = round_to_tick(quote.last, group[0].instrument.min_tick)
            keys = frozenset(o.perm_id for o in group)
            fills = self.engine.auction(con_id, price, keys.__contains__)
            for fill in fills:
                order = self._by_work[fill.order.key]
                order.status = "Submitted"
                self._execute(order, fill)
            self._apply_deferred_oca()
            for order in group:
                if order.is_live:  # a limit the auction price did not reach
                    self._expire(order)

    def _expire_gtd(self, now: float) -> None:
        for order in self.live_orders():
            if order.expires_at is not None and order.expires_at <= now:
                self._expire(order)

    def _expire(self, order: SimOrder) -> None:
        """A DAY / GTD / auction order whose time is up: Cancelled, no error message."""
        self.engine.cancel(order.perm_id)
        self._finish(order, "Cancelled", "Cancelled")
        log.info("order %d (client %d) expired", order.order_id, order.client_id)
        self._send_status(order)
        self._end_children(order)

    def _end_children(self, order: SimOrder) -> None:
        """A parent that ended without filling takes its children with it."""
        if order.status == "Filled":
            return
        for child in order.children:
            if child.is_live:
                self._cancel(child)

    # -- OCA groups ------------------------------------------------------------------------

    def _siblings(self, order: SimOrder) -> list[SimOrder]:
        key = _oca_key(order)
        if key is None:
            return []
        return [o for o in self.live_orders() if o is not order and _oca_key(o) == key]

    def _after_fill(self, order: SimOrder, quantity: Decimal) -> None:
        """A fill of an OCA member cancels (type 1) or reduces (2, 3) the others."""
        siblings = self._siblings(order)
        if not siblings:
            return
        kind = _oca_type(order)
        if kind == 3:
            self._deferred_oca.append((order, quantity))
            return
        self._reduce_group(order, siblings, quantity, cancel=kind == 1)

    def _apply_deferred_oca(self) -> None:
        pending, self._deferred_oca = self._deferred_oca, []
        for order, quantity in pending:
            self._reduce_group(order, self._siblings(order), quantity, cancel=False)

    def _reduce_group(
        self, order: SimOrder, siblings: list[SimOrder], quantity: Decimal, *, cancel: bool
    ) -> None:
        for other in siblings:
            if not other.is_live:
                continue
            remaining = other.request.total_quantity - quantity
            if cancel or remaining <= other.work.filled:
                if other.work.filled > 0 and not cancel:
                    # Reduced to what it already executed: it is done.
                    self.engine.cancel(other.perm_id)
                    other.request.total_quantity = other.work.filled
                    other.work.spec = _spec(other.request)
                    self._finish(other, "Filled", "Filled")
                    self._send_state(other)
                else:
                    self._cancel(other, reason="OCA")
                continue
            other.request.total_quantity = remaining
            self.engine.resize(other.perm_id, remaining)
            log.info("order %d reduced to %s by its OCA group", other.order_id, remaining)
            self._send_state(other)

    # -- modify --------------------------------------------------------------------------

    def _modify(self, conn: ClientConnection, order: SimOrder, req: OrderRequest) -> None:
        instrument = self._resolve(req)
        if isinstance(instrument, Rejection):
            conn.send_error(req.order_id, instrument.code, instrument.message)
            return
        old = order.request
        if instrument.con_id != order.instrument.con_id or req.action != old.action:
            conn.send_error(req.order_id, *MODIFY_MISMATCH)
            return
        rejection = _unsupported_feature(req) or self._check_terms(req, instrument)
        if rejection is None and req.total_quantity < order.work.filled:
            rejection = _rejected(
                f"The order quantity cannot be reduced below the filled quantity "
                f"{order.work.filled}"
            )
        quote = self.sim.market.quote(instrument.con_id)
        if rejection is None and req.total_quantity > old.total_quantity:
            added = req.total_quantity - old.total_quantity
            rejection = self._margin_rejection(req, instrument, quote, added)
        if rejection is not None:
            conn.send_error(req.order_id, rejection.code, rejection.message)
            return
        req.account = req.account or old.account
        req.tif = req.tif or "DAY"
        req.parent_id = old.parent_id  # the link is fixed at placement
        order.request = req
        order.expires_at = clock.parse_good_till(req.good_till_date) if req.tif == "GTD" else None
        log.info("order %d (client %d) modified", req.order_id, conn.client_id)
        if req.total_quantity == order.work.filled:
            # Cut down to what already executed: nothing is left to work.
            self.engine.cancel(order.perm_id)
            order.work.spec = _spec(req)
            self._finish(order, "Filled", "Filled")
            self._send_state(order)
            return
        fills = self.engine.modify(order.perm_id, _spec(req), quote)
        order.status = self._working_status(order)
        self._send_state(order, before=fills)
        for fill in fills:
            self._execute(order, fill)
        self._apply_deferred_oca()
        self._release(order)

    # -- what-if -------------------------------------------------------------------------

    def _answer_what_if(
        self, conn: ClientConnection, req: OrderRequest, instrument: Instrument
    ) -> None:
        """A preview: margin and commission as openOrder fields; nothing is placed."""
        account = self.sim.account
        quote = self.sim.market.quote(instrument.con_id)
        price = _reference_price(req, quote)
        position = account.position(instrument.con_id)
        held = position.quantity if position else Decimal(0)
        signed = req.total_quantity if req.action == "BUY" else -req.total_quantity
        exposure_change = (
            float(abs(held + signed) - abs(held)) * price * instrument.price_multiplier
        )
        equity = account.net_liquidation()
        init_before = INITIAL_MARGIN_RATE * account.gross_position_value()
        init_change = INITIAL_MARGIN_RATE * exposure_change
        commission = order_commission(
            instrument.sec_type, req.total_quantity, float(req.total_quantity) * price
        )
        state = WhatIfState(
            init_margin_before=f"{init_before:.2f}",
            maint_margin_before=f"{init_before:.2f}",
            equity_with_loan_before=f"{equity:.2f}",
            init_margin_change=f"{init_change:.2f}",
            maint_margin_change=f"{init_change:.2f}",
            equity_with_loan_change=f"{-commission:.2f}",
            init_margin_after=f"{init_before + init_change:.2f}",
            maint_margin_after=f"{init_before + init_change:.2f}",
            equity_with_loan_after=f"{equity - commission:.2f}",
            commission=commission,
            commission_currency=instrument.currency,
        )
        req.account = req.account or account.account_id
        contract = _contract_fields(instrument, req.contract.exchange or instrument.exchange)
        conn.send(
            *encode_open_order(
                conn.server_version,
                req,
                contract,
                client_id=conn.client_id,
                perm_id=0,
                status="PreSubmitted",
                what_if=state,
            )
        )

    # -- cancels -------------------------------------------------------------------------

    def cancel_order(self, conn: ClientConnection, fields: list[str]) -> None:
        req = decode_cancel_order(fields, conn.server_version)
        order = self.order(conn.client_id, req.order_id)
        if order is None:
            conn.send_error(
                req.order_id,
                10147,
                f"OrderId {req.order_id} that needs to be cancelled is not found.",
            )
            return
        if not order.is_live:
            conn.send_error(
                req.order_id,
                10148,
                f"OrderId {req.order_id} that needs to be cancelled cannot be cancelled, "
                f"state: {order.status}.",
            )
            return
        self._cancel(order)

    def req_global_cancel(self, conn: ClientConnection, fields: list[str]) -> None:
        """Cancel every working order of every client (each owner is told)."""
        for order in self.live_orders():
            self._cancel(order)

    def _cancel(self, order: SimOrder, reason: str = "") -> None:
        self.engine.cancel(order.perm_id)
        self._finish(order, "Cancelled", "Cancelled by Trader" if not reason else "Cancelled")
        log.info(
            "order %d (client %d) cancelled%s",
            order.order_id,
            order.client_id,
            f" ({reason})" if reason else "",
        )
        owner = self.sim.client(order.client_id)
        if owner is not None:
            owner.send_error(order.order_id, *ORDER_CANCELED)
        self._send_status(order)
        self._end_children(order)

    # -- order and execution queries ------------------------------------------------------

    def req_open_orders(self, conn: ClientConnection, fields: list[str]) -> None:
        self._send_open_orders(
            conn, [o for o in self.live_orders() if o.client_id == conn.client_id]
        )

    def req_all_open_orders(self, conn: ClientConnection, fields: list[str]) -> None:
        self._send_open_orders(conn, self.live_orders())

    def req_auto_open_orders(self, conn: ClientConnection, fields: list[str]) -> None:
        # TWS answers nothing: it only binds future manual TWS orders to client 0, and the
        # simulator has no manual orders.
        return

    def _send_open_orders(self, conn: ClientConnection, orders: list[SimOrder]) -> None:
        for order in orders:
            conn.send(*self._open_order_fields(order, conn.server_version))
            conn.send(*self._status_fields(order))
        conn.send(*encode_open_order_end())

    def req_completed_orders(self, conn: ClientConnection, fields: list[str]) -> None:
        for order in self.completed:
            conn.send(
                *encode_completed_order(
                    conn.server_version,
                    order.request,
                    order.contract,
                    perm_id=order.perm_id,
                    status=order.status,
                    filled_quantity=order.work.filled,
                    completed_time=order.completed_time,
                    completed_status=order.completed_status,
                    trail_stop_price=order.work.trail_stop,
                    parent_perm_id=order.parent.perm_id if order.parent else None,
                )
            )
        conn.send(*encode_completed_orders_end())

    def req_executions(self, conn: ClientConnection, fields: list[str]) -> None:
        req_id, flt = decode_req_executions(fields)
        since = _filter_time(flt.time)
        for ex in self.executions:
            if _matches(ex, flt, since):
                conn.send(*encode_exec_details(conn.server_version, req_id, ex.contract, ex.fields))
                conn.send(*self._commission_fields(ex))
        conn.send(*encode_exec_details_end(req_id))

    # -- the market ----------------------------------------------------------------------

    def on_quote(self, con_id: int, quote: Quote) -> None:
        """Market listener: run the working orders of this instrument (cheap when none).

        Each fill is reported (and its OCA group reduced) before the next order of the
        quote is evaluated, so a group "with block" never fills twice on one quote.
        """
        reported: set[int] = set()

        def on_fill(fill: Fill) -> None:
            order = self._by_work.get(fill.order.key)
            if order is None:
                return
            if order.status == "PreSubmitted":
                order.status = "Submitted"
            reported.add(fill.order.key)
            self._execute(order, fill)

        _, triggered = self.engine.on_quote(con_id, quote, on_fill)
        for work in triggered:
            order = self._by_work.get(work.key)
            if order is not None and order.status == "PreSubmitted" and order.is_live:
                order.status = "Submitted"
                if work.key not in reported:
                    self._send_state(order)
        self._apply_deferred_oca()

    # -- fills ---------------------------------------------------------------------------

    def _execute(self, order: SimOrder, fill: Fill) -> None:
        """Report one fill to its owner and book it on the account."""
        work = order.work
        now = self.clock.now()
        instrument = order.instrument
        side = "BOT" if order.request.action == "BUY" else "SLD"
        venue = _venue(instrument)
        ex_fields = ExecutionFields(
            exec_id=f"{self._exec_prefix:08x}.{next(self._exec_numbers):08x}.01.01",
            time=exchange_time(now),
            account=order.request.account,
            exchange=venue,
            side=side,
            shares=fill.quantity,
            price=fill.price,
            perm_id=order.perm_id,
            client_id=order.client_id,
            order_id=order.order_id,
            cum_qty=work.filled,
            avg_price=round(work.avg_fill_price, 10),
            order_ref=order.request.order_ref,
            last_liquidity=fill.liquidity,
        )
        execution = Execution(
            fields=ex_fields,
            contract=replace(order.contract, exchange=venue),
            sec_type=instrument.sec_type,
            commission=fill.commission,
            realized_pnl=None,
            currency=instrument.currency,
            epoch=now,
        )
        order.executions.append(execution)
        self.executions.append(execution)
        order.last_fill_price = fill.price
        if work.remaining <= 0:
            self._finish(order, "Filled", "Filled")
        owner = self.sim.client(order.client_id)
        if owner is not None:
            owner.send(
                *encode_exec_details(owner.server_version, -1, execution.contract, ex_fields)
            )
            self._send_state(order)
        realized = self.sim.account.apply_fill(
            instrument, side, fill.quantity, fill.price, fill.commission
        )
        execution.realized_pnl = None if realized == UNSET_DOUBLE else realized
        owner = self.sim.client(order.client_id)
        if owner is not None:
            owner.send(*self._commission_fields(execution))
        self._after_fill(order, fill.quantity)
        if order.status == "Filled":
            for child in order.children:
                self._release(child)  # the children start working

    def _finish(self, order: SimOrder, status: str, completed_status: str) -> None:
        self._live.pop(order.perm_id, None)
        order.status = status
        order.completed_status = completed_status
        order.completed_time = exchange_time(self.clock.now())
        self.completed.append(order)

    # -- messages ------------------------------------------------------------------------

    def _open_order_fields(self, order: SimOrder, version: int) -> list[str]:
        return encode_open_order(
            version,
            order.request,
            order.contract,
            client_id=order.client_id,
            perm_id=order.perm_id,
            status=order.status,
            trail_stop_price=order.work.trail_stop,
        )

    def _status_fields(self, order: SimOrder, before: Sequence[Fill] = ()) -> list[str]:
        """orderStatus now, or as it was before the (already booked) fills ``before``."""
        work = order.work
        filled = work.filled - sum((f.quantity for f in before), Decimal(0))
        value = work.filled_value - sum(float(f.quantity) * f.price for f in before)
        last_price = order.last_fill_price if not before else 0.0
        return encode_order_status(
            order_id=order.order_id,
            status=order.status,
            filled=filled,
            remaining=max(Decimal(0), work.spec.quantity - filled),
            avg_fill_price=round(value / float(filled), 10) if filled else 0.0,
            perm_id=order.perm_id,
            parent_id=order.request.parent_id,
            last_fill_price=last_price,
            client_id=order.client_id,
        )

    def _commission_fields(self, ex: Execution) -> list[str]:
        return encode_commission_report(
            ex.fields.exec_id, ex.commission, ex.currency, ex.realized_pnl
        )

    def _send_state(self, order: SimOrder, before: Sequence[Fill] = ()) -> None:
        """openOrder then orderStatus to the owner (if connected)."""
        owner = self.sim.client(order.client_id)
        if owner is not None:
            owner.send(*self._open_order_fields(order, owner.server_version))
            owner.send(*self._status_fields(order, before))

    def _send_status(self, order: SimOrder) -> None:
        owner = self.sim.client(order.client_id)
        if owner is not None:
            owner.send(*self._status_fields(order))


def _reference_price(req: OrderRequest, quote: Quote) -> float:
    """The price an order's funds are checked at: its limit, its stop, else the quote."""
    if req.order_type in ("LMT", "STP LMT", "LIT", "LOC") and req.lmt_price:
        return req.lmt_price
    if req.order_type in ("STP", "MIT") and req.aux_price is not None:
        return req.aux_price
    return quote.ask if req.action == "BUY" else quote.bid


def _contract_fields(instrument: Instrument, exchange: str) -> ContractFields:
    return ContractFields(
        con_id=instrument.con_id,
        symbol=instrument.symbol,
        sec_type=instrument.sec_type,
        exchange=exchange,
        currency=instrument.currency,
        local_symbol=instrument.local_symbol,
        trading_class=instrument.trading_class,
        multiplier=instrument.multiplier,
        last_trade_date=instrument.last_trade_date,
        strike=instrument.strike,
        right=instrument.right,
    )


def _venue(instrument: Instrument) -> str:
    if instrument.is_cash:
        return instrument.exchange
    primary = instrument.primary_exchange or instrument.exchange
    return _VENUE.get(primary, primary)


def _filter_time(text: str) -> float | None:
    """reqExecutions' time filter ("yyyymmdd hh:mm:ss" or "yyyymmdd-hh:mm:ss", optionally
    followed by a time zone; exchange time when none) as epoch seconds."""
    text = text.strip()
    if not text:
        return None
    stamp, _, zone = text.replace("-", " ", 1).partition(" ")
    clock, _, zone = zone.partition(" ")
    try:
        tz = ZoneInfo(zone) if zone else _EASTERN
        moment = datetime.strptime(f"{stamp} {clock}", "%Y%m%d %H:%M:%S").replace(tzinfo=tz)
    except (ValueError, KeyError):
        log.warning("ignoring an unreadable execution filter time %r", text)
        return None
    return moment.timestamp()


def _matches(ex: Execution, flt: ExecutionFilter, since: float | None) -> bool:
    f = ex.fields
    side = {"BUY": "BOT", "SELL": "SLD"}.get(flt.side.upper(), flt.side.upper())
    return (
        (not flt.client_id or flt.client_id == f.client_id)
        and (not flt.account or flt.account == f.account)
        and (since is None or ex.epoch >= since)
        and (not flt.symbol or flt.symbol.upper() == ex.contract.symbol)
        and (not flt.sec_type or flt.sec_type.upper() == ex.sec_type)
        and (not flt.exchange or flt.exchange.upper() == f.exchange)
        and (not side or side == f.side)
    )


def install(sim: Simulator) -> OrderDesk:
    """Called once by the Simulator: the order side takes over the order requests."""
    desk = OrderDesk(sim)
    desk.install()
    return desk
