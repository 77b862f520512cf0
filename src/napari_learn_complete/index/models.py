"""Which models an index has, which is active, and their weight versions: the ``models`` and
``model_versions`` tables, written only here.

The files (configuration, weights) belong to :mod:`napari_learn_complete.model.registry`, which
writes a file completely before the row that points to it; these rows decide what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import RefusedError

if TYPE_CHECKING:
    import sqlite3

    from .database import Database


@dataclass(frozen=True)
class ModelRecord:
    """A model row; ``config_path`` is relative to the index folder."""

    id: int
    name: str
    config_path: str
    active: bool
    active_version: int


@dataclass(frozen=True)
class VersionRecord:
    """A weight version row; ``file`` is relative to the index folder."""

    number: int
    file: str
    parent: int | None
    note: str
    created_at: str


class Models:
    """The ``models`` and ``model_versions`` tables of one index (``index.models``)."""

    def __init__(self, index: Database) -> None:
        self._index = index

    def list(self) -> list[ModelRecord]:
        """Every model, oldest first."""
        return [_model(r) for r in self._index._conn().execute("SELECT * FROM models ORDER BY id")]

    def find(self, name: str) -> ModelRecord | None:
        row = self._index._conn().execute(
            "SELECT * FROM models WHERE name = ?", (name,)).fetchone()
        return None if row is None else _model(row)

    def active(self) -> ModelRecord | None:
        row = self._index._conn().execute("SELECT * FROM models WHERE active = 1").fetchone()
        return None if row is None else _model(row)

    def versions(self, model_id: int) -> list[VersionRecord]:
        rows = self._index._conn().execute(
            "SELECT number, file, parent, note, created_at FROM model_versions "
            "WHERE model_id = ? ORDER BY number", (model_id,))
        return [VersionRecord(**dict(r)) for r in rows]

    def check_free(self, name: str) -> None:
        """Refuse ``name`` when a model has it (before costly work; :meth:`add` checks again
        under the write lock)."""
        _check_free(self._index._conn(), name)

    def add(self, name: str, place: Callable[[], None], *, config_path: str, first_version: str,
            note: str) -> int:
        """Register a model with its version 1 and make it the active model; returns its id.

        In one write transaction: the name is checked free, ``place()`` moves the model's files
        into place, and the rows are written; so two processes creating one name cannot both
        pass the check, and the loser never touches the winner's files.
        """
        with self._index._write() as conn:
            _check_free(conn, name)
            place()
            conn.execute("UPDATE models SET active = 0 WHERE active = 1")
            model_id = conn.execute(
                "INSERT INTO models(name, config_path, active, active_version) "
                "VALUES (?, ?, 1, 1)", (name, config_path),
            ).lastrowid
            conn.execute(
                "INSERT INTO model_versions(model_id, number, file, parent, note) "
                "VALUES (?, 1, ?, NULL, ?)", (model_id, first_version, note),
            )
            self._index._record_change("models", "added", [model_id])
        return model_id

    def add_version(self, model_id: int, place: Callable[[int], str], *, parent: int | None,
                    note: str) -> int:
        """Register the next weight version of a model and make it active; returns its number.

        The number is taken inside the write transaction that records it, and ``place(number)``
        (which moves the version's files to their final names and returns the weight file's
        path) runs inside it too: concurrent commits get distinct numbers and files.
        """
        with self._index._write() as conn:
            number = 1 + conn.execute(
                "SELECT COALESCE(MAX(number), 0) FROM model_versions WHERE model_id = ?",
                (model_id,)).fetchone()[0]
            conn.execute(
                "INSERT INTO model_versions(model_id, number, file, parent, note) "
                "VALUES (?, ?, ?, ?, ?)", (model_id, number, place(number), parent, note),
            )
            self._set_version(conn, model_id, number)
        return number

    def set_active_version(self, model_id: int, number: int) -> None:
        with self._index._write() as conn:
            self._set_version(conn, model_id, number)

    def activate(self, model_id: int) -> None:
        """Make ``model_id`` the index's active model (Learn and Complete use it)."""
        with self._index._write() as conn:
            conn.execute("UPDATE models SET active = 0 WHERE active = 1")
            conn.execute("UPDATE models SET active = 1 WHERE id = ?", (model_id,))
            self._index._record_change("models", "updated", [model_id])

    def _set_version(self, conn: sqlite3.Connection, model_id: int, number: int) -> None:
        conn.execute("UPDATE models SET active_version = ? WHERE id = ?", (number, model_id))
        self._index._record_change("models", "updated", [model_id])


def _check_free(conn: sqlite3.Connection, name: str) -> None:
    if conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None:
        raise RefusedError(f"a model named {name!r} already exists in the index; "
                           "choose another name")


def _model(row: sqlite3.Row) -> ModelRecord:
    return ModelRecord(id=row["id"], name=row["name"], config_path=row["config_path"],
                       active=bool(row["active"]), active_version=row["active_version"])
