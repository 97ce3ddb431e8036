"""Generated Python stubs of the ibgateway API (package ibgateway.v1)."""
