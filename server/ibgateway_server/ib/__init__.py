"""The IB session: the one ib_insync.IB, its connection management, the only ib_insync import."""
