"""``ibgw health``: the gRPC health check of a gateway, as a command (exit 0 = SERVING),
for Docker's HEALTHCHECK and Kubernetes exec probes: it follows the gateway's configured
address and TLS, so it needs no extra binary and no flags in the usual case."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ibgateway_server.terminal.target import Target


def check_health(target: Target, service: str, timeout: float) -> tuple[bool, str]:
    """(serving, one line saying what was found)."""
    where = f"{target.address}{' (TLS)' if target.uses_tls else ''}"
    name = service or "the process"
    with target.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout,
                metadata=target.metadata(),
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            label = code.name if code is not None else "ERROR"
            return False, f"{where}: {name}: {label}: {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{where}: {name}: {status}"
