"""Models of an index and their weight versions.

Layout::

    INDEX/models/<name>/config.json          the configuration of the active version (JSON)
    INDEX/models/<name>/versions/0001.pt     weight files (see ``build.save_weights``)

The database (tables ``models`` and ``model_versions``) says which versions exist and which is
active; a weight file is always written completely before the row that points to it, so a crash
leaves at worst an unreferenced file and the previous active version.

Reading the registry (models, versions, the active model, rollback) needs no torch, so napari's
process uses it; building, loading and saving weights import :mod:`.build` (torch) when called.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError, RefusedError
from ..index import Index
from .config import ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

CONFIG_FILE = "config.json"
VERSIONS_DIR = "versions"


@dataclass(frozen=True)
class ModelVersion:
    """One weight version; ``parent`` is the version it was trained from (None for the first)."""

    number: int
    file: Path
    parent: int | None
    note: str
    created_at: str
    active: bool


class ModelHandle:
    """A model registered in an index. ``config`` describes the active version (after
    :meth:`load`, the returned model, including categories added to the index since)."""

    def __init__(self, index: Index, row: sqlite3.Row) -> None:
        self.index = index
        self.id: int = row["id"]
        self.name: str = row["name"]
        self.folder = index.path / Path(row["config_path"]).parent
        self.config = ModelConfig.load(index.path / row["config_path"])
        self.active_version: int = row["active_version"]

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, version {self.active_version})"

    def supports(self, kind: str) -> bool:
        return self.config.supports(kind)

    def versions(self) -> list[ModelVersion]:
        rows = self.index.query(
            "SELECT * FROM model_versions WHERE model_id = ? ORDER BY number", (self.id,)
        )
        return [
            ModelVersion(
                number=r["number"], file=self.index.path / r["file"], parent=r["parent"],
                note=r["note"], created_at=r["created_at"],
                active=r["number"] == self.active_version,
            )
            for r in rows
        ]

    def version(self, number: int) -> ModelVersion:
        """A version by number; an unknown number is refused, naming the ones that exist."""
        versions = self.versions()
        for version in versions:
            if version.number == number:
                return version
        raise BadInputError(
            f"model {self.name!r} has no version {number} "
            f"(versions: {', '.join(str(v.number) for v in versions)})"
        )

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        """The active version's model on ``device`` in eval mode. Categories added to the index
        after that version was made get new class rows (the learned rows are kept)."""
        from .build import build_model

        file = self.version(self.active_version).file
        new = [c.name for c in self.index.categories() if c.name not in self.config.categories]
        config = replace(self.config, categories=[*self.config.categories, *new])
        model = build_model(config, file)  # class rows are matched by category name
        self.config = config
        return model.to(device).eval()

    def commit_version(
        self, model: nn.Module, config: ModelConfig, *, note: str = "", parent: int | None = None
    ) -> int:
        """Save ``model`` as the next version and make it active; returns its number.

        The weight file is written (atomically) first, then one transaction inserts the version
        and switches the active one; if anything fails the previous version stays active.
        """
        from .build import save_weights

        if config.name != self.name:
            raise BadInputError(
                f"configuration of model {config.name!r} given to model {self.name!r}"
            )
        parent = self.active_version if parent is None else parent
        number = 1 + max((v.number for v in self.versions()), default=0)
        file = self.folder / VERSIONS_DIR / f"{number:04d}.pt"
        save_weights(file, model, config, {"version": number, "parent": parent, "note": note})
        try:
            with self.index.transaction() as conn:
                conn.execute(
                    "INSERT INTO model_versions(model_id, number, file, parent, note) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (self.id, number, _relative(self.index, file), parent, note),
                )
                conn.execute(
                    "UPDATE models SET active_version = ? WHERE id = ?", (number, self.id)
                )
                config.save(self.folder / CONFIG_FILE)
                self.index.record_change("models", "updated", [self.id])
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        self.config, self.active_version = config, number
        return number

    def rollback(self, number: int) -> None:
        """Make an earlier (or later) existing version active again, with its configuration
        (read from the weight file: this loads torch)."""
        from .build import load_weights

        file = self.version(number).file
        _, config_dict, _ = load_weights(file)
        config = ModelConfig.from_dict(config_dict)
        with self.index.transaction() as conn:
            conn.execute("UPDATE models SET active_version = ? WHERE id = ?", (number, self.id))
            config.save(self.folder / CONFIG_FILE)
            self.index.record_change("models", "updated", [self.id])
        self.config, self.active_version = config, number


def models(index: Index) -> list[ModelHandle]:
    """Every model of the index, oldest first."""
    return [ModelHandle(index, row) for row in index.query("SELECT * FROM models ORDER BY id")]


def set_active_model(index: Index, name: str) -> ModelHandle:
    """Make another model of the index the active one (Learn and Complete use the active one)."""
    rows = index.query("SELECT id FROM models WHERE name = ?", (name,))
    if not rows:
        known = ", ".join(h.name for h in models(index)) or "none"
        raise BadInputError(f"{index.path}: no model named {name!r} (models: {known})")
    with index.transaction() as conn:
        conn.execute("UPDATE models SET active = 0 WHERE active = 1")
        conn.execute("UPDATE models SET active = 1 WHERE id = ?", (rows[0]["id"],))
        index.record_change("models", "updated", [rows[0]["id"]])
    return active_model(index)


def active_model(index: Index) -> ModelHandle:
    """The index's active model; :class:`RefusedError` when it has none."""
    rows = index.query("SELECT * FROM models WHERE active = 1")
    if not rows:
        raise RefusedError(
            f"{index.path}: the index has no model yet; create one "
            "(napari-learn-complete model create INDEX)"
        )
    return ModelHandle(index, rows[0])


def default_input_size(index: Index, min_size: int | None = None) -> tuple[int, int]:
    """``(min_size, max_size)`` suited to the index's images (see docs/models.md).

    min_size (unless given): the median short side rounded to a multiple of 32, kept within
    [320, 640]; small objects vanish when images are shrunk, and more than 640 is slow on a CPU.
    max_size: min_size times the median aspect ratio (long / short side), rounded up to 32 and at
    most twice min_size, so a typical image is scaled by its short side, not squeezed by its long.
    """
    sizes = [(r["width"], r["height"]) for r in index.query(
        "SELECT width, height FROM images WHERE media != 'video'"
    )]
    short = statistics.median(min(w, h) for w, h in sizes) if sizes else 320
    aspect = statistics.median(max(w, h) / min(w, h) for w, h in sizes) if sizes else 1.0
    if min_size is None:
        min_size = min(640, max(320, 32 * round(short / 32)))
    max_size = min(2 * min_size, 32 * math.ceil(min_size * aspect / 32))
    return min_size, max(min_size, max_size)


def create_model(
    index: Index,
    *,
    keypoints: bool = False,
    backbone: str = "mobilenet_v3_large_fpn",
    weights: str | Path = "none",
    name: str = "default",
    purpose: str = "locate",
    min_size: int | None = None,
) -> ModelHandle:
    """Create a model for the index's categories, save its initial weights as version 1 and make
    it the active model. With ``keypoints`` it predicts the ordered union of the keypoint names of
    the categories that have keypoints enabled. ``min_size`` None chooses it from the images."""
    categories = index.categories()
    keypoint_names: list[str] = []
    if keypoints:
        for category in categories:
            if category.keypoints_enabled:
                keypoint_names += [k for k in category.keypoint_names if k not in keypoint_names]
        if not keypoint_names:
            raise RefusedError(
                "a keypoint model needs a category with keypoints enabled; the index has none"
            )
    min_size, max_size = default_input_size(index, min_size)
    config = ModelConfig(
        name=name, purpose=purpose,
        architecture="keypointrcnn" if keypoints else "fasterrcnn", backbone=backbone,
        min_size=min_size, max_size=max_size,
        categories=[c.name for c in categories], keypoint_names=keypoint_names,
    )
    if index.query("SELECT 1 FROM models WHERE name = ?", (name,)):
        raise RefusedError(f"the index already has a model named {name!r}; choose another name")
    folder = index.models_dir / name
    if folder.exists():
        raise RefusedError(
            f"{folder}: exists but is not a model of the index; remove it or choose another name"
        )
    from .build import build_model, save_weights

    model = build_model(config, weights)
    source = str(weights)
    try:
        config.save(_mkdir(folder) / CONFIG_FILE)
        file = folder / VERSIONS_DIR / "0001.pt"
        save_weights(file, model, config, {"version": 1, "parent": None, "weights": source})
        with index.transaction() as conn:
            conn.execute("UPDATE models SET active = 0 WHERE active = 1")
            model_id = conn.execute(
                "INSERT INTO models(name, config_path, active, active_version) "
                "VALUES (?, ?, 1, 1)",
                (name, _relative(index, folder / CONFIG_FILE)),
            ).lastrowid
            conn.execute(
                "INSERT INTO model_versions(model_id, number, file, parent, note) "
                "VALUES (?, 1, ?, NULL, ?)",
                (model_id, _relative(index, file), f"initial weights: {source}"),
            )
            index.record_change("models", "added", [model_id])
    except BaseException:
        _remove_tree(folder)
        raise
    return active_model(index)


def _mkdir(folder: Path) -> Path:
    (folder / VERSIONS_DIR).mkdir(parents=True)
    return folder


def _remove_tree(folder: Path) -> None:
    """Undo a model folder this module just created (config and weight files only)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    if folder.exists():
        folder.rmdir()


def _relative(index: Index, path: Path) -> str:
    return path.relative_to(index.path).as_posix()

