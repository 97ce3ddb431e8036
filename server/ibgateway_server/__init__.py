"""ibgateway_server: the gRPC gateway to Interactive Brokers (server side)."""
