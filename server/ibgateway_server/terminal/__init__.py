"""Terminal commands that are clients of a gateway: ``ibgw health`` (a probe for Docker
and Kubernetes) and the live views ``ibgw quotes`` / ``orders`` / ``positions``."""
