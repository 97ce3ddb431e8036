"""Failures of IB calls as GatewayErrors: IB's RequestError keeps its numeric code."""

from __future__ import annotations

from ibgateway_server import errors
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib.insync import RequestError


def from_exception(exc: BaseException) -> GatewayError | None:
    """The GatewayError for a known failure (IB's refusals included), or None for an
    unexpected one (→ INTERNAL)."""
    if isinstance(exc, RequestError):
        return errors.from_ib_error(exc.code, exc.message)
    return errors.from_exception(exc)
