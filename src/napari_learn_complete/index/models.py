"""Which models an index has, which is active, and their weight versions: the ``models`` and
``model_versions`` tables, written only here.

The files (configuration, weights) belong to :mod:`napari_learn_complete.model.registry`, which
writes a file completely before the row that points to it; these rows decide what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    def add(self, name: str, *, config_path: str, first_version: str, note: str) -> int:
        """Register a model with its version 1 and make it the active model; returns its id."""
        with self._index._write() as conn:
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

    def add_version(self, model_id: int, number: int, *, file: str, parent: int | None,
                    note: str) -> None:
        """Register a weight version of a model and make it active (a number already taken is
        refused by the table)."""
        with self._index._write() as conn:
            conn.execute(
                "INSERT INTO model_versions(model_id, number, file, parent, note) "
                "VALUES (?, ?, ?, ?, ?)", (model_id, number, file, parent, note),
            )
            self._set_version(conn, model_id, number)

    def next_version(self, model_id: int) -> int:
        """The number the next version will get (to name its file before it is registered)."""
        return 1 + max((v.number for v in self.versions(model_id)), default=0)

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


def _model(row: sqlite3.Row) -> ModelRecord:
    return ModelRecord(id=row["id"], name=row["name"], config_path=row["config_path"],
                       active=bool(row["active"]), active_version=row["active_version"])
