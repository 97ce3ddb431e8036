"""The order-event journal: what the order event log and the tracker keep across restarts.

:class:`OrderJournal` is the interface (a ``Protocol``) the order event log
(``orders/events.py``) and the tracker (``orders/tracker.py``) write to; a backend keeps

* the **epoch** of the log and its events, each a sequence number, an account, a time and
  the encoded ``StreamOrderEventsResponse`` (:meth:`~OrderJournal.append`,
  :meth:`~OrderJournal.read_after`), so a restarted gateway continues the same epoch and
  sequence;
* per order, what the events have reported so far (:meth:`~OrderJournal.put_order`,
  :meth:`~OrderJournal.orders`), so the reconciliation after a restart emits exactly what
  changed while the gateway was away, once.

Backends: :class:`SqliteJournal` (the all-in-one gateway: one SQLite file in WAL mode)
and :class:`MemoryJournal` (no persistence: a restart starts a new epoch). Writes made in
one pass of the event loop are committed together, before any stream sends them (see
:meth:`SqliteJournal._schedule_commit`), so an event a client has seen is on disk, and an
event and the order state that goes with it are never split by a crash.

A journal file that is not a valid journal is renamed aside (``*.corrupt-<time>``), one
written for other accounts too (``*.other-account-<time>``, see :meth:`claim_accounts`);
each with a log line at ERROR, never silently mixed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
DEFAULT_MAX_EVENTS = 100_000
DEFAULT_MAX_AGE_DAYS = 7.0
PRUNE_EVERY = 1_000  # appends between two retention passes


class JournalInUse(RuntimeError):
    """Another gateway process holds the journal file."""


@dataclass(frozen=True)
class JournaledEvent:
    """One event as a journal keeps it."""

    sequence: int
    account: str
    time: float  # UNIX seconds
    message: bytes  # an encoded StreamOrderEventsResponse


@dataclass(frozen=True)
class JournaledOrder:
    """What the events have reported about one order (the tracker's memory of it)."""

    key: str
    state: dict[str, object] = field(default_factory=dict)
    final: bool = False  # filled, cancelled or inactive: eligible for age retention


class OrderJournal(Protocol):
    """Where the order event log and the tracker keep their state.

    Kept small and stable: a JetStream backend (cluster/) implements the same methods.
    """

    @property
    def epoch(self) -> str:
        """The epoch of the events held (chosen when the journal was created)."""
        ...

    @property
    def last_sequence(self) -> int:
        """The newest sequence ever appended (0 for a new journal)."""
        ...

    @property
    def restored(self) -> bool:
        """True when the journal held state from an earlier run."""
        ...

    @property
    def pending(self) -> bool:
        """True while writes are not durable yet (a commit is queued on the event loop
        behind them); the event log holds new events back from streams until then."""
        ...

    def append(self, event: JournaledEvent) -> None:
        """Add the next event (``sequence`` is ``last_sequence + 1``)."""
        ...

    def read_after(self, sequence: int, limit: int) -> list[JournaledEvent]:
        """Up to ``limit`` held events with a greater sequence, oldest first."""
        ...

    def put_order(self, order: JournaledOrder) -> None:
        """Remember (replace) what was reported about one order."""
        ...

    def forget_orders(self, keys: Iterable[str]) -> None:
        """Drop orders the broker no longer reports."""
        ...

    def orders(self) -> list[JournaledOrder]:
        """Every order remembered."""
        ...

    def accounts(self) -> frozenset[str]:
        """The accounts whose events this journal holds (empty before the first connect)."""
        ...

    def claim_accounts(self, accounts: Iterable[str]) -> bool:
        """Record the login's accounts; False (and nothing recorded) when the journal
        belongs to other accounts: the caller sets it aside."""
        ...

    def flush(self) -> None:
        """Make every write so far durable."""
        ...

    def close(self) -> None: ...


def new_epoch(now: datetime | None = None) -> str:
    """A token naming one event log: its UTC creation time and 8 random hex digits."""
    moment = now or datetime.now(UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(4).hex()}"


class MemoryJournal:
    """No persistence: the epoch and sequence start afresh with every run."""

    def __init__(self, epoch: str | None = None) -> None:
        self._epoch = epoch or new_epoch()
        self._last = 0
        self._accounts: frozenset[str] = frozenset()

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_sequence(self) -> int:
        return self._last

    @property
    def restored(self) -> bool:
        return False

    @property
    def pending(self) -> bool:
        return False

    def append(self, event: JournaledEvent) -> None:
        self._last = event.sequence

    def read_after(self, sequence: int, limit: int) -> list[JournaledEvent]:
        return []  # the event log keeps its own copy in memory

    def put_order(self, order: JournaledOrder) -> None:
        pass

    def forget_orders(self, keys: Iterable[str]) -> None:
        pass

    def orders(self) -> list[JournaledOrder]:
        return []

    def accounts(self) -> frozenset[str]:
        return self._accounts

    def claim_accounts(self, accounts: Iterable[str]) -> bool:
        self._accounts = self._accounts | frozenset(accounts)
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY, account TEXT NOT NULL, time REAL NOT NULL,
    message BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE TABLE IF NOT EXISTS orders (
    key TEXT PRIMARY KEY, time REAL NOT NULL, final INTEGER NOT NULL, state TEXT NOT NULL);
"""


class SqliteJournal:
    """The journal in one SQLite file (WAL mode), held by one gateway process at a time.

    ``max_events`` and ``max_age_days`` bound what is kept: the newest events by count,
    none older than the age; finished orders older than the age are forgotten too.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_age_days: float = DEFAULT_MAX_AGE_DAYS,
    ) -> None:
        self.path = path
        self.max_events = max_events
        self.max_age = max_age_days * 86_400
        self._commit_scheduled = False
        self._appends = 0
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_file = self._lock(path)
        try:
            self._db = self._open_or_set_aside(path)
            self._epoch, self._last, self._restored = self._load_meta()
            self.prune()
            self._db.commit()
        except BaseException:
            self._unlock()
            raise
        log.info(
            "order journal %s: epoch %s, last sequence %d (%s)",
            path,
            self._epoch,
            self._last,
            "restored" if self._restored else "new",
        )

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _lock(path: Path) -> IO[bytes]:
        lock_file = open(path.with_name(path.name + ".lock"), "ab")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise JournalInUse(
                f"order journal {path} is in use by another gateway process; give each "
                "gateway its own IBGW_ORDER_JOURNAL"
            ) from None
        return lock_file

    def _unlock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def _open_or_set_aside(self, path: Path) -> sqlite3.Connection:
        try:
            return self._open(path)
        except sqlite3.DatabaseError as exc:
            aside = set_aside(path, "corrupt")
            log.error(
                "order journal %s is not a valid journal (%s): set aside as %s; starting a "
                "new journal (new epoch: clients re-sync with ListOrders)",
                path,
                exc,
                aside,
            )
            return self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed; an OS crash may
            # lose the last commits, which the reconciliation with TWS then re-derives.
            db.execute("PRAGMA synchronous=NORMAL")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is not None and version[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version[0]}")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _load_meta(self) -> tuple[str, int, bool]:
        db = self._db
        row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is None:
            epoch = new_epoch()
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (epoch,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('last_sequence', '0')")
            return epoch, 0, False
        last_row = db.execute("SELECT value FROM meta WHERE key='last_sequence'").fetchone()
        newest = db.execute("SELECT MAX(sequence) FROM events").fetchone()
        last = max(int(last_row[0]) if last_row else 0, int(newest[0] or 0))
        return str(row[0]), last, True

    # ------------------------------------------------------------------ interface

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_sequence(self) -> int:
        return self._last

    @property
    def restored(self) -> bool:
        return self._restored

    @property
    def pending(self) -> bool:
        return self._commit_scheduled

    def append(self, event: JournaledEvent) -> None:
        self._db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            (event.sequence, event.account, event.time, event.message),
        )
        self._last = event.sequence
        self._db.execute(
            "UPDATE meta SET value=? WHERE key='last_sequence'", (str(event.sequence),)
        )
        self._appends += 1
        if self._appends % PRUNE_EVERY == 0:
            self.prune()
        self._schedule_commit()

    def read_after(self, sequence: int, limit: int) -> list[JournaledEvent]:
        rows = self._db.execute(
            "SELECT sequence, account, time, message FROM events WHERE sequence > ? "
            "ORDER BY sequence LIMIT ?",
            (sequence, limit),
        ).fetchall()
        return [JournaledEvent(int(s), str(a), float(t), bytes(m)) for s, a, t, m in rows]

    def put_order(self, order: JournaledOrder) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?)",
            (order.key, time.time(), int(order.final), json.dumps(order.state)),
        )
        self._schedule_commit()

    def forget_orders(self, keys: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM orders WHERE key=?", [(k,) for k in keys])
        self._schedule_commit()

    def orders(self) -> list[JournaledOrder]:
        rows = self._db.execute("SELECT key, final, state FROM orders").fetchall()
        return [JournaledOrder(str(k), json.loads(s), bool(f)) for k, f, s in rows]

    def accounts(self) -> frozenset[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key='accounts'").fetchone()
        return frozenset(a for a in (row[0] if row else "").split(",") if a)

    def claim_accounts(self, accounts: Iterable[str]) -> bool:
        mine = frozenset(accounts)
        held = self.accounts()
        if held and mine and not held & mine:
            return False
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('accounts', ?)", (",".join(sorted(held | mine)),)
        )
        self.flush()
        return True

    def prune(self, now: float | None = None) -> None:
        """Apply the retention: the newest ``max_events`` events, none older than the
        age limit; finished orders not updated within the age limit."""
        oldest = (now or time.time()) - self.max_age
        self._db.execute(
            "DELETE FROM events WHERE sequence <= ? OR time < ?",
            (self._last - self.max_events, oldest),
        )
        self._db.execute("DELETE FROM orders WHERE final = 1 AND time < ?", (oldest,))

    def flush(self) -> None:
        self._commit_scheduled = False
        try:
            self._db.commit()
        except sqlite3.Error as exc:
            log.error(
                "order journal %s: commit failed (%s); events go on in memory", self.path, exc
            )

    def close(self) -> None:
        try:
            self.flush()
            self._db.close()
        finally:
            self._unlock()

    def _schedule_commit(self) -> None:
        """Commit once this pass of the event loop is over: every write of one IB
        callback (the events and the order state) lands in one transaction, before any
        stream task (woken later in the loop) sends the events."""
        if self._commit_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._db.commit()  # no loop (tools, tests): at once
            return
        self._commit_scheduled = True
        loop.call_soon(self.flush)


def set_aside(path: Path, why: str) -> Path:
    """Rename a journal (and its WAL files) out of the way; returns the new name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside
