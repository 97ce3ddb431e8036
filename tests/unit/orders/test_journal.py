"""SqliteJournal: epoch and sequence survive a reopen, retention by count and age, one
process at a time, other accounts refused, corrupt files set aside."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ibgateway_server.orders.journal import (
    JournaledEvent,
    JournaledOrder,
    JournalInUse,
    SqliteJournal,
)


def event(sequence: int, at: float | None = None) -> JournaledEvent:
    return JournaledEvent(sequence, "DU1", at if at is not None else time.time(), b"m%d" % sequence)


def test_reopen_continues_epoch_sequence_and_orders(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    first = SqliteJournal(path)
    assert not first.restored and first.last_sequence == 0
    for n in (1, 2, 3):
        first.append(event(n))
    first.put_order(JournaledOrder("42", {"status": 3, "fills": ["e1"]}))
    epoch = first.epoch
    first.close()
    again = SqliteJournal(path)
    assert again.restored and again.epoch == epoch and again.last_sequence == 3
    assert [e.sequence for e in again.read_after(1, 10)] == [2, 3]
    assert again.read_after(0, 10)[0].message == b"m1"
    assert again.orders() == [JournaledOrder("42", {"status": 3, "fills": ["e1"]}, False)]
    again.forget_orders(["42"])
    assert again.orders() == []
    again.close()


def test_retention_by_count_and_age(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3", max_events=3, max_age_days=1)
    old = time.time() - 2 * 86_400
    journal.append(event(1, old))
    for n in range(2, 7):
        journal.append(event(n))
    journal.put_order(JournaledOrder("1", {}, final=True))
    journal.put_order(JournaledOrder("2", {}, final=False))
    journal.prune(now=time.time() + 2 * 86_400)  # two days on: the finished order ages out
    assert [e.sequence for e in journal.read_after(0, 100)] == []
    assert [o.key for o in journal.orders()] == ["2"]
    assert journal.last_sequence == 6  # the sequence never goes back
    journal.close()
    counted = SqliteJournal(tmp_path / "k.sqlite3", max_events=3)
    for n in range(1, 8):
        counted.append(event(n))
    counted.prune()
    assert [e.sequence for e in counted.read_after(0, 100)] == [5, 6, 7]
    counted.close()
    assert SqliteJournal(tmp_path / "k.sqlite3").last_sequence == 7


def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    held = SqliteJournal(path)
    with pytest.raises(JournalInUse):
        SqliteJournal(path)
    held.close()
    SqliteJournal(path).close()


def test_accounts_are_claimed_once(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    assert journal.claim_accounts(["DU1"])
    assert journal.claim_accounts(["DU1", "DU2"])  # one in common: the same login grew
    assert not journal.claim_accounts(["U9"])
    assert journal.accounts() == frozenset({"DU1", "DU2"})
    journal.close()


def test_a_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    journal = SqliteJournal(path)
    assert not journal.restored
    assert len(list(tmp_path.glob("j.sqlite3.corrupt-*"))) == 1
    journal.close()


async def test_streams_send_an_event_only_once_it_is_committed(tmp_path: Path) -> None:
    import sqlite3

    from ibgateway.v1 import orders_pb2
    from ibgateway_server.orders.events import OrderEventLog

    path = tmp_path / "j.sqlite3"
    log = OrderEventLog(journal=SqliteJournal(path))
    stream = log.open_stream(after_sequence=0, epoch=log.epoch)
    opening = stream.next_message()  # "not connected to TWS yet"
    assert opening is not None and opening.WhichOneof("event") == "connection_state"
    log.append(orders_pb2.ORDER_EVENT_TYPE_ACKNOWLEDGED, orders_pb2.Order(client_order_id="k"))

    def on_disk() -> int:
        with sqlite3.connect(path) as other:
            return int(other.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    assert stream.next_message() is None and on_disk() == 0  # not committed yet
    await asyncio.sleep(0)  # one pass of the loop: the commit, then the streams
    message = stream.next_message()
    assert message is not None and message.order_event.sequence == 1
    assert on_disk() == 1
    stream.close()
    log.journal.close()


def test_a_failing_journal_does_not_stop_the_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ibgateway.v1 import orders_pb2
    from ibgateway_server.orders.events import OrderEventLog
    from ibgateway_server.orders.journal import MemoryJournal

    class FullDisk(MemoryJournal):
        def append(self, event: JournaledEvent) -> None:
            raise OSError("No space left on device")

    log = OrderEventLog(journal=FullDisk())
    stream = log.open_stream(after_sequence=0, epoch=log.epoch)
    stream.next_message()  # the opening connection state
    log.append(orders_pb2.ORDER_EVENT_TYPE_ACKNOWLEDGED, orders_pb2.Order(client_order_id="k"))
    message = stream.next_message()
    assert message is not None and message.order_event.sequence == 1
    assert any("cannot write event 1" in r.getMessage() for r in caplog.records)
