"""Portfolio: accounts, their values and P&L, and positions valued with TWS's portfolio data."""
