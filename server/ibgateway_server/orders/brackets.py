"""PlaceBracketOrder: an entry with an optional take-profit and stop-loss, as IB's
parent/child orders, placed once per client_order_id.

How a bracket is placed (IB's own recipe, ``transmit`` chaining):

1. The entry (the parent) goes to TWS with ``transmit=False``, then the take-profit (a
   child: ``parentId`` = the entry's order id) with ``transmit=False``. TWS holds both
   untransmitted: nothing works yet, and TWS answers nothing for them.
2. A round trip to TWS (reqCurrentTime; TWS answers one connection's requests in order)
   proves that TWS took the held legs: an error about either arrives before the answer.
   If TWS refused one, the last leg is never sent, nothing ever works, and the call fails
   with that leg's IB error (the keys stay free).
3. The last leg goes with ``transmit=True``: TWS transmits the entry and every held child
   at once. The call returns once TWS acknowledged every leg.

Keys: the bracket's ``client_order_id`` K names the entry (IB orderRef ``K``); the exits
are ``K:tp`` and ``K:sl`` (so K has at most 37 characters, and PlaceOrder refuses keys
ending in ``:tp`` / ``:sl``). The orderRefs live in TWS, so after a gateway restart the
re-sync finds the legs again and a retry returns them (``replayed``). The exits share the
OCA group ``K:oca`` (type 2, reduce with block): a fill of one reduces the other by its
quantity, and fills it cancels it. TWS keeps the exits PreSubmitted until the entry has
filled; cancelling the entry cancels them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import Contract, Order
from ibgateway_server.orders.entries import BookEntry, HasTimeRemaining
from ibgateway_server.orders.ib_orders import build_ib_order
from ibgateway_server.orders.intent import OrderIntent, intent_differences

if TYPE_CHECKING:
    from ibgateway_server.orders.book import OrderBook

EXIT_OCA_SUFFIX = ":oca"
EXIT_OCA_TYPE = 2  # reduce with block: the exits never overfill


@dataclass(frozen=True)
class BracketIntent:
    """A validated PlaceBracketOrderRequest: one OrderIntent per leg (the exits' keys
    derived from the bracket's)."""

    client_order_id: str
    entry: OrderIntent
    take_profit: OrderIntent | None = None
    stop_loss: OrderIntent | None = None

    @property
    def legs(self) -> list[OrderIntent]:
        """Entry first: the order they are sent in."""
        return [i for i in (self.entry, self.take_profit, self.stop_loss) if i is not None]


@dataclass(frozen=True)
class BracketPlacement:
    """The legs of a bracket, and whether it already existed."""

    entry: BookEntry
    take_profit: BookEntry | None
    stop_loss: BookEntry | None
    replayed: bool


def build_bracket_orders(bracket: BracketIntent, account: str) -> list[Order]:
    """The IB orders of the legs, in sending order (the exits' intents carry their OCA
    group, ``<key>:oca``, type 2), every leg but
    the last held (``transmit=False``). The exits' parentId is set once the entry has its
    order id."""
    orders = [build_ib_order(leg, account) for leg in bracket.legs]  # exits: OCA group
    for order in orders:
        order.transmit = order is orders[-1]
    return orders


async def place_bracket(
    book: OrderBook,
    bracket: BracketIntent,
    contract: Contract,
    account: str,
    *,
    context: HasTimeRemaining | None = None,
) -> BracketPlacement:
    """Place the bracket unless its key already names one (then return that one)."""
    session = book.session
    key = bracket.client_order_id
    async with book.key_lock(key, context):
        await book.wait_synced(session.budget(context))
        bound = [book.bound(leg.client_order_id) for leg in bracket.legs]
        if any(entry is not None for entry in bound) or _extra_legs(book, bracket):
            return await _replay(book, bracket, context)
        qualified = await session.qualify(contract, context=context)
        session.require_connected()
        orders = build_bracket_orders(bracket, account)
        entries: list[BookEntry] = []
        for leg, order in zip(bracket.legs, orders, strict=True):
            if entries:
                order.parentId = entries[0].order_id
            if order.transmit and entries:
                await _held_legs_taken(book, entries, context)
            entries.append(book.bind(leg.client_order_id, book.ib.placeOrder(qualified, order)))
        try:
            # The transmitting leg first: if TWS refuses it, nothing was transmitted.
            await book.await_acknowledgement(entries[-1], context)
        except GatewayError:
            if book.bound(entries[-1].client_order_id) is not entries[-1]:
                # TWS refused it outright (its key was freed): nothing was transmitted.
                for held in entries[:-1]:
                    book.forget_refused(held)
            raise  # else out of time: the legs stay bound, a retry waits for them
        for entry in entries[:-1]:
            await book.await_acknowledgement(entry, context)
        return _placement(bracket, entries, replayed=False)


async def _held_legs_taken(
    book: OrderBook, held: list[BookEntry], context: HasTimeRemaining | None
) -> None:
    """Raise the IB error of a held leg TWS refused (then nothing is transmitted)."""
    session = book.session
    try:
        await session.request(
            lambda: book.ib.reqCurrentTimeAsync(), what="order round trip", context=context
        )
    except BaseException:
        # Out of time or connection: the last leg is never sent, so nothing of this
        # bracket will ever work; a retry places it anew.
        for other in held:
            book.forget_refused(other)
        raise
    for entry in held:
        refusal = book.refusal(entry)
        if refusal is not None:
            for other in held:
                book.forget_refused(other)
            raise book.rejection_error(entry, *refusal, replayed=False)


def _extra_legs(book: OrderBook, bracket: BracketIntent) -> bool:
    """An exit of this key exists that the request does not ask for."""
    key = bracket.client_order_id
    wanted = {leg.client_order_id for leg in bracket.legs}
    return any(
        book.bound(key + suffix) is not None and key + suffix not in wanted
        for suffix in (":tp", ":sl")
    )


async def _replay(
    book: OrderBook, bracket: BracketIntent, context: HasTimeRemaining | None
) -> BracketPlacement:
    key = bracket.client_order_id
    differences: list[str] = []
    entries: list[BookEntry] = []
    for name, leg, suffix in (
        ("entry", bracket.entry, ""),
        ("take_profit", bracket.take_profit, ":tp"),
        ("stop_loss", bracket.stop_loss, ":sl"),
    ):
        entry = book.bound(key + suffix)
        if (leg is None) != (entry is None):
            differences.append(name)
            continue
        if leg is None or entry is None:
            continue
        differences += [f"{name}.{field}" for field in intent_differences(leg, entry.trade)]
        if name != "entry" and entry.trade.order.parentId not in (0, None):
            bound_entry = book.bound(key)
            if bound_entry is not None and entry.trade.order.parentId != bound_entry.order_id:
                differences.append(f"{name}.parent")
        entries.append(entry)
    if differences:
        first = book.bound(key)
        raise GatewayError(
            grpc.StatusCode.ALREADY_EXISTS,
            "CLIENT_ORDER_ID_REUSED",
            f"client_order_id {key!r} already names a bracket (or order) that differs in "
            f"{', '.join(differences)}; use a new client_order_id for a new bracket",
            metadata={
                "client_order_id": key,
                "order_id": str(first.order_id if first else 0),
                "differing_fields": ",".join(differences),
            },
        )
    for entry in entries:
        if entry.rejection is not None:
            raise book.rejection_error(entry, *entry.rejection, replayed=True)
    for entry in entries:
        if not entry.acknowledged:
            await book.await_acknowledgement(entry, context)
    return _placement(bracket, entries, replayed=True)


def _placement(
    bracket: BracketIntent, entries: list[BookEntry], *, replayed: bool
) -> BracketPlacement:
    by_key = {e.client_order_id: e for e in entries}
    take = bracket.take_profit
    stop = bracket.stop_loss
    return BracketPlacement(
        entry=by_key[bracket.client_order_id],
        take_profit=by_key.get(take.client_order_id) if take else None,
        stop_loss=by_key.get(stop.client_order_id) if stop else None,
        replayed=replayed,
    )
