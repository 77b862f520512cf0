"""The records an index hands out, and the rules that belong to them alone.

Plain frozen data, no SQL: the store (:mod:`.store`) builds them from rows. The two annotation
kinds live here too, with the one check of a kind name and the one test of whether a category
has a kind switched on, so the engine, the enablement rules and the CLI refuse in the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import BadInputError, RefusedError

Box = tuple[float, float, float, float]  # pixel corners x0, y0, x1, y1
Keypoint = tuple[float, float, int]  # x, y, v (COCO visibility: 0 not labelled, 1 hidden, 2 seen)

KINDS = ("roi", "keypoints")
KIND_TITLES = {"roi": "ROI", "keypoints": "Keypoints"}  # menu entries, task titles
KIND_NOUNS = {"roi": "boxes", "keypoints": "keypoints"}  # what work of a kind writes


def check_kind(kind: str) -> str:
    """``kind`` when it is 'roi' or 'keypoints'; a :class:`BadInputError` otherwise."""
    if kind not in KINDS:
        raise BadInputError(f"kind must be 'roi' or 'keypoints', not {kind!r}")
    return kind


@dataclass(frozen=True)
class ImageRecord:
    """One image of the index: a file, one frame of a zarr array, or a video clip."""

    id: int
    name: str
    path: str
    frame: int | None
    width: int
    height: int
    channels: int
    media: str
    reviewed: bool = False  # a person has checked this image's observations

    @property
    def is_video(self) -> bool:
        return self.media == "video"


@dataclass(frozen=True)
class Category:
    """A named class; keypoint names are ordered and define the keypoint vector of observations."""

    id: int
    name: str
    colour: str
    roi_enabled: bool
    keypoints_enabled: bool
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]

    def enables(self, kind: str) -> bool:
        """Is ``kind`` ('roi' or 'keypoints') switched on for this category?"""
        return self.roi_enabled if check_kind(kind) == "roi" else self.keypoints_enabled

    def disabled_reason(self, kind: str) -> str:
        """Why work of ``kind`` may not run on this category ("" when it may)."""
        if self.enables(kind):
            return ""
        subject = "ROI is" if kind == "roi" else "keypoints are"
        return f"{subject} not enabled for category {self.name!r}"

    def require(self, kind: str) -> None:
        """Refuse work of a ``kind`` this category has switched off."""
        if reason := self.disabled_reason(kind):
            raise RefusedError(reason)


@dataclass(frozen=True)
class Observation:
    """One annotation of one category on one image: a box, keypoints, or both."""

    id: int
    image_id: int
    category_id: int
    box: Box | None
    keypoints: tuple[Keypoint, ...] | None
    iscrowd: bool
    source: str
    score: float | None
    model_version: str | None
    run_id: int | None
    created_at: str
    updated_at: str
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def has_keypoints(self) -> bool:
        """True when at least one keypoint is labelled (v > 0)."""
        return self.keypoints is not None and any(v > 0 for _, _, v in self.keypoints)

    @property
    def extent(self) -> Box | None:
        """The box, else the box around the labelled keypoints, else None."""
        return self.box if self.box is not None else keypoint_extent(self.keypoints or ())


@dataclass(frozen=True)
class Change:
    """A committed change: ``table`` is 'images', 'categories', 'observations' or 'models';
    ``action`` is 'added', 'updated' or 'deleted'; ``ids`` are the rows concerned."""

    table: str
    action: str
    ids: tuple[int, ...]


def keypoint_extent(keypoints: Sequence[Sequence[float]]) -> Box | None:
    """The box around the labelled keypoints (v > 0) of ``(x, y, v)`` triples; None when none is
    labelled. Learn's targets, Complete's duplicate test, COCO's ``bbox`` and the review thumbnail
    all use this one box."""
    labelled = [(x, y) for x, y, v in keypoints if v > 0]
    if not labelled:
        return None
    xs, ys = zip(*labelled, strict=True)
    return (min(xs), min(ys), max(xs), max(ys))
