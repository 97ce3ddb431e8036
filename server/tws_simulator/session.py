"""Session requests: startApi and what TWS sends on it, ids, accounts, time, log level.

Also the connect-time order requests, answered with just their end markers until the
order side (``orders.install``) registers its own handlers over them.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .dispatch import RequestError
from .message_ids import In, Out

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

CLIENT_ID_IN_USE = (
    326,
    "Unable to connect as the client id is already in use. Retry with a unique client id.",
)
# What a paper TWS reports right after connecting: market data, HMDS and sec-def farms.
FARM_MESSAGES: tuple[tuple[int, str], ...] = (
    (2104, "Market data farm connection is OK:usfarm.nj"),
    (2104, "Market data farm connection is OK:cashfarm"),
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)


def install(sim: Simulator) -> None:
    handlers = _SessionHandlers(sim)
    sim.register(In.START_API, handlers.start_api)
    sim.register(In.REQ_IDS, handlers.req_ids)
    sim.register(In.REQ_CURRENT_TIME, handlers.req_current_time)
    sim.register(In.REQ_MANAGED_ACCTS, handlers.req_managed_accounts)
    sim.register(In.SET_SERVER_LOGLEVEL, _ignore)
    sim.register(In.REQ_USER_INFO, handlers.req_user_info)
    # Order-side defaults: empty answers, replaced by orders.install().
    sim.register(In.REQ_OPEN_ORDERS, _open_order_end)
    sim.register(In.REQ_ALL_OPEN_ORDERS, _open_order_end)
    sim.register(In.REQ_AUTO_OPEN_ORDERS, _ignore)
    sim.register(In.REQ_EXECUTIONS, _exec_details_end)
    sim.register(In.REQ_COMPLETED_ORDERS, _completed_orders_end)


def send_farm_status(conn: ClientConnection) -> None:
    for code, text in FARM_MESSAGES:
        conn.send_error(-1, code, text)


class _SessionHandlers:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def start_api(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, clientId, optionalCapabilities]
        if conn.api_started:
            log.warning("%r sent startApi twice: ignored", conn)
            return
        client_id = int(fields[1])
        if self.sim.client(client_id) is not None:
            log.warning("%r asked for client id %d, which is in use: refusing", conn, client_id)
            conn.send_error(-1, *CLIENT_ID_IN_USE)
            conn.close_after_flush()
            return
        conn.client_id = client_id
        conn.api_started = True
        conn.send(Out.MANAGED_ACCTS, 1, self.sim.account.account_id)
        conn.send(Out.NEXT_VALID_ID, 1, self.sim.next_order_id)
        send_farm_status(conn)
        log.info("%r started the API", conn)

    def req_ids(self, conn: ClientConnection, fields: list[str]) -> None:
        conn.send(Out.NEXT_VALID_ID, 1, self.sim.next_order_id)

    def req_current_time(self, conn: ClientConnection, fields: list[str]) -> None:
        conn.send(Out.CURRENT_TIME, 1, int(time.time()))

    def req_managed_accounts(self, conn: ClientConnection, fields: list[str]) -> None:
        conn.send(Out.MANAGED_ACCTS, 1, self.sim.account.account_id)

    def req_user_info(self, conn: ClientConnection, fields: list[str]) -> None:
        if not fields:
            raise RequestError(321, "Error validating request.-'104' : cause - no request id")
        conn.send(Out.USER_INFO, int(fields[0]), "")


def _ignore(conn: ClientConnection, fields: list[str]) -> None:
    return None


def _open_order_end(conn: ClientConnection, fields: list[str]) -> None:
    conn.send(Out.OPEN_ORDER_END, 1)


def _exec_details_end(conn: ClientConnection, fields: list[str]) -> None:
    # [version, reqId, filter...]
    conn.send(Out.EXEC_DETAILS_END, 1, int(fields[1]))


def _completed_orders_end(conn: ClientConnection, fields: list[str]) -> None:
    conn.send(Out.COMPLETED_ORDERS_END)
