"""Account requests on the wire (placeholder for the first increment: end markers only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .message_ids import In, Out

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator


def install(sim: Simulator) -> None:
    account_id = sim.account.account_id

    def positions(conn: ClientConnection, fields: list[str]) -> None:
        conn.send(Out.POSITION_END, 1)

    def account_updates(conn: ClientConnection, fields: list[str]) -> None:
        if fields[1] == "1":
            conn.send(Out.ACCT_DOWNLOAD_END, 1, account_id)

    def account_updates_multi(conn: ClientConnection, fields: list[str]) -> None:
        conn.send(Out.ACCOUNT_UPDATE_MULTI_END, 1, int(fields[1]))

    sim.register(In.REQ_POSITIONS, positions)
    sim.register(In.REQ_ACCT_DATA, account_updates)
    sim.register(In.REQ_ACCOUNT_UPDATES_MULTI, account_updates_multi)
