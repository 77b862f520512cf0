"""Models of an index and their weight versions.

Layout::

    INDEX/models/<name>/config.json          the model's configuration (JSON, editable)
    INDEX/models/<name>/versions/0001.pt     weight files (see ``build.save_weights``)
    INDEX/models/<name>/versions/0001.json   the configuration each version was saved with

The index (``index.models``: tables ``models`` and ``model_versions``) says which versions exist
and which is active; a version's files (and a new model's folder) are written completely under a
staging name (``.*.tmp``) and moved to their final name inside the write transaction that records
them, so a crash leaves at worst staging or unreferenced files and the previous active version,
and concurrent runs never take the same number or name. Every path taken from the database or a
model folder must lead, its symbolic links resolved, into ``INDEX/models``: an edited database or
a linked folder cannot make a model read or write anywhere else.

Reading the registry (models, versions, the active model, rollback) needs no torch, so napari's
process uses it; building, loading and saving weights import :mod:`.build` (torch) when called.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError, RefusedError
from ..index import Index
from ..index.models import ModelRecord
from .config import LIGHT_BOX_HEAD, LIGHT_KEYPOINT_HEAD, MODEL_CHOICES, ModelConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .pretrained import DownloadFn

CONFIG_FILE = "config.json"
VERSIONS_DIR = "versions"

log = logging.getLogger(__name__)


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
    """A model registered in an index. ``config`` describes its active version."""

    def __init__(self, index: Index, record: ModelRecord) -> None:
        self.index = index
        self.id = record.id
        self.name = record.name
        self.folder = self._inside(index.path / Path(record.config_path).parent, "folder")
        self.active_version = record.active_version
        self.config = ModelConfig.load(self._inside(self.folder / CONFIG_FILE, "configuration"))

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, version {self.active_version})"

    def supports(self, kind: str) -> bool:
        return self.config.supports(kind)

    def versions(self) -> list[ModelVersion]:
        return [
            ModelVersion(number=v.number, file=self._inside(self.index.path / v.file,
                                                            f"version {v.number}"),
                         parent=v.parent, note=v.note, created_at=v.created_at,
                         active=v.number == self.active_version)
            for v in self.index.models.versions(self.id)
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

    def load(self, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
        """The active version's model on ``device`` in eval mode, with the configuration it was
        built with: categories added to the index after that version was made get new class
        rows (the learned rows are kept, matched by name)."""
        from .build import build_model, place

        file = self.version(self.active_version).file
        new = [c.name for c in self.index.categories() if c.name not in self.config.categories]
        config = self.config.replace(categories=[*self.config.categories, *new])
        return place(build_model(config, file), device).eval(), config

    def commit_version(
        self, model: nn.Module, config: ModelConfig, *, note: str = "", parent: int | None = None
    ) -> int:
        """Save ``model`` as the next version and make it active; returns its number.

        The weight file and the version's configuration are written first under staging names of
        this call's own; then one write transaction takes the next number, moves them to their
        ``NNNN`` names and registers the version as active, so concurrent commits get distinct
        numbers. If anything fails the previous version stays active and no file of this commit
        is left (and no other run's file is touched).
        """
        from .build import save_weights

        if config.name != self.name:
            raise BadInputError(
                f"configuration of model {config.name!r} given to model {self.name!r}"
            )
        self.index.check_writable()
        versions = self._inside(self.folder / VERSIONS_DIR, "versions folder")
        parent = self.active_version if parent is None else parent
        token = secrets.token_hex(8)  # this commit's own staging names: no other run uses them
        staged = {suffix: versions / f".version-{token}{suffix}.tmp"
                  for suffix in (".pt", ".json")}
        placed: list[Path] = []

        def place(number: int) -> str:
            for suffix, path in staged.items():
                target = self._file(number, suffix)
                os.replace(path, target)
                placed.append(target)
            return _relative(self.index, placed[0])  # the weights (".pt" is staged first)

        try:
            save_weights(staged[".pt"], model, config, {"parent": parent, "note": note})
            config.save(staged[".json"])
            number = self.index.models.add_version(self.id, place, parent=parent, note=note)
        except BaseException:
            for path in staged.values():
                path.unlink(missing_ok=True)
            if placed:
                _remove_unclaimed(self.index, placed, lambda: any(
                    v.file == _relative(self.index, placed[0])
                    for v in self.index.models.versions(self.id)))
            raise
        self._activated(number, config)
        return number

    def rollback(self, number: int) -> None:
        """Make an earlier (or later) existing version active again, with its configuration."""
        self.version(number)  # an unknown number is refused, naming the versions there are
        config = self._version_config(number)
        self.index.models.set_active_version(self.id, number)
        self._activated(number, config)

    def _activated(self, number: int, config: ModelConfig) -> None:
        """After the commit (never inside it: a rolled-back commit must leave the configuration
        as it was), the version's configuration becomes the model's editable ``config.json``."""
        self.config, self.active_version = config, number
        config.save(self.folder / CONFIG_FILE)

    def _file(self, number: int, suffix: str) -> Path:
        return self._inside(_version_file(self.folder, number, suffix), f"version {number}")

    def _inside(self, path: Path, what: str) -> Path:
        return _inside_models(self.index, path, f"model {self.name!r}: its {what}")

    def _version_config(self, number: int) -> ModelConfig:
        """The configuration a version was saved with: its ``NNNN.json`` (no torch needed), or
        for versions made before those files existed, the copy inside the weight file."""
        own = self._file(number, ".json")
        if own.is_file():
            return ModelConfig.load(own)
        from .build import load_weights

        return ModelConfig.from_dict(load_weights(self._file(number, ".pt"))[1])


def models(index: Index) -> list[ModelHandle]:
    """Every model of the index, oldest first."""
    return [ModelHandle(index, record) for record in index.models.list()]


def set_active_model(index: Index, name: str) -> ModelHandle:
    """Make another model of the index the active one (Learn and Complete use the active one)."""
    record = index.models.find(name)
    if record is None:
        known = ", ".join(r.name for r in index.models.list()) or "none"
        raise BadInputError(f"no model named {name!r} (models: {known}) in the index {index.path}")
    index.models.activate(record.id)
    return active_model(index)


def active_model(index: Index) -> ModelHandle:
    """The index's active model; :class:`RefusedError` when it has none."""
    record = index.models.active()
    if record is None:
        raise RefusedError(
            "no model yet: create one in the Model panel, or with "
            "`napari-learn-complete model create INDEX`"
        )
    return ModelHandle(index, record)


def default_input_size(index: Index, min_size: int | None = None) -> tuple[int, int]:
    """``(min_size, max_size)`` suited to the index's images (see docs/models.md).

    min_size (unless given): the median short side rounded to a multiple of 32, kept within
    [320, 640]; small objects vanish when images are shrunk, and more than 640 is slow on a CPU.
    max_size: min_size times the median aspect ratio (long / short side), rounded up to 32 and at
    most twice min_size, so a typical image is scaled by its short side, not squeezed by its long.
    """
    sizes = [(image.width, image.height) for image in index.images() if not image.is_video]
    short = statistics.median(min(w, h) for w, h in sizes) if sizes else 320
    aspect = statistics.median(max(w, h) / min(w, h) for w, h in sizes) if sizes else 1.0
    if min_size is None:
        min_size = min(640, max(320, 32 * round(short / 32)))
    max_size = min(2 * min_size, 32 * math.ceil(min_size * aspect / 32))
    return min_size, max(min_size, max_size)


def create_model(
    index: Index,
    *,
    choice: str = "fast",
    keypoints: bool | None = None,
    backbone: str | None = None,
    weights: str | Path = "coco",
    name: str = "default",
    purpose: str = "locate",
    min_size: int | None = None,
    download: DownloadFn | None = None,
    seed: int = 0,
) -> ModelHandle:
    """Create a model for the index's categories, save its initial weights as version 1 and make
    it the active model.

    ``choice`` is one of :data:`MODEL_CHOICES` (fast, balanced, accurate, keypoints);
    ``keypoints`` (default: the choice's) makes it predict the ordered union of the keypoint
    names of the categories that have keypoints enabled, on the choice's backbone unless
    ``backbone`` names another. ``weights``: ``"coco"`` (torchvision's, downloaded once, progress
    to ``download``), ``"imagenet"`` (backbone only), ``"none"`` (random) or a weight file of
    ours. ``min_size`` None chooses it from the images. ``seed`` draws what the weights leave
    random (see :func:`.build.build_model`). Nothing is written when the weights cannot be had.
    """
    if choice not in MODEL_CHOICES:
        raise BadInputError(f"model choice {choice!r} is not one of {', '.join(MODEL_CHOICES)}")
    picked = MODEL_CHOICES[choice]
    if keypoints is None:
        keypoints = picked.architecture == "keypointrcnn"
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
    backbone = backbone or picked.backbone
    saved = _saved_config(weights)
    config = ModelConfig(
        name=name, purpose=purpose,
        architecture="keypointrcnn" if keypoints else "fasterrcnn",
        backbone=backbone,
        min_size=min_size, max_size=max_size,
        categories=[c.name for c in categories], keypoint_names=keypoint_names,
        keypoint_head=_keypoint_head(backbone, saved) if keypoints else None,
        box_head=_box_head(weights, saved),
        backbone_trained=weights != "none" if saved is None else saved.backbone_trained,
        backbone_pretrained=weights != "none" if saved is None else saved.backbone_pretrained,
    )
    index.check_writable()
    index.models.check_free(name)  # refused before the costly build; checked again under lock
    folder = _inside_models(index, index.models_dir / name, f"model {name!r}: its folder")
    if folder.exists():
        raise RefusedError(_stray_folder(folder))
    from .build import build_model, save_weights

    model = build_model(config, weights, download, seed=seed)
    source = str(weights)
    # Built in a folder of this call's own, moved to its name only under the write lock.
    staging = index.models_dir / f".model-{secrets.token_hex(8)}.tmp"
    staging.mkdir()
    placed: list[Path] = []

    def place() -> None:
        if folder.exists():
            raise RefusedError(_stray_folder(folder))
        staging.rename(folder)
        placed.append(folder)

    try:
        (staging / VERSIONS_DIR).mkdir()
        file = _version_file(staging, 1, ".pt")
        save_weights(file, model, config, {"version": 1, "parent": None, "weights": source,
                                            "seed": seed})
        config.save(_version_file(staging, 1, ".json"))
        config.save(staging / CONFIG_FILE)
        index.models.add(name, place, config_path=_relative(index, folder / CONFIG_FILE),
                         first_version=_relative(index, _version_file(folder, 1, ".pt")),
                         note=f"initial weights: {source}")
    except BaseException:
        if not placed:
            _remove_tree(staging)
        else:
            _remove_unclaimed(index, placed, lambda: index.models.find(name) is not None)
        raise
    return active_model(index)


def _saved_config(weights: str | Path) -> ModelConfig | None:
    """The configuration in a weight file of ours; None for torchvision's weights or random."""
    if isinstance(weights, str) and weights in ("coco", "imagenet", "none"):
        return None
    from .build import load_ours

    return load_ours(Path(weights))[1]


def _keypoint_head(backbone: str, saved: ModelConfig | None) -> list[int] | None:
    """A weight file's keypoint head; else torchvision's on ResNet-50 FPN, whose COCO keypoint
    weights fill it, and the light one on backbones without COCO keypoint weights."""
    if saved is not None:
        return saved.keypoint_head
    return None if backbone == "resnet50_fpn" else list(LIGHT_KEYPOINT_HEAD)


def _box_head(weights: str | Path, saved: ModelConfig | None) -> int | None:
    """A weight file's box head; else torchvision's where COCO weights fill it, and the light
    one where it starts from random weights (random or ImageNet start)."""
    if saved is not None:
        return saved.box_head
    return None if isinstance(weights, str) and weights == "coco" else LIGHT_BOX_HEAD


def _stray_folder(folder: Path) -> str:
    return ("a folder of that name exists but is not a model of the index; remove it or choose "
            f"another name: {folder}")


def _remove_unclaimed(index: Index, paths: list[Path], claimed: Callable[[], bool]) -> None:
    """Undo what a failed commit had moved into place. Under the write lock and only while no
    row claims it: once the lock was released, another run may have put its own files there."""
    try:
        with index.transaction():
            if not claimed():
                for path in paths:
                    _remove_tree(path) if path.is_dir() else path.unlink(missing_ok=True)
    except Exception:  # left unreferenced (harmless): the commit's own error is the one to raise
        log.warning("files of a failed commit left in place: %s", paths, exc_info=True)


def _version_file(folder: Path, number: int, suffix: str) -> Path:
    """``versions/NNNN.pt`` (weights) or ``versions/NNNN.json`` (configuration) of a model."""
    return folder / VERSIONS_DIR / f"{number:04d}{suffix}"


def _remove_tree(folder: Path) -> None:
    """Undo a model folder this module just created (config and weight files only)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    if folder.exists():
        folder.rmdir()


def _inside_models(index: Index, path: Path, what: str) -> Path:
    """``path`` with its symbolic links resolved; refused (before anything is read or written)
    unless it lies inside the index's models folder (a linked ``models/`` itself leads out)."""
    resolved = path.resolve()
    if resolved == index.models_dir or not resolved.is_relative_to(index.models_dir):
        raise RefusedError(
            f"{what} leads outside the index's models folder (a symbolic link or an edited "
            f"index database), so nothing is read or written there: {path} -> {resolved}"
        )
    return resolved


def _relative(index: Index, path: Path) -> str:
    return path.relative_to(index.path).as_posix()

