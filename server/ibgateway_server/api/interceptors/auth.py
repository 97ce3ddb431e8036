"""Bearer tokens and their scopes (read, trade, admin)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from ibgateway_server import errors
from ibgateway_server.api.interceptors.base import Behavior, WrappingInterceptor

# RPCs that change state: placing and cancelling orders (trade), and controlling the IB
# session (admin: it can cut every client off, or aim the gateway elsewhere).
TRADE_METHODS = frozenset(
    {
        "/ibgateway.v1.OrderService/PlaceOrder",
        "/ibgateway.v1.OrderService/PlaceBracketOrder",
        "/ibgateway.v1.OrderService/CancelOrder",
        "/ibgateway.v1.OrderService/ModifyOrder",
        "/ibgateway.v1.OrderService/CancelAllOrders",
    }
)


ADMIN_METHODS = frozenset(
    {
        "/ibgateway.v1.ConnectionService/Connect",
        "/ibgateway.v1.ConnectionService/Disconnect",
    }
)


# Open to everyone: probes and schema discovery.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def required_scope(method: str) -> str | None:
    if method.startswith(PUBLIC_PREFIXES):
        return None
    if method in ADMIN_METHODS:
        return "admin"
    return "trade" if method in TRADE_METHODS else "read"


class AuthInterceptor(WrappingInterceptor):
    """Bearer tokens with scopes: ``authorization: Bearer <token>`` metadata.

    Sits inside the error mapper, so a refusal is a rich status (UNAUTHENTICATED /
    PERMISSION_DENIED with ErrorInfo) that is logged and counted like any other.
    Tokens are compared in constant time and never logged.
    """

    def __init__(self, tokens: dict[str, frozenset[str]]) -> None:
        self._tokens = [(t.encode(), scopes) for t, scopes in tokens.items()]

    def _authorize(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        scope = required_scope(method)
        if scope is None:
            return
        presented = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode(errors="replace")
                break
        kind, _, token = presented.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise errors.GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "MISSING_TOKEN",
                "this gateway needs a bearer token: send 'authorization: Bearer <token>' metadata",
            )
        scopes = self._scopes_of(token.strip().encode())
        if scopes is None:
            raise errors.GatewayError(
                grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN", "the bearer token is not valid"
            )
        if scope not in scopes:
            raise errors.GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "INSUFFICIENT_SCOPE",
                f"this RPC needs a token with the '{scope}' scope",
                metadata={"required_scope": scope},
            )

    def _scopes_of(self, token: bytes) -> frozenset[str] | None:
        found = None
        for candidate, scopes in self._tokens:  # no early exit: constant time per token
            if hmac.compare_digest(candidate, token):
                found = scopes
        return found

    async def unary(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        self._authorize(method, context)
        return await behavior(request, context)

    async def stream(
        self,
        method: str,
        kind: str,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        self._authorize(method, context)
        async for item in behavior(request, context):
            yield item
