"""The names of a cluster: NATS subjects, the JetStream stream and the KV bucket.

One cluster per IB login (``IBGW_CLUSTER``); every name starts with it, so several
logins can share one NATS.
"""

from __future__ import annotations

from dataclasses import dataclass

LineKey = tuple[int, str, int]  # (con_id, exchange, IB market data type), as the hub's


def line_token(key: LineKey) -> str:
    """A line key as one subject token: ``265598_SMART_1``."""
    con_id, exchange, md_type = key
    return f"{con_id}_{exchange or 'ANY'}_{md_type}"


def parse_line_token(token: str) -> LineKey:
    con_id, exchange, md_type = token.split("_")
    return int(con_id), "" if exchange == "ANY" else exchange, int(md_type)


@dataclass(frozen=True)
class Subjects:
    cluster: str

    @property
    def prefix(self) -> str:
        return f"ibgw.{self.cluster}"

    def quotes(self, key: LineKey) -> str:
        """Each update of one line, as serialized ``ibgateway.v1.Quote`` bytes."""
        return f"{self.prefix}.quotes.{line_token(key)}"

    @property
    def line_status(self) -> str:
        """A line the owner lost (IB refused it): JSON {line, code, message}."""
        return f"{self.prefix}.linestatus"

    @property
    def lines_want(self) -> str:
        """Request: an edge's line demand (JSON); the reply says which lines it got."""
        return f"{self.prefix}.lines.want"

    @property
    def lines_drop(self) -> str:
        return f"{self.prefix}.lines.drop"

    @property
    def resolve(self) -> str:
        """Request: a Contract spec; the reply is the qualified Contract (or an error)."""
        return f"{self.prefix}.contracts.resolve"

    @property
    def beacon(self) -> str:
        """The lease holder's session status, on every change and every second."""
        return f"{self.prefix}.owner.beacon"

    def rpc(self, method: str) -> str:
        """``/ibgateway.v1.OrderService/PlaceOrder`` →
        ``ibgw.<cluster>.rpc.ibgateway.v1.OrderService.PlaceOrder``."""
        return f"{self.prefix}.rpc.{method.strip('/').replace('/', '.')}"

    @property
    def rpc_all(self) -> str:
        return f"{self.prefix}.rpc.>"

    def method_of(self, subject: str) -> str:
        """The gRPC method of an rpc subject (inverse of :meth:`rpc`)."""
        rest = subject[len(self.prefix) + len(".rpc.") :]
        service, _, method = rest.rpartition(".")
        return f"/{service}/{method}"

    @property
    def order_events(self) -> str:
        return f"{self.prefix}.orders.events"

    @property
    def order_events_stream(self) -> str:
        return f"IBGW_{self.cluster}_ORDER_EVENTS"

    @property
    def orders_bucket(self) -> str:
        """What was reported about each order (the order journal's other half)."""
        return f"ibgw_{self.cluster}_orders"

    @property
    def lease_bucket(self) -> str:
        return f"ibgw_{self.cluster}_owner"


LEASE_KEY = "owner"
