"""OrderBook: the gateway's registry of orders and the idempotency map behind PlaceOrder.

One per gateway. It maps each ``client_order_id`` (kept in IB's ``orderRef``) to the
ib_insync ``Trade`` that TWS keeps up to date, and it is rebuilt from TWS (open orders of
every client, completed orders, executions) on every (re)connect, so a key survives a
gateway restart as long as TWS remembers the order.

Idempotency (AIP-155 style):

* PlaceOrder calls with one key run one at a time (a per-key ``asyncio.Lock``), so N
  concurrent calls place exactly one order; the others get it back with ``replayed``.
* A retry asking for the *same* order (same contract, side, type, quantity, prices, TIF,
  outside-RTH, account) returns the existing order with ``replayed=true``, whatever its
  state. A retry with the same key but a different order is ALREADY_EXISTS
  (``CLIENT_ORDER_ID_REUSED``, the differing fields in metadata): nothing is placed.
* A key is bound once TWS has the order. When TWS refuses a new order outright (IB error
  201 and friends, no order created), the call fails with the mapped error and the key
  stays free: a corrected retry with the same key may place it. If TWS created the order
  and then rejected it, the key stays bound and a retry gets the same error again.
* Nothing accepted is lost: if TWS does not acknowledge in time, PlaceOrder fails with
  DEADLINE_EXCEEDED but the order stays in the book; a retry waits for it again and
  returns it. If the connection drops before the acknowledgement, the rebuild after the
  reconnect decides: an order TWS has is found by its orderRef, one it never got is
  forgotten, so the retry places it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import grpc

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server import errors
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import Contract, Fill, Order, Trade
from ibgateway_server.ib.session import IbSession, SessionEvent, StateChange
from ibgateway_server.orders import convert as oc
from ibgateway_server.orders import ib_orders, ib_terms
from ibgateway_server.orders.entries import (
    CANCELLED_IB_STATUSES,
    FINAL_AFTER_CANCEL,
    WORKING_STATUSES,
    BookEntry,
    Cancellation,
    HasTimeRemaining,
    Placement,
    created_time,
    finished_check,
    key_metadata,
    perm_id_of,
    refused_before_acknowledged,
)
from ibgateway_server.orders.events import OrderEventLog
from ibgateway_server.orders.intent import (
    Modification,
    OrderIntent,
    intent_differences,
    order_terms,
    terms_of,
)
from ibgateway_server.orders.journal import OrderJournal, SqliteJournal, set_aside
from ibgateway_server.orders.tracker import OrderTracker

log = logging.getLogger(__name__)


class OrderBook:
    """Every order of the session, indexed by client_order_id; see the module docstring.

    It also owns the gateway's order event log (``events``, read by StreamOrderEvents)
    and the tracker that fills it from IB's callbacks and from every re-sync.
    """

    def __init__(
        self,
        session: IbSession,
        *,
        event_retention: int | None = None,
        journal: OrderJournal | None = None,
    ) -> None:
        self.session = session
        self.ib = session.ib
        self.events = OrderEventLog(retention=event_retention, journal=journal)
        self.tracker = OrderTracker(self.ib, self.events, self._render, self._trade_of_request)
        self._by_key: dict[str, BookEntry] = {}
        self._first_seen: dict[int, datetime] = {}  # perm id → when the book first saw it
        self._messages: dict[tuple[int, int], tuple[int, str]] = {}  # (client, order id)
        # Orders TWS refused before creating them (ib_insync may leave them pending).
        self._refused: set[tuple[int, int]] = set()
        # Modifications sent and not yet answered: (client, order id) → (the status
        # before, the terms asked for). An IB error about such an order refused the change,
        # not the order (ib_insync marks the order cancelled on any error about it).
        self._modifying: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self._pokes: set[Callable[[], None]] = set()
        self._child_index_cache: (
            tuple[tuple[int, int], dict[tuple[int, int], list[Trade]], dict[str, list[Trade]]]
            | None
        ) = None
        self._synced = asyncio.Event()
        self._resync_task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Follow the session: rebuild on every connect, track orders and IB messages."""
        if self._started:
            return
        self._started = True
        self._remove_listener = self.session.add_state_listener(self._on_state)
        self.ib.errorEvent += self._on_ib_error
        self.ib.openOrderEvent += self._on_open_order
        self.ib.orderStatusEvent += self._on_order_status
        self.tracker.start()  # after the book's own handlers: events show the book's view
        if self.session.connected:
            self.events.connection_changed(
                common_pb2.ConnectionStateChange(
                    state=common_pb2.CONNECTION_STATE_CONNECTED, message="connected to TWS"
                )
            )
            self._begin_resync()

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._remove_listener is not None:
            self._remove_listener()
        self.ib.errorEvent -= self._on_ib_error
        self.ib.openOrderEvent -= self._on_open_order
        self.ib.orderStatusEvent -= self._on_order_status
        self.tracker.close()
        self.events.close()  # order event streams end (OK) before the server drains
        self.events.journal.close()
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._poke()

    # ------------------------------------------------------------------ queries

    def entries(self) -> list[BookEntry]:
        """Every order TWS reported (open and completed), oldest first."""
        result = list(self._by_key.values())
        seen = {id(e.trade) for e in result}
        for trade in self.ib.trades():
            if id(trade) in seen or self._was_refused(trade):
                continue
            seen.add(id(trade))
            result.append(self._transient_entry(trade))
        result.sort(key=lambda e: (e.create_time.timestamp(), e.order_id, e.perm_id))
        return result

    def find(self, key: str | int) -> BookEntry:
        """The order with this client_order_id (str) or IB order id (int); NOT_FOUND."""
        if isinstance(key, str):
            entry = self._by_key.get(key)
            if entry is not None:
                return entry
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                "ORDER_NOT_FOUND",
                f"no order with client_order_id {key!r}",
                metadata={"client_order_id": key},
            )
        matches = [e for e in self.entries() if e.order_id == key]
        own = [e for e in matches if e.trade.order.clientId == self.session.client_id]
        if own or matches:
            return (own or matches)[-1]
        raise GatewayError(
            grpc.StatusCode.NOT_FOUND,
            "ORDER_NOT_FOUND",
            f"no order with order_id {key}",
            metadata={"order_id": str(key)},
        )

    async def wait_synced(self, within: float) -> None:
        """Wait until the book reflects TWS after the latest (re)connect."""
        if self._synced.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), max(0.0, within))
        if not self._synced.is_set():
            self.session.require_connected()
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "ORDER_BOOK_SYNCING",
                "the gateway is still loading the orders TWS knows; retry shortly",
                retry_after=1.0,
            )

    # ------------------------------------------------------------------ PlaceOrder

    async def place(
        self,
        intent: OrderIntent,
        contract: Contract,
        order: Order,
        *,
        context: HasTimeRemaining | None = None,
    ) -> Placement:
        """Place ``order`` unless ``intent.client_order_id`` already names one.

        ``contract`` may be partial (it is qualified first); ``order`` carries the key in
        its orderRef. Waits for TWS's acknowledgement, bounded by IBKR_TIMEOUT and the
        client's deadline.
        """
        key = intent.client_order_id
        async with self._key_lock(key, context):
            # Checked under the key's lock: a re-sync that began while this call waited for
            # the lock must finish first, or a key TWS already holds could look free.
            await self.wait_synced(self.session.budget(context))
            existing = self._by_key.get(key)
            if existing is not None:
                return await self._replay(existing, intent, context)
            qualified = await self.session.qualify(contract, context=context)
            self.session.require_connected()
            trade = self.ib.placeOrder(qualified, order)
            entry = self.bind(key, trade)
            log.info(
                "order %s placed: id %d, %s %s %s %s",
                key,
                entry.order_id,
                order.action,
                convert.decimal_text(order.totalQuantity),
                qualified.localSymbol or qualified.symbol,
                order.orderType,
            )
            await self._await_acknowledgement(entry, context)
            return Placement(entry, replayed=False)

    async def _replay(
        self, entry: BookEntry, intent: OrderIntent, context: HasTimeRemaining | None
    ) -> Placement:
        differences = intent_differences(intent, entry.trade)
        if differences:
            raise GatewayError(
                grpc.StatusCode.ALREADY_EXISTS,
                "CLIENT_ORDER_ID_REUSED",
                f"client_order_id {intent.client_order_id!r} already names order "
                f"{entry.order_id} (perm id {entry.perm_id}), which differs in "
                f"{', '.join(differences)}; use a new client_order_id for a new order",
                metadata={
                    "client_order_id": intent.client_order_id,
                    "order_id": str(entry.order_id),
                    "perm_id": str(entry.perm_id),
                    "differing_fields": ",".join(differences),
                },
            )
        if entry.rejection is not None:
            raise self._rejection_error(entry, *entry.rejection, replayed=True)
        if not entry.acknowledged:
            # The first call timed out waiting; the retry waits again.
            await self._await_acknowledgement(entry, context)
        return Placement(entry, replayed=True)

    async def _await_acknowledgement(
        self, entry: BookEntry, context: HasTimeRemaining | None
    ) -> None:
        """Return once TWS accepted the order; raise the mapped error if it refused it."""
        budget = self.session.budget(context)

        def settled() -> bool:
            return entry.acknowledged or self._refusal(entry) is not None

        ok = await self._wait(entry, settled, budget)
        refusal = self._refusal(entry)
        if refusal is not None:
            code, text = refusal
            if not entry.perm_id:
                # TWS created nothing: free the key so a corrected retry can place it.
                self._refused.add((entry.trade.order.clientId, entry.order_id))
                if self._by_key.get(entry.client_order_id) is entry:
                    del self._by_key[entry.client_order_id]
            else:
                entry.rejection = refusal
            raise self._rejection_error(entry, code, text, replayed=False)
        if ok:
            return
        if not self.session.connected:
            raise errors.not_connected(
                f"connection to TWS lost before it acknowledged order "
                f"{entry.client_order_id!r}; once connected, retry PlaceOrder with the same "
                "client_order_id: it returns the order if TWS has it and places it otherwise"
            )
        raise GatewayError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "ORDER_NOT_ACKNOWLEDGED",
            f"order {entry.client_order_id!r} was sent to TWS but not acknowledged within "
            f"{budget:g}s; retry PlaceOrder with the same client_order_id to get it",
            metadata={
                "client_order_id": entry.client_order_id,
                "order_id": str(entry.order_id),
                "timeout_seconds": f"{budget:g}",
            },
        )

    def _refusal(self, entry: BookEntry) -> tuple[int, str] | None:
        """The IB error that refused this order, if any."""
        if entry.rejection is not None:
            return entry.rejection
        trade = entry.trade
        message = self._messages.get((trade.order.clientId, entry.order_id))
        if message is not None and not ib_terms.is_informational(message[0]):
            # An error before TWS took the order, or one that ended it. (ib_insync itself
            # cancels the trade for most codes, but not for 110, an invalid price.)
            if not entry.perm_id or entry.status in (*CANCELLED_IB_STATUSES, "Inactive"):
                return message
        if refused_before_acknowledged(trade):
            for logged in reversed(trade.log):
                if logged.errorCode:
                    return logged.errorCode, ib_terms.strip_error_prefix(logged.message)
        return None

    def _rejection_error(
        self, entry: BookEntry, code: int, text: str, *, replayed: bool
    ) -> GatewayError:
        err = errors.from_ib_error(code, text)
        err.metadata.update(
            {"client_order_id": entry.client_order_id, "order_id": str(entry.order_id)}
        )
        if replayed:
            err.metadata["replayed"] = "true"
        return err

    # ------------------------------------------------------------------ CancelOrder

    async def cancel(
        self, key: str | int, *, context: HasTimeRemaining | None = None
    ) -> Cancellation:
        """Ask TWS to cancel an open order; returns it CANCELLED or PENDING_CANCEL.

        An order already cancelled is returned as it is (``already_cancelled``): a retry
        whose first answer was lost learns the outcome instead of an error.
        FAILED_PRECONDITION when it is already filled (or fills meanwhile).
        """
        entry = await self.locate(key, context=context)
        return await self.cancel_entry(entry, context=context)

    async def cancel_entry(
        self, entry: BookEntry, *, context: HasTimeRemaining | None = None
    ) -> Cancellation:
        """:meth:`cancel` of an order already located (one call per order at a time)."""
        async with self._order_lock(entry, context):
            if entry.status in CANCELLED_IB_STATUSES:
                return Cancellation(entry, already_cancelled=True)
            return Cancellation(await self._cancel(entry, context), already_cancelled=False)

    async def _cancel(self, entry: BookEntry, context: HasTimeRemaining | None) -> BookEntry:
        self._refuse_if_finished(entry)
        self.session.require_connected()
        order_key = (entry.trade.order.clientId, entry.order_id)
        if entry.status != "PendingCancel":
            self._messages.pop(order_key, None)
            self.ib.cancelOrder(entry.trade.order)
        # else an earlier cancel (say one whose answer was lost) is under way: wait for it

        def settled() -> bool:
            message = self._messages.get(order_key)
            refused = message is not None and not ib_terms.is_informational(message[0])
            return refused or entry.status in FINAL_AFTER_CANCEL

        await self._wait(entry, settled, self.session.budget(context))
        message = self._messages.get(order_key)
        if entry.status == "Filled":
            self._refuse_if_finished(entry)
        if message is not None and not ib_terms.is_informational(message[0]):
            if entry.status not in CANCELLED_IB_STATUSES:
                err = errors.from_ib_error(*message)
                err.metadata.update(key_metadata(entry))
                raise err
        if not self.session.connected and entry.status not in CANCELLED_IB_STATUSES:
            raise errors.not_connected(
                f"connection to TWS lost while cancelling order {entry.order_id}; "
                "GetOrder shows its state once connected"
            )
        return entry

    # ------------------------------------------------------------------ CancelAllOrders

    async def cancel_all(
        self, account: str, *, context: HasTimeRemaining | None = None
    ) -> list[BookEntry]:
        """Cancel the working orders of ``account`` one by one, or with ``account`` empty
        send IB's global cancel; returns the orders concerned as they are afterwards.

        An order whose cancel TWS refuses (e.g. one of another API client, which only
        its owner may cancel) or that fills meanwhile is returned in the state it is in:
        the response's statuses say what was cancelled.
        """
        await self.wait_synced(self.session.budget(context))
        await self.refresh(context=context)  # other clients' latest orders too
        working = [
            e
            for e in self.entries()
            if ib_terms.status_from_ib(e.status) in WORKING_STATUSES
            and (not account or e.account == account)
        ]
        if not working:
            return []
        if account:
            outcomes = await asyncio.gather(
                *(self.cancel_entry(e, context=context) for e in working),
                return_exceptions=True,
            )
            for entry, outcome in zip(working, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    log.info("cancel-all: order %d not cancelled: %s", entry.order_id, outcome)
            return working
        self.session.require_connected()
        self.ib.reqGlobalCancel()
        log.info("global cancel sent (%d working order(s) known)", len(working))
        own = [e for e in working if e.trade.order.clientId == self.session.client_id]
        budget = self.session.budget(context)
        await asyncio.gather(*(self._wait(e, finished_check(e), budget) for e in own))
        if len(own) < len(working):
            # TWS tells only each order's owner; other clients' orders are asked for.
            await self.refresh(context=context)
        return working

    # ------------------------------------------------------------------ ModifyOrder

    async def modify(
        self, entry: BookEntry, change: Modification, *, context: HasTimeRemaining | None
    ) -> BookEntry:
        """Send ``entry``'s order again with ``change`` applied (same order id) and wait
        until TWS reports the new terms, or refuses them (the mapped IB error; the order
        keeps working on its old terms, and the event stream says MODIFY_REJECTED).
        Modifications and cancels of one order run one at a time: answers never cross.
        """
        async with self._order_lock(entry, context):
            return await self._modify(entry, change, context)

    async def _modify(
        self, entry: BookEntry, change: Modification, context: HasTimeRemaining | None
    ) -> BookEntry:
        self._refuse_if_finished(entry)
        if entry.status == "Inactive" or entry.rejection is not None:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "ORDER_NOT_WORKING",
                f"order {entry.order_id} is not working (status {entry.status})",
                metadata={**key_metadata(entry), "status": entry.status},
            )
        trade = entry.trade
        if trade.order.clientId != self.session.client_id:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "ORDER_OF_OTHER_CLIENT",
                f"order {entry.order_id} was placed by API client {trade.order.clientId}; "
                "TWS lets only that client modify it",
                metadata={**key_metadata(entry), "owner_client_id": str(trade.order.clientId)},
            )
        new, violations = ib_orders.modified_order(trade.order, change)
        if violations:
            raise errors.invalid_argument(violations)
        self.session.require_connected()
        order_key = (trade.order.clientId, entry.order_id)
        self._messages.pop(order_key, None)
        expected = terms_of(new)
        previous_status = trade.orderStatus.status
        answered = False

        def on_open_order(t: Trade) -> None:
            nonlocal answered
            if t is trade:
                answered = True

        def refused() -> tuple[int, str] | None:
            message = self._messages.get(order_key)
            if message is not None and not ib_terms.is_informational(message[0]):
                return message
            return None

        def settled() -> bool:
            return (
                refused() is not None
                or (answered and order_terms(trade) == expected)
                or oc.is_done(trade)
            )

        self.ib.openOrderEvent += on_open_order
        self._modifying[order_key] = (previous_status, expected)
        try:
            self.ib.placeOrder(trade.contract, new)
            log.info(
                "order %s (id %d) modify sent: %s", entry.client_order_id, entry.order_id, expected
            )
            ok = await self._wait(entry, settled, self.session.budget(context))
        finally:
            self.ib.openOrderEvent -= on_open_order
        refusal = refused()
        if ok or refusal is not None:
            # answered; without an answer the mark stays until TWS's answer arrives
            self._modifying.pop(order_key, None)
        if refusal is not None:
            if (
                trade.orderStatus.status in CANCELLED_IB_STATUSES
                and previous_status not in CANCELLED_IB_STATUSES
            ):
                # ib_insync marks an order cancelled on any error about it; TWS refused
                # only the change, the order keeps working.
                trade.orderStatus.status = previous_status
            err = errors.from_ib_error(*refusal)
            err.metadata.update(key_metadata(entry))
            raise err
        if oc.is_done(trade) and order_terms(trade) != expected:
            self._refuse_if_finished(entry)
        if not ok:
            if not self.session.connected:
                raise errors.not_connected(
                    f"connection to TWS lost while modifying order {entry.order_id}; "
                    "GetOrder shows its terms once connected"
                )
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "MODIFY_NOT_ACKNOWLEDGED",
                f"TWS did not acknowledge the modification of order {entry.order_id} in "
                "time; GetOrder shows whether it took effect",
                metadata=key_metadata(entry),
            )
        # ib_insync copies only quantity, type and prices from TWS's openOrder.
        trade.order.tif = new.tif
        trade.order.outsideRth = new.outsideRth
        trade.order.trailingPercent = new.trailingPercent
        trade.order.trailStopPrice = new.trailStopPrice
        trade.order.lmtPriceOffset = new.lmtPriceOffset
        trade.order.goodTillDate = new.goodTillDate
        return entry

    # ------------------------------------------------------------------ ListExecutions

    async def executions(self, *, context: HasTimeRemaining | None = None) -> list[Fill]:
        """Today's executions, fresh from TWS, with the commission reports received."""
        fresh = await self.session.request(
            lambda: self.ib.reqExecutionsAsync(), what="executions", context=context
        )
        known = {f.execution.execId: f for f in self.ib.fills()}
        fills = {f.execution.execId: known.get(f.execution.execId, f) for f in fresh}
        for exec_id, fill in known.items():
            fills.setdefault(exec_id, fill)
        return list(fills.values())

    def order_ref_of(self, fill: Fill) -> str:
        """The client_order_id of a fill's order (executions may not carry it)."""
        perm = fill.execution.permId
        for trade in self.ib.trades():
            if perm and perm_id_of(trade) == perm:
                return trade.order.orderRef or ""
        return ""

    def _refuse_if_finished(self, entry: BookEntry) -> None:
        status = entry.status
        if status == "Filled":
            reason, what = "ORDER_ALREADY_FILLED", "filled"
        elif status in CANCELLED_IB_STATUSES:
            reason, what = "ORDER_ALREADY_CANCELLED", "cancelled"
        else:
            return
        raise GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION,
            reason,
            f"order {entry.order_id} ({entry.client_order_id or 'no client_order_id'}) is "
            f"already {what}",
            metadata={**key_metadata(entry), "status": status},
        )

    # ------------------------------------------------------------------ waiting

    async def _wait(self, entry: BookEntry, done: Callable[[], bool], budget: float) -> bool:
        """Wait until ``done()`` (re-checked on every change of the order, IB message or
        session state); False when ``budget`` runs out or the connection is lost."""
        if done():
            return True
        changed = asyncio.Event()

        def poke(*_: object) -> None:
            changed.set()

        trade = entry.trade
        trade.statusEvent += poke
        trade.fillEvent += poke
        self._pokes.add(poke)
        loop = asyncio.get_running_loop()
        end = loop.time() + budget
        try:
            while not done():
                if not self.session.connected or not self._started:
                    return False
                remaining = end - loop.time()
                if remaining <= 0:
                    return False
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            return True
        finally:
            trade.statusEvent -= poke
            trade.fillEvent -= poke
            self._pokes.discard(poke)

    def _poke(self) -> None:
        for poke in list(self._pokes):
            poke()

    def _order_lock(
        self, entry: BookEntry, context: HasTimeRemaining | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Serialize ModifyOrder and CancelOrder calls on one order."""
        key = f"order {entry.trade.order.clientId}:{entry.order_id}"
        busy = GatewayError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "ORDER_IN_PROGRESS",
            f"another ModifyOrder or CancelOrder on order {entry.order_id} is still waiting "
            "for TWS; GetOrder shows its outcome",
            metadata=key_metadata(entry),
        )
        return self._key_lock(key, context, busy)

    @contextlib.asynccontextmanager
    async def _key_lock(
        self, key: str, context: HasTimeRemaining | None, busy: GatewayError | None = None
    ) -> AsyncIterator[None]:
        """Serialize PlaceOrder calls with one key (bounded by the client's deadline)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            budget = self.session.budget(context)
            try:
                await asyncio.wait_for(lock.acquire(), budget)
            except TimeoutError:
                if busy is not None:
                    raise busy from None
                raise GatewayError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "ORDER_IN_PROGRESS",
                    f"another PlaceOrder with client_order_id {key!r} is still waiting for "
                    "TWS; retry with the same client_order_id to get its outcome",
                    metadata={"client_order_id": key},
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self._lock_users[key] -= 1
            if not self._lock_users[key]:
                del self._lock_users[key]
                self._locks.pop(key, None)

    # ------------------------------------------------------------------ brackets
    # What orders/brackets.py needs to place several linked orders under one key.

    def key_lock(
        self, key: str, context: HasTimeRemaining | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return self._key_lock(key, context)

    def bound(self, key: str) -> BookEntry | None:
        """The order a client_order_id names, if any."""
        return self._by_key.get(key)

    def bind(self, key: str, trade: Trade) -> BookEntry:
        """Name a just-placed order with its client_order_id."""
        entry = BookEntry(trade=trade, create_time=created_time(trade), children=self._children)
        self._by_key[key] = entry
        return entry

    async def await_acknowledgement(
        self, entry: BookEntry, context: HasTimeRemaining | None
    ) -> None:
        await self._await_acknowledgement(entry, context)

    def refusal(self, entry: BookEntry) -> tuple[int, str] | None:
        return self._refusal(entry)

    def rejection_error(
        self, entry: BookEntry, code: int, text: str, *, replayed: bool
    ) -> GatewayError:
        return self._rejection_error(entry, code, text, replayed=replayed)

    def forget_refused(self, entry: BookEntry) -> None:
        """An order TWS never transmitted (its bracket was refused): free its key and
        hide it, as an order TWS refused outright."""
        self._refused.add((entry.trade.order.clientId, entry.order_id))
        if self._by_key.get(entry.client_order_id) is entry:
            del self._by_key[entry.client_order_id]

    def _children(self, trade: Trade) -> list[Trade]:
        """The child orders of ``trade``: by parent id (same client), and a bracket's exits
        by their derived keys (completed orders do not report a parent id)."""
        by_parent, by_ref = self._child_index()
        found = list(by_parent.get((trade.order.clientId, int(trade.order.orderId or 0)), ()))
        ref = trade.order.orderRef or ""
        if ref:
            for suffix in (ib_terms.TAKE_PROFIT_SUFFIX, ib_terms.STOP_LOSS_SUFFIX):
                found += [t for t in by_ref.get(ref + suffix, ()) if t not in found]
        return [t for t in found if t is not trade]

    def _child_index(
        self,
    ) -> tuple[dict[tuple[int, int], list[Trade]], dict[str, list[Trade]]]:
        """Orders by (client id, parent id) and by orderRef, rebuilt only when ib_insync's
        order table is replaced or changes size (a parent id never changes), so rendering
        N orders stays linear."""
        trades = self.ib.wrapper.trades  # a new dict after every reconnect
        known = (id(trades), len(trades))
        if self._child_index_cache is None or self._child_index_cache[0] != known:
            by_parent: dict[tuple[int, int], list[Trade]] = {}
            by_ref: dict[str, list[Trade]] = {}
            for t in self.ib.trades():
                if t.order.parentId:
                    by_parent.setdefault((t.order.clientId, t.order.parentId), []).append(t)
                if t.order.orderRef:
                    by_ref.setdefault(t.order.orderRef, []).append(t)
            self._child_index_cache = (known, by_parent, by_ref)
        return self._child_index_cache[1], self._child_index_cache[2]

    # ------------------------------------------------------------------ sync with TWS

    def _on_state(self, change: StateChange) -> None:
        self.events.connection_changed(convert.state_change_to_proto(change))
        if change.event is SessionEvent.CONNECTED:
            self._begin_resync()
        elif change.event in (SessionEvent.DISCONNECTED, SessionEvent.STOPPED):
            self.tracker.suspend()
            self._synced.clear()
            # ib_insync forgets its trades on a disconnect; order ids go with them.
            self._messages.clear()
            self._refused.clear()
            self._modifying.clear()
        self._poke()

    def _check_journal_accounts(self) -> None:
        """A journal written for other accounts is set aside, never mixed in."""
        journal = self.events.journal
        accounts = self.session.accounts
        if journal.claim_accounts(accounts):
            return
        held = ", ".join(sorted(journal.accounts()))
        if not isinstance(journal, SqliteJournal):
            raise RuntimeError(f"the order journal belongs to other accounts ({held})")
        path = journal.path
        settings = (journal.max_events, journal.max_age / 86_400)
        journal.close()
        aside = set_aside(path, "other-account")
        log.error(
            "order journal %s holds the events of account(s) %s, not of this login (%s): "
            "set aside as %s; starting a new journal (new epoch: clients re-sync with "
            "ListOrders)",
            path,
            held,
            ", ".join(accounts),
            aside,
        )
        fresh = SqliteJournal(path, max_events=settings[0], max_age_days=settings[1])
        fresh.claim_accounts(accounts)
        self.events.restart(fresh)
        self.tracker.restart()

    def _begin_resync(self) -> None:
        """ib_insync has just loaded this client's open orders, the completed orders and
        the executions: index them now, then fetch other clients' open orders."""
        self._check_journal_accounts()
        self._synced.clear()
        self.tracker.suspend()  # what changes meanwhile is seen by the sync at the end
        self._reindex()
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._resync_task = asyncio.get_running_loop().create_task(
            self._resync(), name="order-book-resync"
        )

    async def _resync(self) -> None:
        try:
            # Orders placed under another client id (e.g. before a restart with a new
            # IBKR_CLIENT_ID) are only reported to reqAllOpenOrders.
            await self.session.shared(
                "openOrders",
                lambda: self.ib.reqAllOpenOrdersAsync(),
                what="open orders of all clients",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("order book: could not load other clients' open orders: %s", exc)
        self._attach_fills()
        self._reindex()
        # Events for whatever changed while the gateway was away (nothing on the first
        # sync, which only records what TWS holds).
        self.tracker.sync()
        self._synced.set()
        log.info("order book synchronised: %d order(s) with a client_order_id", len(self._by_key))
        self._poke()

    async def refresh(self, *, context: HasTimeRemaining | None = None) -> None:
        """Ask TWS again for every client's open orders, the completed orders and the
        executions: TWS only pushes *this* client's order updates, so orders placed by
        other clients since the connect are only seen this way."""
        _, completed = await asyncio.gather(
            self.session.shared(
                "openOrders",
                lambda: self.ib.reqAllOpenOrdersAsync(),
                what="open orders of all clients",
                context=context,
            ),
            self.session.shared(
                "completedOrders",
                lambda: self.ib.reqCompletedOrdersAsync(False),
                what="completed orders",
                context=context,
            ),
        )
        self._apply_completed(completed)
        # Executions come after the orders, so that each finds its order.
        await self.session.request(
            lambda: self.ib.reqExecutionsAsync(), what="executions", context=context
        )
        self._attach_fills()
        self._reindex()
        if self._synced.is_set():
            self.tracker.sync()  # e.g. orders of other clients seen for the first time

    def _apply_completed(self, completed: list[Trade]) -> None:
        """ib_insync keeps the first Trade it saw of an order and ignores a completed
        order's state for it; orders of other clients (whose updates TWS does not push to
        this client) would stay working forever. Take the final status from TWS."""
        by_perm = {perm_id_of(t): t for t in self.ib.trades() if perm_id_of(t)}
        for done in completed:
            trade = by_perm.get(perm_id_of(done))
            if trade is None or trade is done or oc.is_done(trade) or not oc.is_done(done):
                continue
            trade.orderStatus.status = done.orderStatus.status
            trade.orderStatus.remaining = 0.0

    async def locate(self, key: str | int, *, context: HasTimeRemaining | None = None) -> BookEntry:
        """Like :meth:`find`, but an order the book does not know is looked up in TWS once
        (it may have been placed by another client since the connect)."""
        await self.wait_synced(self.session.budget(context))
        try:
            return self.find(key)
        except GatewayError as exc:
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                raise
        await self.refresh(context=context)
        return self.find(key)

    def _attach_fills(self) -> None:
        """Give orders loaded after the executions (other clients' orders) their fills."""
        by_perm = {perm_id_of(t): t for t in self.ib.trades() if perm_id_of(t)}
        for fill in self.ib.fills():
            trade = by_perm.get(fill.execution.permId)
            if trade is not None and all(
                f.execution.execId != fill.execution.execId for f in trade.fills
            ):
                trade.fills.append(fill)

    def _reindex(self) -> None:
        """Rebuild client_order_id → order from what TWS reported (ib.trades())."""
        old = self._by_key
        new: dict[str, BookEntry] = {}
        for trade in self.ib.trades():
            ref = trade.order.orderRef or ""
            if not ref or self._was_refused(trade):
                continue
            current = new.get(ref)
            if current is not None:
                if current.perm_id and perm_id_of(trade) and current.perm_id != perm_id_of(trade):
                    log.warning(
                        "orderRef %r is used by several orders (perm ids %d and %d); "
                        "client_order_id %r names the first",
                        ref,
                        current.perm_id,
                        perm_id_of(trade),
                        ref,
                    )
                if current.perm_id or not perm_id_of(trade):
                    continue
            new[ref] = self._entry_for(trade, old.get(ref))
        for ref, entry in old.items():
            # An acknowledged order TWS no longer lists (e.g. an old completed order) stays
            # bound, so its key is never reused by mistake; one TWS never got is forgotten.
            if ref not in new and entry.perm_id:
                new[ref] = entry
        self._by_key = new

    def _entry_for(self, trade: Trade, previous: BookEntry | None) -> BookEntry:
        if previous is not None and previous.trade is trade:
            return previous
        same = previous is not None and previous.perm_id and previous.perm_id == perm_id_of(trade)
        entry = BookEntry(
            trade=trade,
            create_time=previous.create_time if same and previous else self._seen(trade),
            message=previous.message if same and previous else None,
            rejection=previous.rejection if same and previous else None,
            children=self._children,
        )
        return entry

    def _transient_entry(self, trade: Trade) -> BookEntry:
        key = (trade.order.clientId, int(trade.order.orderId or 0))
        return BookEntry(
            trade=trade,
            create_time=self._seen(trade),
            message=self._messages.get(key),
            children=self._children,
        )

    def _seen(self, trade: Trade) -> datetime:
        """When the book first saw an order (its placement time for our own orders)."""
        perm = perm_id_of(trade)
        first = created_time(trade)
        if not perm:
            return first
        return self._first_seen.setdefault(perm, first)

    def _was_refused(self, trade: Trade) -> bool:
        """TWS refused this order before creating it: it is not an order of the account."""
        key = (trade.order.clientId, int(trade.order.orderId or 0))
        return key in self._refused or refused_before_acknowledged(trade)

    def _on_order_status(self, trade: Trade) -> None:
        """Undo ib_insync's verdict when TWS refused a modification: ib_insync marks an
        order cancelled on any IB error about it, but TWS refused only the change and the
        order keeps working. Runs before the tracker sees the status."""
        key = (trade.order.clientId, int(trade.order.orderId or 0))
        pending = self._modifying.get(key)
        if (
            pending is None
            or trade.orderStatus.status not in CANCELLED_IB_STATUSES
            or not trade.log
        ):
            return
        last = trade.log[-1]
        previous = pending[0]
        if (
            last.errorCode
            and not ib_terms.is_informational(last.errorCode)
            and previous not in CANCELLED_IB_STATUSES
        ):
            trade.orderStatus.status = previous

    def _on_open_order(self, trade: Trade) -> None:
        """An order placed elsewhere (another client, TWS) with an orderRef joins the map."""
        key = (trade.order.clientId, int(trade.order.orderId or 0))
        pending = self._modifying.get(key)
        if pending is not None and order_terms(trade) == pending[1]:
            del self._modifying[key]  # TWS took the change (perhaps after the call gave up)
        ref = trade.order.orderRef or ""
        if ref and ref not in self._by_key and not self._was_refused(trade):
            self._by_key[ref] = self._entry_for(trade, None)
        self._poke()

    def _on_ib_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if req_id <= 0:
            return
        trade = self._trade_of_request(req_id)
        if trade is None:
            return
        text = message.strip()
        self._messages[(trade.order.clientId, req_id)] = (code, text)
        for entry in self._entries_of(trade):
            entry.message = (code, text)
        key = (trade.order.clientId, req_id)
        if key in self._modifying and not ib_terms.is_informational(code):
            previous, _ = self._modifying.pop(key)
            if (
                trade.orderStatus.status in CANCELLED_IB_STATUSES
                and previous not in CANCELLED_IB_STATUSES
            ):
                trade.orderStatus.status = previous
            self.tracker.modify_rejected(trade, code, ib_terms.strip_error_prefix(text))
        self._poke()

    def _render(self, trade: Trade) -> orders_pb2.Order:
        """The proto Order of a trade, as GetOrder shows it (order events carry it)."""
        entries = self._entries_of(trade)
        return (entries[0] if entries else self._transient_entry(trade)).to_proto()

    def _trade_of_request(self, req_id: int) -> Trade | None:
        """The trade of an order id of this client (IB errors name orders so)."""
        trade: Trade | None = self.ib.wrapper.trades.get((self.session.client_id, req_id))
        return trade

    def _entries_of(self, trade: Trade) -> list[BookEntry]:
        ref = trade.order.orderRef or ""
        entry = self._by_key.get(ref) if ref else None
        return [entry] if entry is not None and entry.trade is trade else []
