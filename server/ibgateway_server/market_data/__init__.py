"""Market data: quote lines shared between streams (the hub) and their conversions."""
