"""Model configuration: what a model detects, how it is built, trained and run.

A configuration is saved as human-readable JSON (``INDEX/models/<name>/config.json``) so a person
can read and edit it. The classes are pydantic models (:class:`Validated`): every field is checked
when a configuration is built, read or changed, and a wrong one is refused by name, because a
hand-edited file is bad input like any other.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from ..errors import BadInputError, RefusedError, read_json
from ..index import Category, check_kind

Purpose = Literal["locate", "classify", "identify"]
Architecture = Literal["fasterrcnn", "keypointrcnn"]
Backbone = Literal["mobilenet_v3_large_320_fpn", "mobilenet_v3_large_fpn", "resnet50_fpn_v2",
                   "resnet50_fpn"]
Start = Literal["coco", "imagenet", "none"]
Optimizer = Literal["sgd", "adamw"]
LrDecay = Literal["cosine", "step", "constant"]
PURPOSES: tuple[str, ...] = get_args(Purpose)
BACKBONES: tuple[str, ...] = get_args(Backbone)
STARTS: tuple[str, ...] = get_args(Start)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
LR_DECAYS: tuple[str, ...] = get_args(LrDecay)
ARCHITECTURES: dict[str, tuple[str, ...]] = {"fasterrcnn": ("roi",),
                                             "keypointrcnn": ("roi", "keypoints")}


@dataclass(frozen=True)
class ModelChoice:
    """A model named for what a user picks it for. The figures are those of torchvision's COCO
    weights for it (a test checks them against torchvision's own metadata)."""

    name: str
    architecture: str
    backbone: str
    params_m: float  # millions of parameters
    download_mb: float  # size of the COCO weight file, downloaded once
    coco_map: float  # box mAP of the COCO weights on COCO val2017, as torchvision reports it
    good_for: str

    def describe(self) -> str:
        """One line for a menu or a help text: what it is good for and what it costs."""
        return (f"{self.good_for} ({self.params_m:.0f} M parameters, {self.download_mb:.0f} MB "
                "download for COCO weights)")


MODEL_CHOICES: dict[str, ModelChoice] = {c.name: c for c in (
    ModelChoice("fast", "fasterrcnn", "mobilenet_v3_large_320_fpn", 19.4, 74.2, 22.8,
                "boxes, quickest on a CPU: MobileNetV3-Large FPN, 150 proposals per image"),
    ModelChoice("balanced", "fasterrcnn", "mobilenet_v3_large_fpn", 19.4, 74.2, 32.8,
                "boxes, more proposals than fast (1000): finds more small or crowded objects, "
                "still light on a CPU"),
    ModelChoice("accurate", "fasterrcnn", "resnet50_fpn_v2", 43.7, 167.1, 46.7,
                "boxes, most accurate: ResNet-50 FPN v2, several times slower; best on a GPU"),
    ModelChoice("keypoints", "keypointrcnn", "resnet50_fpn", 59.1, 226.1, 54.6,
                "boxes and keypoints (poses, landmarks): Keypoint R-CNN ResNet-50, from COCO's "
                "person keypoints"),
)}
CONFIG_FORMAT = "napari-learn-complete.model-config"
CONFIG_FORMAT_VERSION = 6  # 2: four backbones, ``backbone_trained``; 3: ``keypoint_head``,
# ``backbone_pretrained``; 4: ``box_head``; 5: ``inference.mirror``; 6: ``inference.scales``
# The keypoint head of a new keypoint model whose backbone has no COCO keypoint weights: four
# 128-channel convolutions instead of torchvision's eight of 512, about 25 times less work per
# region for heads that start from random weights anyway (docs/effort.md).
LIGHT_KEYPOINT_HEAD: tuple[int, ...] = (128,) * 4
# The box head of a new model whose box head no COCO weights fill: torchvision's two fully
# connected layers 256 wide instead of 1024, a fifth less time per training step of the effort
# benchmark's keypoint model (docs/learn.md, "A lighter box head").
LIGHT_BOX_HEAD = 256

_SHOULD = re.compile(r"^\w+ should")  # pydantic's "Input should be ..." -> "must be ..."
_depth: ContextVar[int] = ContextVar("_depth", default=0)  # models being validated, nested


class Validated(BaseModel):
    """Base of the configurations and settings: strict types (no "3" for 3), finite numbers,
    no unknown fields, checked when built, read or assigned; a refusal is a
    :class:`BadInputError` that names the field (``training.learning_rate: ...``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              validate_assignment=True)

    def _check(self) -> None:
        """Rules across fields: raise ``ValueError`` naming them (subclasses)."""

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like a new object (``model_copy(update=...)`` is
        not validated)."""
        return self.model_validate({**self.model_dump(), **changes})

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_as_bad_input(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Only the outermost model raises, so the message has the whole path of the field; an
        assignment that breaks a rule across fields is undone."""
        depth = _depth.get()
        token = _depth.set(depth + 1)
        kept = dict(data.__dict__) if isinstance(data, BaseModel) else None  # an assignment
        try:
            model = handler(data)
            model._check()
            return model
        except ValueError as exc:  # a pydantic ValidationError too
            if depth:
                raise
            if kept is not None:
                data.__dict__.update(kept)
            raise BadInputError(_describe(exc)) from None
        finally:
            _depth.reset(token)


def _describe(exc: ValueError) -> str:
    """One short line per problem: ``field: must be ..., not value``."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors(include_url=False):
        if error["type"] in ("extra_forbidden", "no_such_attribute"):
            text = "unknown field"
        elif error["type"] == "value_error":
            text = str(error["ctx"]["error"])
        else:
            text = f"{_SHOULD.sub('must', error['msg'])}, not {error['input']!r}"
        field = ".".join(str(part) for part in error["loc"])
        problems.append(f"{field}: {text}" if field else text)
    return "; ".join(problems)


def _distinct(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError(f"lists a name twice: {names}")
    return names


Names = Annotated[list[Annotated[str, Field(min_length=1)]], AfterValidator(_distinct)]
Size = Annotated[int, Field(ge=32, le=4096)]


class Augment(Validated):
    """Training augmentations; each can be switched off (e.g. when left/right keypoint names
    cannot be swapped under a horizontal flip)."""

    hflip: bool = True
    vflip: bool = False
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), strict=False)  # a JSON list too
    color_jitter: float = Field(0.2, ge=0)

    @field_validator("scale_jitter")
    @classmethod
    def _ordered(cls, jitter: tuple[float, float]) -> tuple[float, float]:
        if not 0 < jitter[0] <= jitter[1]:
            raise ValueError(f"must be 0 < low <= high, not {list(jitter)}")
        return jitter


class TrainingSettings(Validated):
    """The model's own recipe, used as is by a full training run; Learn overrides a few fields."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4, ge=1)
    optimizer: Optimizer = "sgd"
    learning_rate: float = Field(0.02, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    lr_decay: LrDecay = "cosine"
    warmup_iters: int = Field(50, ge=0)
    patience: int = Field(5, ge=0)
    test_percent: float = Field(10.0, ge=0, lt=100)
    augment: Augment = Field(default_factory=Augment)


class InferenceSettings(Validated):
    """Post-processing of the detector's output (torchvision ROI heads)."""

    score_threshold: float = Field(0.05, ge=0, le=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    max_detections: int = Field(100, ge=1)
    # Average each detection with the model's detection of it in the mirrored image, the mirror
    # its training augmented with (engine/views.py): twice the inference, tighter boxes. False
    # for models saved before format 5, so that their Complete writes what it wrote.
    mirror: bool = True
    # Input sizes, as shares of the model's own, whose detections are averaged too (each one more
    # pass, two with the mirror; engine/views.py). The first is 1: the detections averaged are
    # those of the model's own size. (1.0,) for models saved before format 6, as for ``mirror``.
    scales: tuple[float, ...] = Field((1.0, 1.2), strict=False)  # a JSON list too

    @field_validator("scales")
    @classmethod
    def _own_size_first(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        if not scales or scales[0] != 1.0:
            raise ValueError(f"must start with 1.0 (the model's own input size), not "
                             f"{list(scales)}")
        if len(set(scales)) != len(scales) or not all(0.5 <= s <= 2.0 for s in scales):
            raise ValueError(f"must be distinct and from 0.5 to 2.0, not {list(scales)}")
        return scales


class Suggested(Validated):
    """The Complete settings that would have cost the fewest corrections on the ``images`` a
    Learn could judge (its held-out part, else its training images: then optimistic), which
    Complete's dialog offers for the category (engine/suggest.py)."""

    min_score: float = Field(ge=0, le=1)
    max_detections: int = Field(ge=1)
    images: int = Field(ge=1)
    held_out: bool


class ModelConfig(Validated):
    """Everything needed to rebuild a model; class id ``i + 1`` is the category ``categories[i]``
    (0 is the background), keypoint channel ``j`` is ``keypoint_names[j]``."""

    name: str = "default"
    purpose: Purpose = "locate"
    architecture: Architecture = "fasterrcnn"
    backbone: Backbone = "mobilenet_v3_large_320_fpn"
    min_size: Size = 320
    max_size: Size = 320
    categories: Names = Field(default_factory=list)
    keypoint_names: Names = Field(default_factory=list)
    # Channels of the keypoint head's 3 x 3 convolutions, one per layer; None: torchvision's
    # eight of 512 (the head of its COCO keypoint weights, and of models saved before format 3).
    keypoint_head: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1)
    # Width of the box head's two fully connected layers (torchvision's TwoMLPHead); None:
    # torchvision's 1024 (the head of its COCO weights, and of models saved before format 4).
    box_head: int | None = Field(None, ge=1)
    # The backbone holds learned features: pretrained (COCO, ImageNet) or trained by a Full model
    # Learn or a full training. False warns that "Heads only" would train on random features.
    backbone_trained: bool = False
    # Its BatchNorm statistics come from COCO or ImageNet weights: a Full Learn keeps them, as a
    # few images would throw them off. A backbone from random weights re-estimates them in every
    # Full Learn: kept after its first Learn, they made the next one diverge (docs/learn.md).
    backbone_pretrained: bool = False
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    # Per category name: what Complete's dialog suggests after the Learn that made this version.
    suggested: dict[str, Suggested] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"must be a plain folder name, not {name!r}")
        return name

    def _check(self) -> None:
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size {self.max_size} is smaller than min_size {self.min_size}"
            )
        if self.architecture == "keypointrcnn" and not self.keypoint_names:
            raise ValueError("a keypoint model needs at least one keypoint name")
        if self.architecture == "fasterrcnn" and self.keypoint_names:
            raise ValueError(
                "keypoint_names are given but architecture 'fasterrcnn' predicts boxes only; "
                "use 'keypointrcnn'"
            )
        if self.architecture == "fasterrcnn" and self.keypoint_head is not None:
            raise ValueError("keypoint_head is given but architecture 'fasterrcnn' has none")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The annotation kinds the model predicts: ("roi",) or ("roi", "keypoints")."""
        return ARCHITECTURES[self.architecture]

    def supports(self, kind: str) -> bool:
        return check_kind(kind) in self.kinds

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

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, with the format marker a reader checks."""
        return {"format": CONFIG_FORMAT, "format_version": CONFIG_FORMAT_VERSION,
                **self.model_dump(mode="json")}

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
        if version < 2 and data.get("backbone") == "mobilenet_v3_large_fpn":
            # Version 1 ran this backbone with 150 proposals, which is now the "fast" model's.
            data["backbone"] = "mobilenet_v3_large_320_fpn"
        if version < 3:
            # Before format 3 a trained backbone kept its BatchNorm statistics, whatever trained it.
            data.setdefault("backbone_pretrained", data.get("backbone_trained", False))
        if version < 6 and isinstance(data.get("inference", {}), dict):
            data["inference"] = {"scales": [1.0], **data.get("inference", {})}
            if version < 5:
                data["inference"] = {"mirror": False, **data["inference"]}
        return cls.model_validate(data)

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
        """Read and validate ``path``; an error names the file and the field."""
        path = Path(path)
        data = read_json(path, "model configuration")
        try:
            return cls.from_dict(data)
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from exc
