"""JSON encodings of the cluster's control messages (not the hot path: quotes travel as
Quote bytes): the owner's beacon (session status and state changes) and line demand."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from ibgateway.v1 import common_pb2
from ibgateway_server.ib.session import (
    SessionEvent,
    SessionState,
    SessionStatus,
    StateChange,
)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def status_to_json(status: SessionStatus) -> dict[str, Any]:
    return {
        "connected": status.connected,
        "state": status.state.value,
        "host": status.host,
        "port": status.port,
        "client_id": status.client_id,
        "server_version": status.server_version,
        "accounts": list(status.accounts),
        "connected_since": _time(status.connected_since),
        "last_error": status.last_error,
        "last_error_code": status.last_error_code,
        "reconnect_attempts": status.reconnect_attempts,
    }


def status_from_json(data: dict[str, Any]) -> SessionStatus:
    return SessionStatus(
        connected=bool(data["connected"]),
        state=SessionState(data["state"]),
        host=str(data["host"]),
        port=int(data["port"]),
        client_id=int(data["client_id"]),
        server_version=int(data["server_version"]),
        accounts=tuple(data["accounts"]),
        connected_since=_parse_time(data.get("connected_since")),
        last_error=str(data.get("last_error", "")),
        last_error_code=data.get("last_error_code"),
        reconnect_attempts=int(data.get("reconnect_attempts", 0)),
    )


def change_to_json(change: StateChange) -> dict[str, Any]:
    return {
        "event": change.event.value,
        "state": change.state.value,
        "message": change.message,
        "ib_code": change.ib_code,
        "resubscribe": change.resubscribe,
        "attempt": change.attempt,
        "retry_in": change.retry_in,
        "time": _time(change.time),
    }


def change_from_json(data: dict[str, Any]) -> StateChange:
    return StateChange(
        event=SessionEvent(data["event"]),
        state=SessionState(data["state"]),
        message=str(data.get("message", "")),
        ib_code=data.get("ib_code"),
        resubscribe=bool(data.get("resubscribe", False)),
        attempt=int(data.get("attempt", 0)),
        retry_in=data.get("retry_in"),
        time=_parse_time(data.get("time")) or datetime.now().astimezone(),
    )


def contract_to_text(contract: common_pb2.Contract) -> str:
    return base64.b64encode(contract.SerializeToString()).decode()


def contract_from_text(text: str) -> common_pb2.Contract:
    return common_pb2.Contract.FromString(base64.b64decode(text))


def bytes_to_text(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def bytes_from_text(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None
