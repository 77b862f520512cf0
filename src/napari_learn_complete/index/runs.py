"""The history of an index: one ``runs`` row per Learn, training, Complete or accept, and for the
runs that write observations a journal (``run_changes``) that lets them be undone exactly.

This module is the only writer of both tables. A run is started as 'running', recording the
process that runs it (pid and host), and finished as 'done', 'cancelled' or 'failed'. A run whose
process died is ended by whoever supervised it (:meth:`Runs.end_interrupted`), or else as
'interrupted' by the next open of the index or the next run started on this machine
(:meth:`Runs.end_orphaned`), so a killed Complete can always be undone. Learns (and trainings)
are serialised: one starts only while no other runs with a live process. Every change is
announced to the index's listeners, so a Model panel shows a cancelled Learn as soon as one that
succeeded.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, Cancelled, IndexLockedError, RefusedError

if TYPE_CHECKING:
    from .database import Database

log = logging.getLogger(__name__)

UNDOABLE = ("complete", "accept")  # the operations that write observations and can be undone
STATUSES = ("running", "done", "cancelled", "failed", "interrupted", "undone")
SERIAL = ("learn", "train")  # the operations that write model versions: one at a time per index
# How long a run whose end met the write lock keeps trying to record it (see Runs.finish).
FINISH_LATER_S = 600.0
_FINISH = ("UPDATE runs SET status = ?, seconds = ?, metrics = ?, "
           "losses = COALESCE(?, losses), version = COALESCE(?, version) WHERE id = ?")


@dataclass(frozen=True)
class Run:
    """One run as recorded: its JSON columns decoded."""

    id: int
    model_id: int | None
    operation: str
    kind: str | None
    scope: dict[str, Any]
    settings: dict[str, Any]
    losses: list[float]
    metrics: dict[str, Any]
    version: int | None
    status: str
    started_at: str
    seconds: float | None
    pid: int | None = None  # the process that ran it, on ``host``; None for runs before schema 3
    host: str | None = None

    @property
    def undoable(self) -> bool:
        """A finished Complete or accept run (even a cancelled or failed one: what it committed
        stays until undone)."""
        return self.operation in UNDOABLE and self.status not in ("running", "undone")


class Runs:
    """The ``runs`` and ``run_changes`` tables of one index (``index.runs``)."""

    def __init__(self, index: Database) -> None:
        self._index = index

    # ------------------------------------------------------------------ records
    def start(self, operation: str, *, model_id: int | None, kind: str | None,
              scope: Mapping[str, Any], settings: Mapping[str, Any]) -> int:
        """Record a run as 'running'; returns its id. Listeners hear ``Change('runs', 'added')``:
        a supervisor learns which runs a job started.

        A Learn or training is refused while another one runs with a live process: the check and
        the insert are one write transaction, so two processes cannot both pass it.
        """
        self.end_orphaned()
        with self._index._write() as conn:
            if operation in SERIAL:
                self._refuse_if_learning(conn)
            run_id = conn.execute(
                "INSERT INTO runs(model_id, operation, kind, scope, settings, status, pid, host) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (model_id, operation, kind, json.dumps(scope), json.dumps(settings),
                 os.getpid(), socket.gethostname()),
            ).lastrowid
            self._index._record_change("runs", "added", [run_id])
        return run_id

    def finish(self, run_id: int, status: str, *, seconds: float,
               metrics: Mapping[str, Any] | None = None, losses: list[float] | None = None,
               version: int | None = None) -> None:
        """Record how a run ended ('done', 'cancelled', 'failed') with what it measured.

        When the write lock is held too long (often the very lock that stopped the run), the
        end is recorded in the background as soon as the lock is free, for up to
        ``FINISH_LATER_S``, and :class:`IndexLockedError` is raised: a long-lived process (the
        engine) would otherwise leave the run 'running', which undo refuses, until it exits."""
        if status not in STATUSES:
            raise BadInputError(f"run status must be one of {', '.join(STATUSES)}, not {status!r}")
        values = (status, seconds, json.dumps(dict(metrics or {})),
                  None if losses is None else json.dumps(losses), version, run_id)
        try:
            with self._index._write() as conn:
                conn.execute(_FINISH, values)
                self._index._record_change("runs", "updated", [run_id])
        except IndexLockedError:
            threading.Thread(target=_finish_later, args=(self._index.file, values),
                             name=f"napari-learn-complete-finish-run-{run_id}",
                             daemon=True).start()
            raise

    def end_on_error(self, run_id: int, error: BaseException, *, seconds: float,
                     metrics: Mapping[str, Any] | None = None,
                     losses: list[float] | None = None) -> str:
        """Record the end of a run that ``error`` stopped: 'cancelled' for :class:`Cancelled`,
        else 'failed' (returned). Never hides ``error``: when the end cannot be recorded (often
        the lock or the full disk that stopped the run), that is logged, and :meth:`finish`
        records it later or the next open of the index does."""
        status = "cancelled" if isinstance(error, Cancelled) else "failed"
        try:
            self.finish(run_id, status, seconds=seconds, metrics=metrics, losses=losses)
        except Exception:
            log.warning("run %d could not be marked %s", run_id, status, exc_info=True)
        return status

    def end_interrupted(self, run_ids: Iterable[int], status: str) -> list[int]:
        """Mark the runs among ``run_ids`` still 'running' as ``status``: their process is gone
        (killed, crashed, stopped on cancel), so nobody else will. A run already found
        'interrupted' (an open of the index saw its process gone) takes the supervisor's status,
        which says why. Returns the ids marked; a cancelled or failed Complete can then be
        undone."""
        ids = [int(i) for i in run_ids]
        with self._index._write() as conn:
            marked = [i for i in ids if conn.execute(
                "UPDATE runs SET status = ? WHERE id = ? AND status IN ('running', 'interrupted') "
                "AND status != ?", (status, i, status)
            ).rowcount]
            self._index._record_change("runs", "updated", marked)
        return marked

    def end_orphaned(self) -> list[int]:
        """Mark as 'interrupted' the running runs of this machine whose process is gone (killed,
        out of memory): nobody else would end them, and undo refuses a running run. Returns the
        ids marked.

        Runs of other machines cannot be checked and runs recorded before schema 3 (no pid) are
        left as they are: a process of an older version may still hold them.
        """
        rows = self._index._conn().execute(
            "SELECT id, pid FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL",
            (socket.gethostname(),),
        ).fetchall()
        orphans = [row["id"] for row in rows if not process_alive(row["pid"])]
        return self.end_interrupted(orphans, "interrupted") if orphans else []

    def _refuse_if_learning(self, conn: sqlite3.Connection) -> None:
        """Refuse a second Learn or training while one runs with a live process (or on another
        machine, where its process cannot be checked)."""
        here = socket.gethostname()
        for row in conn.execute(
            "SELECT id, operation, pid, host FROM runs WHERE status = 'running' AND pid IS NOT "
            "NULL AND operation IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(SERIAL),),
        ):
            if row["host"] != here or process_alive(row["pid"]):
                what = "Learn" if row["operation"] == "learn" else "training"
                where = "" if row["host"] == here else f" on {row['host']}"
                raise RefusedError(
                    f"a {what} is already running on this index (run {row['id']}, process "
                    f"{row['pid']}{where}): wait for it to end or cancel it"
                )

    def get(self, run_id: int) -> Run:
        found = self._select("WHERE id = ?", (run_id,))
        if not found:
            raise BadInputError(f"no run {run_id} in the index")
        return found[0]

    def list(self, *, model_id: int | None = None,
             operations: Iterable[str] | None = None) -> list[Run]:
        """Runs, newest first, of one model and of some operations when given."""
        where, params = ["WHERE 1"], []
        if model_id is not None:
            where.append("AND model_id = ?")
            params.append(model_id)
        if operations is not None:
            where.append("AND operation IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(operations)))
        return self._select(" ".join(where), params)

    def latest_undoable(self) -> Run | None:
        """The newest Complete or accept run not undone yet (the console's default undo)."""
        return next((run for run in self.list(operations=UNDOABLE) if run.undoable), None)

    def _select(self, where: str, params: Any) -> list[Run]:
        rows = self._index._conn().execute(
            f"SELECT * FROM runs {where} ORDER BY id DESC", params).fetchall()
        return [_run(row) for row in rows]

    # ------------------------------------------------------------------ journal
    def observation_ids(self, run_id: int) -> list[int]:
        """The observations a Complete or accept run created, changed or deleted."""
        return [int(r[0]) for r in self._index._conn().execute(
            "SELECT DISTINCT observation_id FROM run_changes WHERE run_id = ?", (run_id,))]

    def snapshot(self, obs_id: int) -> dict[str, Any] | None:
        """The stored row of an observation and its attribute rows (with their rowids), as JSON
        gives it back: enough to compare it and to put it back byte for byte. None when absent."""
        return self.snapshots([obs_id])[obs_id]

    def snapshots(self, ids: Iterable[int]) -> dict[int, dict[str, Any] | None]:
        """:meth:`snapshot` of many observations in two queries: a Complete journals thousands
        of them, and one query pair each was most of its write time. Columns hold numbers, text
        and NULL, and attributes are built as lists, so the states are as JSON gives them back."""
        found: dict[int, dict[str, Any] | None] = dict.fromkeys(int(i) for i in ids)
        if not found:
            return found
        conn = self._index._conn()
        wanted = (json.dumps(list(found)),)
        attributes: dict[int, list[list[Any]]] = {}
        for rowid, obs_id, key, value in conn.execute(
            "SELECT rowid, observation_id, key, value FROM attributes "
            "WHERE observation_id IN (SELECT value FROM json_each(?)) ORDER BY rowid", wanted,
        ):
            attributes.setdefault(obs_id, []).append([rowid, key, value])
        for row in conn.execute(
            "SELECT * FROM observations WHERE id IN (SELECT value FROM json_each(?))", wanted,
        ):
            found[row["id"]] = {"row": dict(row), "attributes": attributes.get(row["id"], [])}
        return found

    def journal(self, run_id: int, before: Mapping[int, dict[str, Any] | None]) -> None:
        """Write one journal row per observation a run changed, holding its state before (a
        :meth:`snapshot`, None for one the run created) and after. Called inside the run's
        transaction; an id freed by a deletion and reused by a new observation is one row, so
        undo puts the old one back."""
        after = self.snapshots(before)
        with self._index._write() as conn:
            conn.executemany(
                "INSERT INTO run_changes(run_id, observation_id, action, before) "
                "VALUES (?, ?, ?, ?)",
                [(run_id, obs_id, _action(state, after[obs_id]),
                  json.dumps({"before": state, "after": after[obs_id]}))
                 for obs_id, state in before.items()],
            )

    def undo(self, run_id: int) -> int:
        """Put every observation a Complete or accept run changed back as it was before the run.

        Refused (nothing changed) when one of them was edited or deleted after the run: undo the
        later work first. The run stays in the history with status "undone". Returns how many
        observations were restored or removed.
        """
        run = self.get(run_id)
        if run.operation not in UNDOABLE:
            raise RefusedError(
                f"run {run_id} is a {run.operation} run; only Complete and accept runs can be "
                "undone (roll back the model version instead)"
            )
        if not run.undoable:
            raise RefusedError(f"run {run_id} is {run.status}: nothing to undo")
        conn = self._index._conn()
        changes = conn.execute(
            "SELECT observation_id, before FROM run_changes WHERE run_id = ? ORDER BY rowid DESC",
            (run_id,),
        ).fetchall()
        columns = {r[1] for r in conn.execute("PRAGMA table_info(observations)")}
        events: dict[str, list[int]] = {"deleted": [], "updated": [], "added": []}
        now = self.snapshots(obs_id for obs_id, _ in changes)
        undone: set[int] = set()  # an id journaled twice (freed, then reused) is read again
        with self._index._write():  # a refusal half-way rolls everything back
            for obs_id, record in changes:
                states = json.loads(record)
                current = self.snapshot(obs_id) if obs_id in undone else now[obs_id]
                undone.add(obs_id)
                if current != states["after"]:
                    raise RefusedError(
                        f"cannot undo run {run_id}: observation {obs_id} was changed after the "
                        "run (undo later runs or edits first)"
                    )
                conn.execute("DELETE FROM observations WHERE id = ?", (obs_id,))
                if states["before"] is not None:
                    self._restore(states["before"], columns)
                events[_UNDONE[_action(states["before"], states["after"])]].append(obs_id)
            conn.execute("UPDATE runs SET status = 'undone' WHERE id = ?", (run_id,))
            self._index._record_change("runs", "updated", [run_id])
            for action, ids in events.items():
                self._index._record_change("observations", action, ids)
        return len(changes)

    def _restore(self, snapshot: dict[str, Any], columns: set[str]) -> None:
        row = snapshot["row"]
        if not set(row) <= columns:
            raise BadInputError(f"run record of observation {row.get('id')} has unknown columns")
        names = list(row)
        conn = self._index._conn()
        conn.execute(
            f"INSERT INTO observations({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            [row[n] for n in names],
        )
        for rowid, key, value in snapshot["attributes"]:
            taken = conn.execute("SELECT 1 FROM attributes WHERE rowid = ?", (rowid,)).fetchone()
            conn.execute(
                "INSERT INTO attributes(rowid, observation_id, key, value) VALUES (?, ?, ?, ?)",
                (None if taken else rowid, row["id"], key, value),
            )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie, killed and not yet reaped,
    does not). A pid reused by a new process reads as alive: its run stays 'running' until that
    process ends too, the safe side of a rare mistake. Where signals cannot probe a process
    (Windows, where ``os.kill`` would end it), every process counts as alive."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill's answer stands
        return True


def _run(row: Any) -> Run:
    values = dict(row)
    for key in ("scope", "settings", "losses", "metrics"):
        values[key] = json.loads(values[key])
    return Run(**values)


def _action(before: Any, after: Any) -> str:
    """What a run did to an observation, from its states before and after."""
    return "created" if before is None else "deleted" if after is None else "updated"


_UNDONE = {"created": "deleted", "deleted": "added", "updated": "updated"}  # undo's event


def _finish_later(file: Any, values: tuple) -> None:
    """Record a run's end through a connection of its own that waits for the write lock."""
    try:
        conn = sqlite3.connect(file, timeout=FINISH_LATER_S, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_FINISH + " AND status = 'running'", values)
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as exc:  # still locked, or the index is gone: the next open ends it
        log.warning("the end of run %s could not be recorded: %s", values[-1], exc)
