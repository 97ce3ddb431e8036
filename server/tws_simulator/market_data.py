"""Market data requests (placeholder for the first increment)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Simulator


def install(sim: Simulator) -> None:
    pass
