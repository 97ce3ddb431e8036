"""Gateway errors and their mapping to rich gRPC statuses (google.rpc.Status, AIP-193).

Servicers raise :class:`GatewayError` (or let an ib_insync ``RequestError``,
``asyncio.TimeoutError`` or ``ConnectionError`` propagate); the error-mapping interceptor
turns every exception into a status via :func:`from_exception` and
:meth:`GatewayError.to_grpc_status`. Reasons are stable UPPER_SNAKE identifiers; dynamic
values (the IB code, a symbol, an account) go into ``ErrorInfo.metadata``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "ibgateway"

# What to check when the gateway cannot reach TWS; appended to every "not connected" error.
NOT_CONNECTED_HINT = (
    "check that TWS / IB Gateway is running, that its API is enabled "
    "(Configure > API > Settings: Enable ActiveX and Socket Clients, this host in "
    "Trusted IPs), that IBKR_HOST/IBKR_PORT point at it (7497 paper TWS, 7496 live TWS, "
    "4002 paper Gateway, 4001 live Gateway) and that IBKR_CLIENT_ID is not used by "
    "another API client"
)


class GatewayError(Exception):
    """An error with a canonical gRPC code and a stable machine-readable reason."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        ib_code: int | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if code is grpc.StatusCode.OK or code is grpc.StatusCode.UNKNOWN:
            raise ValueError(f"a GatewayError cannot carry {code.name}")
        self.code = code
        self.reason = reason
        self.message = message
        self.ib_code = ib_code
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        ib = f", ib_code={self.ib_code}" if self.ib_code is not None else ""
        return f"GatewayError({self.code.name}, {self.reason!r}, {self.message!r}{ib})"

    def to_status_proto(self) -> status_pb2.Status:
        """The google.rpc.Status with ErrorInfo, BadRequest and RetryInfo details."""
        metadata = dict(self.metadata)
        if self.ib_code is not None:
            metadata["ib_code"] = str(self.ib_code)
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata)
        details.append(_pack(info))
        if self.field_violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.field_violations
                ]
            )
            details.append(_pack(bad))
        if self.retry_after is not None:
            seconds = max(0.0, self.retry_after)
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(seconds * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(
            code=_CODE_NUMBERS[self.code], message=self.message, details=details
        )

    def to_grpc_status(self) -> grpc.Status:
        """A grpc.Status for ``context.abort_with_status`` (trailing binary details)."""
        return rpc_status.to_status(self.to_status_proto())


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: code_pb2.CANCELLED,
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED: code_pb2.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: code_pb2.DATA_LOSS,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
}


@dataclass(frozen=True)
class IbCodeRule:
    """How one IB error code maps to a gRPC status."""

    code: grpc.StatusCode
    reason: str
    retry_after: float | None = None


_S = grpc.StatusCode
# IB message codes: https://interactivebrokers.github.io/tws-api/message_codes.html
IB_CODE_RULES: dict[int, IbCodeRule] = {
    # pacing / capacity: the client may retry later
    100: IbCodeRule(_S.RESOURCE_EXHAUSTED, "PACING_VIOLATION", retry_after=1.0),
    101: IbCodeRule(_S.RESOURCE_EXHAUSTED, "MARKET_DATA_LINES_EXHAUSTED", retry_after=5.0),
    162: IbCodeRule(_S.RESOURCE_EXHAUSTED, "PACING_VIOLATION", retry_after=10.0),
    309: IbCodeRule(_S.RESOURCE_EXHAUSTED, "MARKET_DEPTH_LIMIT", retry_after=5.0),
    420: IbCodeRule(_S.RESOURCE_EXHAUSTED, "PACING_VIOLATION", retry_after=10.0),
    # orders
    103: IbCodeRule(_S.FAILED_PRECONDITION, "DUPLICATE_ORDER_ID"),
    104: IbCodeRule(_S.FAILED_PRECONDITION, "ORDER_ALREADY_FILLED"),
    105: IbCodeRule(_S.FAILED_PRECONDITION, "ORDER_MODIFY_MISMATCH"),
    110: IbCodeRule(_S.INVALID_ARGUMENT, "INVALID_PRICE"),
    111: IbCodeRule(_S.INVALID_ARGUMENT, "TIME_IN_FORCE_NOT_ALLOWED"),
    387: IbCodeRule(_S.INVALID_ARGUMENT, "ORDER_TYPE_NOT_SUPPORTED"),
    10006: IbCodeRule(_S.FAILED_PRECONDITION, "PARENT_ORDER_MISSING"),
    135: IbCodeRule(_S.NOT_FOUND, "ORDER_NOT_FOUND"),
    161: IbCodeRule(_S.FAILED_PRECONDITION, "ORDER_NOT_CANCELLABLE"),
    201: IbCodeRule(_S.FAILED_PRECONDITION, "ORDER_REJECTED"),
    202: IbCodeRule(_S.FAILED_PRECONDITION, "ORDER_CANCELLED"),
    10147: IbCodeRule(_S.NOT_FOUND, "ORDER_NOT_FOUND"),
    10148: IbCodeRule(_S.FAILED_PRECONDITION, "ORDER_NOT_CANCELLABLE"),
    # contracts and requests
    200: IbCodeRule(_S.NOT_FOUND, "CONTRACT_NOT_FOUND"),
    203: IbCodeRule(_S.PERMISSION_DENIED, "SECURITY_NOT_ALLOWED"),
    300: IbCodeRule(_S.NOT_FOUND, "TICKER_NOT_FOUND"),
    321: IbCodeRule(_S.INVALID_ARGUMENT, "INVALID_REQUEST"),
    322: IbCodeRule(_S.INTERNAL, "IB_SERVER_ERROR"),
    366: IbCodeRule(_S.NOT_FOUND, "QUERY_NOT_FOUND"),
    # market-data permissions
    354: IbCodeRule(_S.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
    10089: IbCodeRule(_S.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
    10090: IbCodeRule(_S.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
    10167: IbCodeRule(_S.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
    10168: IbCodeRule(_S.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
    10197: IbCodeRule(_S.UNAVAILABLE, "COMPETING_MARKET_DATA_SESSION", retry_after=10.0),
    # connectivity
    326: IbCodeRule(_S.UNAVAILABLE, "CLIENT_ID_IN_USE"),
    502: IbCodeRule(_S.UNAVAILABLE, "TWS_UNREACHABLE"),
    504: IbCodeRule(_S.UNAVAILABLE, "NOT_CONNECTED"),
    1100: IbCodeRule(_S.UNAVAILABLE, "IB_CONNECTIVITY_LOST", retry_after=5.0),
    1300: IbCodeRule(_S.UNAVAILABLE, "TWS_PORT_RESET"),
    2110: IbCodeRule(_S.UNAVAILABLE, "IB_CONNECTIVITY_LOST", retry_after=5.0),
}
# Any IB code not listed: IB refused the request in its current state.
DEFAULT_IB_RULE = IbCodeRule(_S.FAILED_PRECONDITION, "IB_ERROR")


def from_ib_error(code: int, message: str) -> GatewayError:
    """Map an IB error code and text to a GatewayError (IB code kept in metadata)."""
    rule = IB_CODE_RULES.get(code, DEFAULT_IB_RULE)
    text = message.strip() or f"IB error {code}"
    if rule.code is _S.UNAVAILABLE and code in (326, 502, 504):
        text = f"{text}; {NOT_CONNECTED_HINT}"
    return GatewayError(rule.code, rule.reason, text, ib_code=code, retry_after=rule.retry_after)


def invalid_argument(
    violations: Sequence[tuple[str, str]], message: str | None = None
) -> GatewayError:
    """INVALID_ARGUMENT with one BadRequest field violation per (field, description)."""
    if not violations and message is None:
        raise ValueError("invalid_argument needs at least one violation or a message")
    shown = list(violations[:MAX_VIOLATIONS])
    more = len(violations) - len(shown)
    text = message or "; ".join(f"{f}: {d}" for f, d in shown)
    if more > 0:
        text += f"; and {more} more"
    return GatewayError(_S.INVALID_ARGUMENT, "INVALID_ARGUMENT", text, field_violations=shown)


# Field violations listed in one error (the trailer must stay small whatever was sent).
MAX_VIOLATIONS = 20


def not_connected(detail: str = "not connected to TWS / IB Gateway") -> GatewayError:
    """UNAVAILABLE naming what the operator should check."""
    return GatewayError(
        _S.UNAVAILABLE, "NOT_CONNECTED", f"{detail}; {NOT_CONNECTED_HINT}", retry_after=1.0
    )


def deadline_exceeded(what: str, seconds: float) -> GatewayError:
    return GatewayError(
        _S.DEADLINE_EXCEEDED,
        "IB_TIMEOUT",
        f"no answer from TWS for {what} within {seconds:g}s",
        metadata={"operation": what, "timeout_seconds": f"{seconds:g}"},
    )


def from_exception(exc: BaseException) -> GatewayError | None:
    """The GatewayError for a known failure, or None for an unexpected one (→ INTERNAL).

    IB's own RequestError is mapped by :func:`ibgateway_server.ib.failures.from_exception`.
    """
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return GatewayError(_S.DEADLINE_EXCEEDED, "IB_TIMEOUT", "no answer from TWS in time")
    if isinstance(exc, ConnectionError):
        return not_connected(f"connection to TWS lost ({exc})")
    return None


def internal_error(request_id: str = "") -> GatewayError:
    """The generic error for an unexpected exception: details stay in the server log, on
    the one line that carries ``request_id`` (also returned in ErrorInfo.metadata)."""
    where = f" (request id {request_id})" if request_id else ""
    return GatewayError(
        _S.INTERNAL,
        "INTERNAL",
        f"internal gateway error; see the gateway log for details{where}",
        metadata={"request_id": request_id} if request_id else None,
    )


def malformed_request(method: str, size: int) -> GatewayError:
    """INVALID_ARGUMENT for request bytes that do not decode as the RPC's message."""
    return GatewayError(
        _S.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        f"the request ({size} bytes) is not a valid {method.rpartition('/')[2]} request message",
        metadata={"size_bytes": str(size)},
    )


QUOTE_PREFIX = 16  # characters of client input an error message may repeat


def quote(value: object, limit: int = QUOTE_PREFIX) -> str:
    """A short, printable prefix of client input for an error message (never all of it:
    a long value must not push the error trailer over the client's metadata limit)."""
    text = str(value)
    shown = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    shown = "".join(c if c.isprintable() else "?" for c in shown)
    return f'"{shown}..."' if len(text) > limit else f'"{shown}"'
