"""Server interceptors: error mapping, access logging and Prometheus metrics.

Order on the server (outermost first): metrics → access log → error mapping → auth
(when tokens are configured) → request checks → servicer.
The request checks decode the request bytes themselves (grpc's own decoding would fail
before any interceptor runs: the call would be neither logged nor counted), refuse what
does not decode (``MALFORMED_REQUEST``) or is too large, and apply the declared field
rules (``api/request_rules.py``) once, before any servicer.
The error mapper turns every exception into a rich google.rpc.Status (never UNKNOWN,
never a traceback); the outer two observe the final code through a per-call
:class:`RpcOutcome` kept in a context variable (interceptors and the handler share one
contextvars.Context per call).
"""

from __future__ import annotations

from ibgateway_server.api.interceptors.access_log import AccessLogInterceptor
from ibgateway_server.api.interceptors.admission import (
    AdmissionInterceptor,
    AdmissionLimits,
    client_identity,
)
from ibgateway_server.api.interceptors.auth import (
    ADMIN_METHODS,
    TRADE_METHODS,
    AuthInterceptor,
    required_scope,
)
from ibgateway_server.api.interceptors.base import RpcOutcome, split_method
from ibgateway_server.api.interceptors.error_mapping import ErrorMappingInterceptor
from ibgateway_server.api.interceptors.metrics import GatewayMetrics, MetricsInterceptor
from ibgateway_server.api.interceptors.request_check import (
    DEFAULT_MAX_REQUEST_BYTES,
    RequestCheckInterceptor,
)

__all__ = [
    "ADMIN_METHODS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "TRADE_METHODS",
    "AccessLogInterceptor",
    "AdmissionInterceptor",
    "AdmissionLimits",
    "AuthInterceptor",
    "ErrorMappingInterceptor",
    "GatewayMetrics",
    "MetricsInterceptor",
    "RequestCheckInterceptor",
    "RpcOutcome",
    "client_identity",
    "required_scope",
    "split_method",
]
