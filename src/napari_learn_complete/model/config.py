"""Model configuration: what a model detects, how it is built, trained and run.

A configuration is saved as human-readable JSON (``INDEX/models/<name>/config.json``) so a person
can read and edit it; :meth:`ModelConfig.from_dict` validates every field and names the one that
is wrong, because a hand-edited file is bad input like any other.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RefusedError, read_json
from ..index import Category

PURPOSES = ("locate", "classify", "identify")
ARCHITECTURES = {"fasterrcnn": ("roi",), "keypointrcnn": ("roi", "keypoints")}
BACKBONES = ("mobilenet_v3_large_fpn", "resnet50_fpn_v2")
OPTIMIZERS = ("sgd", "adamw")
LR_DECAYS = ("cosine", "step", "constant")
KINDS = ("roi", "keypoints")
CONFIG_FORMAT = "napari-learn-complete.model-config"
CONFIG_FORMAT_VERSION = 1


@dataclass
class Augment:
    """Training augmentations; each can be switched off (e.g. when left/right keypoint names
    cannot be swapped under a horizontal flip)."""

    hflip: bool = True
    vflip: bool = False
    scale_jitter: tuple[float, float] = (0.75, 1.25)
    color_jitter: float = 0.2


@dataclass
class TrainingSettings:
    """The model's own recipe, used as is by a full training run; Learn overrides a few fields."""

    epochs: int = 20
    batch_size: int = 4
    optimizer: str = "sgd"
    learning_rate: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_decay: str = "cosine"
    warmup_iters: int = 50
    patience: int = 5
    test_percent: float = 10.0
    augment: Augment = field(default_factory=Augment)


@dataclass
class InferenceSettings:
    """Post-processing of the detector's output (torchvision ROI heads)."""

    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; class id ``i + 1`` is the category ``categories[i]``
    (0 is the background), keypoint channel ``j`` is ``keypoint_names[j]``."""

    name: str = "default"
    purpose: str = "locate"
    architecture: str = "fasterrcnn"
    backbone: str = "mobilenet_v3_large_fpn"
    min_size: int = 320
    max_size: int = 320
    categories: list[str] = field(default_factory=list)
    keypoint_names: list[str] = field(default_factory=list)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The annotation kinds the model predicts: ("roi",) or ("roi", "keypoints")."""
        return ARCHITECTURES[self.architecture]

    def supports(self, kind: str) -> bool:
        if kind not in KINDS:
            raise BadInputError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        return kind in self.kinds

    def keypoint_slots(self, category: Category) -> list[int]:
        """The model keypoint channel of each of ``category``'s keypoints, in category order."""
        missing = [k for k in category.keypoint_names if k not in self.keypoint_names]
        if missing:
            raise RefusedError(
                f"model {self.name!r} does not know keypoint(s) {', '.join(missing)} of category "
                f"{category.name!r} (it knows: {', '.join(self.keypoint_names) or 'none'}); "
                "create a new model with keypoints"
            )
        return [self.keypoint_names.index(k) for k in category.keypoint_names]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`BadInputError` naming the first field that is wrong."""
        where = f"model configuration {self.name!r}"
        _choice(where, "purpose", self.purpose, PURPOSES)
        _choice(where, "architecture", self.architecture, tuple(ARCHITECTURES))
        _choice(where, "backbone", self.backbone, BACKBONES)
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise BadInputError(f"model name {self.name!r} must be a plain folder name")
        for key in ("min_size", "max_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 32 <= value <= 4096:
                raise BadInputError(
                    f"{where}: {key} must be an integer from 32 to 4096, not {value!r}"
                )
        if self.max_size < self.min_size:
            raise BadInputError(
                f"{where}: max_size {self.max_size} is smaller than min_size {self.min_size}"
            )
        for key in ("categories", "keypoint_names"):
            names = getattr(self, key)
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise BadInputError(f"{where}: {key} must be a list of non-empty names")
            if len(set(names)) != len(names):
                raise BadInputError(f"{where}: {key} lists a name twice: {names}")
        if self.architecture == "keypointrcnn" and not self.keypoint_names:
            raise BadInputError(f"{where}: a keypoint model needs at least one keypoint name")
        if self.architecture == "fasterrcnn" and self.keypoint_names:
            raise BadInputError(
                f"{where}: keypoint_names are given but architecture 'fasterrcnn' predicts "
                "boxes only; use 'keypointrcnn'"
            )
        t = self.training
        _choice(where, "training.optimizer", t.optimizer, OPTIMIZERS)
        _choice(where, "training.lr_decay", t.lr_decay, LR_DECAYS)
        _positive(where, "training.epochs", t.epochs, integer=True)
        _positive(where, "training.batch_size", t.batch_size, integer=True)
        _positive(where, "training.learning_rate", t.learning_rate)
        for key in ("momentum", "weight_decay"):
            _positive(where, f"training.{key}", getattr(t, key), zero=True)
        _positive(where, "training.warmup_iters", t.warmup_iters, integer=True, zero=True)
        _positive(where, "training.patience", t.patience, integer=True, zero=True)
        if not 0 <= t.test_percent < 100:
            raise BadInputError(f"{where}: training.test_percent must be in [0, 100)")
        lo, hi = t.augment.scale_jitter
        if not 0 < lo <= hi:
            raise BadInputError(f"{where}: training.augment.scale_jitter must be 0 < low <= high")
        _positive(where, "training.augment.color_jitter", t.augment.color_jitter, zero=True)
        i = self.inference
        if not 0 <= i.score_threshold <= 1 or not 0 < i.nms_iou <= 1:
            raise BadInputError(
                f"{where}: inference.score_threshold must be in [0, 1] and nms_iou in (0, 1]"
            )
        _positive(where, "inference.max_detections", i.max_detections, integer=True)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["training"]["augment"]["scale_jitter"] = list(self.training.augment.scale_jitter)
        return {"format": CONFIG_FORMAT, "format_version": CONFIG_FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a configuration; unknown or mistyped fields are refused by name."""
        if not isinstance(data, dict):
            raise BadInputError("a model configuration must be a JSON object")
        data = dict(data)
        fmt = data.pop("format", CONFIG_FORMAT)
        version = data.pop("format_version", CONFIG_FORMAT_VERSION)
        if fmt != CONFIG_FORMAT:
            raise BadInputError(f"not a model configuration of napari-learn-complete ({fmt!r})")
        if not isinstance(version, int) or version > CONFIG_FORMAT_VERSION:
            raise BadInputError(
                f"model configuration format {version!r} is newer than this plugin reads "
                f"({CONFIG_FORMAT_VERSION}); upgrade napari-learn-complete"
            )
        training = dict(_section(data, "training", TrainingSettings))
        augment = _section(training, "augment", Augment, where="training.augment")
        if "scale_jitter" in augment:
            jitter = augment["scale_jitter"]
            if not (isinstance(jitter, (list, tuple)) and len(jitter) == 2):
                raise BadInputError("training.augment.scale_jitter must be two numbers")
            augment["scale_jitter"] = (float(jitter[0]), float(jitter[1]))
        training["augment"] = Augment(**augment)
        data["training"] = TrainingSettings(**training)
        data["inference"] = InferenceSettings(**_section(data, "inference", InferenceSettings))
        _check_keys(data, cls, "model configuration")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the configuration as indented JSON, atomically (temp file + replace)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
            encoding="utf-8",
        ) as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            os.replace(tmp.name, path)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelConfig:
        path = Path(path)
        data = read_json(path, "model configuration")
        try:
            return cls.from_dict(data)
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from exc


def _choice(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadInputError(f"{where}: unknown {key} {value!r} (choose from {', '.join(allowed)})")


def _positive(
    where: str, key: str, value: Any, *, integer: bool = False, zero: bool = False
) -> None:
    types = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or value < 0 or (
        value == 0 and not zero
    ):
        kind = "an integer" if integer else "a number"
        bound = ">= 0" if zero else "> 0"
        raise BadInputError(f"{where}: {key} must be {kind} {bound}, not {value!r}")


def _check_keys(data: dict[str, Any], cls: type, where: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise BadInputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


def _section(data: dict[str, Any], key: str, cls: type, *, where: str | None = None) -> dict:
    section = data.get(key, {})
    if not isinstance(section, dict):
        raise BadInputError(f"model configuration: {where or key} must be an object")
    _check_keys(section, cls, f"model configuration {where or key}")
    return dict(section)
