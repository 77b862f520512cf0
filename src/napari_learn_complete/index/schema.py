"""SQLite schema of an index and its migrations.

The schema version lives in ``PRAGMA user_version``; :func:`migrate` brings an older database up to
:data:`SCHEMA_VERSION` inside one transaction, so an interrupted upgrade leaves the old schema.
A read-only index (a shared dataset on a read-only mount) cannot be upgraded: the migrations that
only add tables (:data:`TABLE_ONLY`) are made in each connection's TEMP schema instead, so it
reads as if upgraded; any other missing migration is refused by name.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import BadInputError, RefusedError

SCHEMA_VERSION = 4

log = logging.getLogger(__name__)

# Boxes are stored as pixel corners (x0, y0, x1, y1) of the image, NULL when the observation has
# no box. Keypoints are a JSON list of [x, y, v] in the order of the category's keypoint names,
# v following COCO: 0 not labelled, 1 labelled but hidden, 2 visible. NULL means "no keypoints".
_V1 = """
CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    frame       INTEGER,
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    channels    INTEGER NOT NULL DEFAULT 3,
    media       TEXT NOT NULL DEFAULT 'image' CHECK (media IN ('image', 'zarr', 'video')),
    added_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
);
CREATE TABLE categories (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    colour            TEXT NOT NULL,
    roi_enabled       INTEGER NOT NULL DEFAULT 1,
    keypoints_enabled INTEGER NOT NULL DEFAULT 0,
    keypoint_names    TEXT NOT NULL DEFAULT '[]',
    skeleton          TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE observations (
    id            INTEGER PRIMARY KEY,
    image_id      INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    category_id   INTEGER NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    x0 REAL, y0 REAL, x1 REAL, y1 REAL,
    keypoints     TEXT,
    iscrowd       INTEGER NOT NULL DEFAULT 0,
    source        TEXT NOT NULL DEFAULT 'human' CHECK (source IN ('human', 'model')),
    score         REAL,
    model_version TEXT,
    run_id        INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
    CHECK ((x0 IS NULL) = (x1 IS NULL) AND (x0 IS NULL) = (y0 IS NULL)
           AND (x0 IS NULL) = (y1 IS NULL)),
    CHECK (x0 IS NULL OR (x1 >= x0 AND y1 >= y0))
);
CREATE INDEX observations_image ON observations(image_id);
CREATE INDEX observations_category ON observations(category_id);
CREATE INDEX observations_run ON observations(run_id);
CREATE TABLE attributes (
    observation_id INTEGER NOT NULL REFERENCES observations(id) ON DELETE CASCADE,
    key            TEXT NOT NULL,
    value          TEXT NOT NULL,
    PRIMARY KEY (observation_id, key)
);
CREATE INDEX attributes_key_value ON attributes(key, value);
CREATE TABLE models (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    config_path    TEXT NOT NULL,
    active         INTEGER NOT NULL DEFAULT 0,
    active_version INTEGER,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
);
CREATE UNIQUE INDEX models_one_active ON models(active) WHERE active = 1;
CREATE TABLE model_versions (
    id         INTEGER PRIMARY KEY,
    model_id   INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    number     INTEGER NOT NULL,
    file       TEXT NOT NULL,
    parent     INTEGER,
    note       TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
    UNIQUE (model_id, number)
);
CREATE TABLE runs (
    id         INTEGER PRIMARY KEY,
    model_id   INTEGER REFERENCES models(id) ON DELETE SET NULL,
    operation  TEXT NOT NULL CHECK (operation IN ('learn', 'train', 'complete', 'accept')),
    kind       TEXT,
    scope      TEXT NOT NULL DEFAULT '{}',
    settings   TEXT NOT NULL DEFAULT '{}',
    losses     TEXT NOT NULL DEFAULT '[]',
    metrics    TEXT NOT NULL DEFAULT '{}',
    version    INTEGER,
    status     TEXT NOT NULL DEFAULT 'running',
    started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
    seconds    REAL
);
-- What a Complete/accept run changed, so it can be undone exactly: 'created' rows are deleted on
-- undo, 'updated'/'deleted' rows carry the observation as it was (JSON) and are restored.
CREATE TABLE run_changes (
    run_id         INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    observation_id INTEGER NOT NULL,
    action         TEXT NOT NULL CHECK (action IN ('created', 'updated', 'deleted')),
    before         TEXT
);
CREATE INDEX run_changes_run ON run_changes(run_id);
"""

# 2: whether a person has reviewed an image (the image table shows it and filters on it).
_V2 = "ALTER TABLE images ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0"

# 3: the process that runs each run (its id and machine), so a run whose process was killed can
# be told from one still going: the next open marks it interrupted and it can be undone.
_V3 = """
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN host TEXT
"""


def _v4(conn: sqlite3.Connection, schema: str) -> None:
    """4: the folders outside the index that images may be read from (its image roots), each
    registered by adding images from it by reference; a path of the database that leads anywhere
    else is refused. Images referenced before are kept readable: their folders become roots."""
    conn.execute(f"""
        CREATE TABLE {schema}.image_roots (
            id       INTEGER PRIMARY KEY,
            path     TEXT NOT NULL UNIQUE,  -- a folder, relative to the index as images.path
            added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
        )""")
    roots = sorted({os.path.dirname(path) for (path,) in conn.execute("SELECT path FROM images")
                    if _outside(path)})
    conn.executemany(f"INSERT INTO {schema}.image_roots(path) VALUES (?)",
                     [(root,) for root in roots])
    if roots:
        log.warning("image folders outside the index registered as its image roots: %s",
                    ", ".join(roots))


def _outside(path: str) -> bool:
    """Whether a path stored relative to the index folder (``images.path``) lies outside it."""
    return os.path.isabs(path) or os.path.normpath(path).split(os.sep)[0] == os.pardir


# A migration is SQL statements, or a function given the connection and the schema to write into
# ("main", or "temp" for a read-only index; see TABLE_ONLY).
Migration = str | Callable[[sqlite3.Connection, str], None]
MIGRATIONS: dict[int, Migration] = {1: _V1, 2: _V2, 3: _V3, 4: _v4}
TABLE_ONLY = frozenset({4})


def migrate(conn: sqlite3.Connection, *, read_only: Path | None = None) -> None:
    """Apply every migration above the database's ``user_version`` in one transaction.

    ``read_only`` (the folder, to name it) when the index cannot be written: the missing
    migrations are made in this connection's TEMP schema if they all only add tables, else the
    index is refused."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise BadInputError(
            f"this index was written by a newer napari-learn-complete (schema {current}, "
            f"this version reads up to {SCHEMA_VERSION}); upgrade the plugin to open it"
        )
    missing = range(current + 1, SCHEMA_VERSION + 1)
    if not missing:
        return
    if read_only is not None:
        if not TABLE_ONLY.issuperset(missing):
            raise RefusedError(
                f"the index folder is read-only and the index was written by an older "
                f"napari-learn-complete (schema {current}, this version needs "
                f"{SCHEMA_VERSION}); open it once where it can be written to upgrade it: "
                f"{read_only}"
            )
        for version in missing:
            _apply(conn, MIGRATIONS[version], "temp")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in missing:
            _apply(conn, MIGRATIONS[version], "main")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, migration: Migration, schema: str) -> None:
    if callable(migration):
        migration(conn, schema)
        return
    for statement in migration.split(";"):
        if statement.strip():
            conn.execute(statement)
