"""One exception type for every failed call: the gRPC code plus the gateway's rich status
(google.rpc.Status with ErrorInfo, BadRequest and RetryInfo details)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, as the gateway named it (e.g. ``limit_price``)."""

    field: str
    description: str


@dataclass(eq=False)  # exceptions compare and hash by identity
class GatewayError(Exception):
    """A call the gateway (or the network) refused.

    ``reason`` is the gateway's stable UPPER_SNAKE reason (``UNKNOWN_ACCOUNT``,
    ``NOT_CONNECTED``, ...; empty when the error did not come from the gateway, e.g. the
    network), ``ib_code`` IB's numeric error code when IB gave one.
    """

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    ib_code: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_delay: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        ib = f" (IB {self.ib_code})" if self.ib_code is not None else ""
        return f"{self.code.name}{reason}{ib}: {self.message}"

    @property
    def violations(self) -> dict[str, str]:
        """The field violations as ``{field: description}``."""
        return {v.field: v.description for v in self.field_violations}

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> GatewayError:
        """Decode a failed call (grpc or grpc.aio) and its ``grpc-status-details-bin``."""
        call: Any = error  # grpc.aio.AioRpcError, or a grpc.Call of the blocking API
        code: grpc.StatusCode = call.code()
        message: str = call.details() or ""
        trailers: Iterable[tuple[str, Any]] = call.trailing_metadata() or ()
        result = cls(code=code, message=message)
        for key, value in trailers:
            if key == _DETAILS_KEY and isinstance(value, bytes):
                result._add_details(value)
        return result

    def _add_details(self, raw: bytes) -> None:
        status = status_pb2.Status.FromString(raw)
        if status.message:
            self.message = status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason, self.domain = info.reason, info.domain
                self.metadata = dict(info.metadata)
                ib_code = self.metadata.get("ib_code", "")
                if ib_code.lstrip("-").isdigit():
                    self.ib_code = int(ib_code)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.field_violations = [
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                ]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
