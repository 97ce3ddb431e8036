"""The order side of the simulator (placeholder: helper SIM-ORDERS provides the real one).

``install(sim)`` is called once when a :class:`~tws_simulator.server.Simulator` is built;
it registers the order request handlers over the defaults of ``session.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Simulator


def install(sim: Simulator) -> None:
    pass
