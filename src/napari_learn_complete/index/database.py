"""The database under an index: one SQLite file, a connection per thread, transactions and the
listeners that hear every committed change. The store (:mod:`.store`) and the table modules
(:mod:`.runs`, :mod:`.models`) write through :meth:`Database._write`; nothing outside this package
sees the connection.

Every write is a transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``); a failure rolls the whole
operation back, so bad input leaves the index exactly as it was. Each thread gets its own
connection, so the UI thread and a worker read and write at once (WAL mode). Listeners registered
with :meth:`Database.subscribe` hear about every committed change, from whatever thread committed
it.

An index in a folder this process cannot write to (a shared dataset on a read-only mount) is
opened read-only: it reads as any other, and every write is refused naming the folder.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BadInputError, IndexLockedError, RefusedError
from .records import Change
from .schema import migrate

DB_NAME = "index.sqlite"

log = logging.getLogger(__name__)


class Database:
    """An index's SQLite file, brought up to the current schema when opened."""

    def __init__(self, file: Path, *, lock_timeout: float = 10.0) -> None:
        self.file = file
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self._listeners: list[Callable[[Change], None]] = []
        self._listeners_lock = threading.Lock()
        # Asked of the file system (a read-only mount answers no even to root), not learnt from
        # a failed write: SQLite cannot even open the file for writing there.
        self.read_only = not (os.access(file, os.W_OK) and os.access(file.parent, os.W_OK))
        try:
            self._conn()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise BadInputError(f"not a readable index database ({exc}): {file}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            try:  # per connection: a read-only index makes its missing tables in each one's TEMP
                migrate(conn, read_only=self.file.parent if self.read_only else None)
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            self._local.depth = 0
            self._local.pending = []
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            # With no -wal file the database file holds every commit, and opened immutable it
            # needs no -shm either (which the folder could not hold); with one, SQLite reads its
            # pages read-only.
            wal = self.file.with_name(self.file.name + "-wal").exists()
            conn = sqlite3.connect(
                f"{self.file.absolute().as_uri()}?{'mode=ro' if wal else 'immutable=1'}",
                uri=True, isolation_level=None, check_same_thread=True,
            )
        else:
            conn = sqlite3.connect(
                self.file,
                timeout=self.lock_timeout,
                isolation_level=None,
                check_same_thread=True,
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def check_writable(self) -> None:
        """Refuse to change a read-only index, before anything is done (a model's files are
        written before the rows that record them)."""
        if self.read_only:
            raise RefusedError(
                "the index folder is read-only: nothing can be changed in it (copy the index to a "
                f"writable folder to edit it): {self.file.parent}"
            )

    def close(self) -> None:
        """Close this thread's connection (other threads close theirs when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes (of the store and its tables) into one atomic commit: all or nothing.
        Nested calls join the outer transaction; listeners hear the changes after the outermost
        commit."""
        with self._write():
            yield

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """:meth:`transaction`, handing out the connection to this package's writers."""
        self.check_writable()
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise IndexLockedError(
                    f"the index is locked for writing by another process (waited "
                    f"{self.lock_timeout:g} s); close the other program and try again "
                    f"(index: {self.file.parent})"
                ) from exc
            raise
        self._local.depth = 1
        self._local.pending = []
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._local.pending = []
            raise
        finally:
            self._local.depth = 0
        pending, self._local.pending = self._local.pending, []
        for change in pending:
            self._emit(change)

    def _record_change(self, table: str, action: str, ids: Iterable[int]) -> None:
        """Queue a change for the listeners, told after the outermost commit (for the table
        modules of this package: runs, models)."""
        ids = tuple(int(i) for i in ids)
        if ids:
            self._local.pending.append(Change(table, action, ids))

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` after every commit; returns a function that unsubscribes.

        The callback runs in the committing thread: GUI code must hop to its own thread.
        """
        with self._listeners_lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def _emit(self, change: Change) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(change)
            except Exception:  # the change is committed: one broken view must not undo others
                log.exception("index listener %r failed on %s", callback, change)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Read-only SQL, for inspecting an index (tests, one-off scripts); the package itself
        reads through the methods of the store and its tables."""
        if sql.lstrip().split(None, 1)[0].upper() not in ("SELECT", "WITH", "PRAGMA"):
            raise BadInputError("Index.query reads only; write through the store's methods")
        return self._conn().execute(sql, params).fetchall()

    def announce(self, change: Change) -> None:
        """Tell this instance's listeners about a change another process committed (the engine
        process streams its changes back), as if it had been written here."""
        self._emit(change)
