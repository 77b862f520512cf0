"""The Complete settings a Learn suggests: per category, the min score and max detections that
would have cost the fewest corrections on the images the Learn can judge (docs/effort.md).

A correction is what a person does to make Complete's output right (the effort benchmark's
rules): draw a missing box, delete a false one, adjust one that overlaps its object by less than
:data:`ADJUST_IOU`. Complete keeps an image's best ``max_detections`` detections scoring at least
``min_score``; ``max_detections`` is the most objects of the category on one judged image. Walking
the kept detections from the best score down, each one matched greedily to its object (IoU >=
:data:`MATCH_IOU`, as COCO matches) changes the count by -1 (a box that needs nothing), 0 (a box
to adjust instead of one to draw) or +1 (a false box); the suggested min score ends the run of
detections whose sum is lowest, the longest such run where several tie: a detection that costs
nothing on the judged images (a box to adjust, or a false box that a found one pays for) is kept.
The judged images are often the Learn's own, where the model scores its objects higher than on
new ones: of equally cheap min scores the lowest loses fewer objects there (docs/complete.md).
No torch here: the Learn hands over plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..index import iou
from ..model import Suggested

MATCH_IOU = 0.5  # a detection overlapping an object this much found it
ADJUST_IOU = 0.85  # below this a found box still needs adjusting


def suggest(truth: Sequence[np.ndarray], found: Sequence[tuple[np.ndarray, np.ndarray]], *,
            held_out: bool) -> Suggested | None:
    """The suggestion for one category from its objects' boxes per image (``truth``) and the
    model's (boxes, scores) of it on the same images; None when no image holds the category."""
    if not any(len(boxes) for boxes in truth):
        return None
    keep = max(len(boxes) for boxes in truth)
    steps: list[tuple[float, int]] = []  # (score, change in corrections) of each kept detection
    for objects, (boxes, scores) in zip(truth, found, strict=True):
        order = np.argsort(-np.asarray(scores), kind="stable")[:keep]
        free = np.ones(len(objects), bool)
        for i in order:
            overlap = iou(tuple(boxes[i]), objects) if len(objects) else np.zeros(0)
            overlap = np.where(free, overlap, -1.0)
            best = int(np.argmax(overlap)) if len(overlap) else -1
            if best < 0 or overlap[best] < MATCH_IOU:
                steps.append((float(scores[i]), +1))
                continue
            free[best] = False
            steps.append((float(scores[i]), -1 if overlap[best] >= ADJUST_IOU else 0))
    steps.sort(key=lambda step: -step[0])
    total, lowest, min_score = 0, 0, 1.0  # no detection kept: every object drawn by hand
    for score, change in steps:
        total += change
        if total < lowest or total == lowest < 0:
            lowest, min_score = total, score
    return Suggested(min_score=min_score, max_detections=keep, images=len(truth),
                     held_out=held_out)
