"""Every RPC of every ibgateway service, from the message descriptors (for the hardening
tests: garbage bytes, fuzzing)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from ibgateway.v1 import (
    account_pb2,
    connection_pb2,
    market_data_pb2,
    orders_pb2,
    portfolio_pb2,
)

MODULES = (account_pb2, connection_pb2, market_data_pb2, orders_pb2, portfolio_pb2)


@dataclass(frozen=True)
class Rpc:
    path: str  # "/ibgateway.v1.OrderService/PlaceOrder"
    name: str
    request: Descriptor
    server_streaming: bool


def services() -> list[ServiceDescriptor]:
    return [s for m in MODULES for s in m.DESCRIPTOR.services_by_name.values()]


def all_rpcs() -> list[Rpc]:
    return [
        Rpc(
            path=f"/{service.full_name}/{method.name}",
            name=method.name,
            request=method.input_type,
            server_streaming=method.server_streaming,
        )
        for service in services()
        for method in service.methods
    ]
