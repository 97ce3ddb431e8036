"""A TWS / IB Gateway simulator that speaks the TWS API socket protocol.

The real ib_insync (or ib_async) connects to it unchanged. It imports nothing from the
gateway: it is a product of its own (``python -m tws_simulator``) as well as the gateway's
embedded default backend and the test double of every end-to-end test::

    async with TwsSimulator(SimulatorConfig(seed=1)) as sim:
        await ib.connectAsync(sim.host, sim.port, clientId=1)
"""

from .config import SimulatorConfig
from .server import Simulator

TwsSimulator = Simulator  # the public name: a running paper TWS

__all__ = ["Simulator", "SimulatorConfig", "TwsSimulator"]
