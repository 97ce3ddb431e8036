"""Scale-out over NATS: one owner holds the IB session, any number of edges serve clients.

* :mod:`.subjects`: every subject, stream and bucket name of a cluster.
* :mod:`.lease`: the owner lease in a NATS KV bucket (one owner talks to IB; fencing by
  the lease's revision).
* :mod:`.owner`: what the lease holder does besides being an ordinary gateway: publish
  each quote update once (pre-encoded Quote bytes, one subject per line), keep the
  edges' line demand as leases, answer forwarded calls, announce its session.
* :mod:`.edge`: the edge's stand-ins for the IB session and IB's market data (so the
  ordinary QuoteHub and servicers run on an edge), and the forwarding of calls.
* :mod:`.forwarding`: calls that need IB, edge → owner over NATS request/reply.

The all-in-one gateway imports nothing from here.
"""
