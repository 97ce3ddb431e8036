"""Orders: the order book (idempotency keys), the order tracker, the event log and conversions."""
