"""The geometry rules of annotations, in one place: box overlap and which observation a keypoint
belongs to (the box around keypoints is :func:`.records.keypoint_extent`). numpy only: napari's
process uses them (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np

from .records import Box


class Boxed(Protocol):
    """Anything with a box, or None: an observation, a model's detection."""

    @property
    def box(self) -> Box | None: ...


B = TypeVar("B", bound=Boxed)


def iou(box: Sequence[float], boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Intersection over union of ``box`` with each of ``boxes`` (0 where both are empty)."""
    a = np.asarray(box, dtype=np.float64)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = (np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])).clip(min=0)
    height = (np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])).clip(min=0)
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def attach_target(target: Box, candidates: Sequence[B]) -> B | None:
    """The candidate (observation or detection) with a box that keypoints spanning ``target``
    belong to (a single point is a box of size 0): the box overlapping ``target`` most (holding
    it, for a point); with no overlap, the nearest box whose centre lies within one diagonal of
    the larger of the two (a model's box, or a click, can be off). None when no box is close
    enough.

    Complete attaches a detection's keypoints with this rule, the keypoints layer a point a
    person adds, and ROI Complete with "remove existing" gives a new box to the keypoints whose
    box it removed, so all agree on which object is meant."""
    boxed = [o for o in candidates if o.box is not None]
    if not boxed:
        return None
    x0, y0, x1, y1 = target
    if x1 > x0 and y1 > y0:
        overlap = iou(target, [o.box for o in boxed])
    else:
        overlap = np.array([float(b[0] <= x0 <= b[2] and b[1] <= y0 <= b[3])
                            for b in (o.box for o in boxed)])
    best = int(overlap.argmax())
    if overlap[best] > 0:
        return boxed[best]

    def centre(b: Sequence[float]) -> tuple[float, float]:
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    def diagonal(b: Sequence[float]) -> float:
        return math.hypot(b[2] - b[0], b[3] - b[1])

    distances = [math.dist(centre(target), centre(o.box)) for o in boxed]
    nearest = min(range(len(boxed)), key=distances.__getitem__)
    reach = max(diagonal(target), diagonal(boxed[nearest].box))
    return boxed[nearest] if distances[nearest] <= reach else None
