"""A TWS / IB Gateway simulator that speaks the TWS API socket protocol.

The real ib_insync (or ib_async) connects to it unchanged. It imports nothing from the
gateway: it is a product of its own (``python -m tws_simulator``) as well as the gateway's
embedded default backend and the test double of every end-to-end test.
"""
