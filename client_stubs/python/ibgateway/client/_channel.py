"""The channel every client uses: service config (default deadlines, retries of
idempotent calls), fast reconnects, TLS, and the bearer token on every call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

#: unary calls that are safe to send again: reads, and PlaceOrder / PlaceBracketOrder /
#: CancelOrder whose client_order_id (or order id) makes a second send return the same order
IDEMPOTENT: dict[str, tuple[str, ...]] = {
    "ibgateway.v1.ConnectionService": ("GetConnectionStatus", "TestConnection"),
    "ibgateway.v1.AccountService": (
        "ListAccounts",
        "GetAccountSummary",
        "GetBalance",
        "GetPnL",
    ),
    "ibgateway.v1.PortfolioService": ("ListPositions",),
    "ibgateway.v1.MarketDataService": (
        "ResolveContract",
        "GetQuotes",
        "SearchContracts",
    ),
    "ibgateway.v1.OrderService": (
        "PlaceOrder",
        "PlaceBracketOrder",
        "CancelOrder",
        "GetOrder",
        "ListOrders",
        "ListExecutions",
        "PreviewOrder",
    ),
}
#: unary calls sent at most once (a retry could do something twice)
AT_MOST_ONCE: dict[str, tuple[str, ...]] = {
    "ibgateway.v1.ConnectionService": ("Connect", "Disconnect"),
    "ibgateway.v1.OrderService": ("ModifyOrder", "CancelAllOrders"),
}


def service_config(timeout: float) -> str:
    """gRPC service config: a deadline on every unary call, and for the idempotent ones up
    to 4 attempts on UNAVAILABLE (gateway restarting, IB reconnecting) with backoff.
    Streams get no deadline."""

    def names(methods: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
        return [{"service": s, "method": m} for s, ms in methods.items() for m in ms]

    deadline = f"{timeout:.3f}s"
    config = {
        "methodConfig": [
            {
                "name": names(IDEMPOTENT),
                "timeout": deadline,
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            },
            {"name": names(AT_MOST_ONCE), "timeout": deadline},
        ]
    }
    return json.dumps(config)


class _TokenInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc, unused-ignore]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc, unused-ignore]
):
    """Adds ``authorization: Bearer <token>`` to every call (plaintext or TLS)."""

    def __init__(self, token: str) -> None:
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._pair)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def open_channel(
    target: str,
    *,
    timeout: float,
    token: str | None = None,
    tls: bool = False,
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to the gateway at ``target`` (``host:port``)."""
    all_options: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(timeout)),
        ("grpc.enable_retries", 1),
        # a restarted gateway is found again within a second or two, not minutes
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5000),
        *options,
    ]
    interceptors = [_TokenInterceptor(token)] if token else None
    if tls or root_certificates or certificate_chain:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
        )
        return grpc.aio.secure_channel(
            target, credentials, options=all_options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)
