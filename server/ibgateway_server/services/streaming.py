"""What every server-streaming handler of the gateway shares."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc.aio


@contextlib.contextmanager
def quiet_if_client_left(context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
    """End the call quietly when a write failed because the client left (cancelled, timed
    out, disconnected): there is nobody to report to. Any other error propagates to the
    error-mapping interceptor."""
    try:
        yield
    except Exception:
        if context.cancelled() or context.done():
            return
        raise
