"""Complete's write rules, shared by Complete and accept: what a model's detections become in
the index.

- Only detections of the target category are used; ``min_score`` then ``max_detections`` (best
  scores first) narrow them.
- ROI writes boxes only, as new observations; a box overlapping an existing box of the category on
  that image by IoU >= 0.5 is a duplicate and is not stacked on it.
- Keypoints never change a box: they attach to the observation of the category the rule of
  :func:`~napari_learn_complete.index.attach_target` picks, else they make a keypoints-only
  observation; an observation that already has keypoints is not overwritten.
- "Remove existing first" (Complete only) clears that kind of the category on each image in the
  same transaction as the image's new results. Clearing boxes never orphans keypoints: a new box
  the rule of ``attach_target`` gives to keypoints whose box was cleared goes to their
  observation, so box and keypoints stay one object (keypoints with no new box near them stay, as
  a keypoints-only observation). Clearing keypoints never touches a box.
- Every observation written carries source "model", its score, the model version and the run id,
  and the run's journal (``index.runs``) records each change so the run can be undone exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..index import Category, ImageRecord, Index, Observation, attach_target, iou
from .detections import Detection
from .settings import CompleteSettings

DUPLICATE_IOU = 0.5  # a detection overlapping an existing annotation this much is the same object


def select(detections: Sequence[Detection], category: str, kind: str,
           settings: CompleteSettings) -> list[Detection]:
    """The target category's detections scoring at least ``settings.min_score``, best first, at
    most ``settings.max_detections``."""
    kept = [
        d for d in detections
        if d.category == category and d.score >= settings.min_score
        and (kind == "roi" or d.keypoints is not None)
    ]
    return sorted(kept, key=lambda d: -d.score)[:settings.max_detections]


class ObservationWriter:
    """Writes one run's results image by image, journaling each observation's state before."""

    def __init__(self, index: Index, run_id: int, category: Category, kind: str,
                 model_version: str | None, remove_existing: bool) -> None:
        self.index = index
        self.run_id = run_id
        self.category = category
        self.kind = kind
        self.model_version = model_version
        self.remove_existing = remove_existing
        self._before: dict[int, dict | None] = {}

    def write(self, image: ImageRecord, detections: Sequence[Detection]) -> tuple[list[int], int]:
        """Apply the rules to one image inside the caller's transaction.

        Returns the ids of the observations written and how many annotations were removed.
        """
        self._before = {}
        existing = self.index.observations(images=[image.id], category=self.category.id)
        removed = 0
        if self.remove_existing:
            removed = self._remove(existing)
            existing = self.index.observations(images=[image.id], category=self.category.id)
        writer = self._boxes if self.kind == "roi" else self._keypoints
        ids = writer(image, detections, existing)
        self.index.runs.journal(self.run_id, self._before)
        return ids, removed

    def _record(self, obs_id: int, created: bool = False) -> None:
        """Remember an observation's state before its first change by this run."""
        if obs_id not in self._before:
            self._before[obs_id] = None if created else self.index.runs.snapshot(obs_id)

    def _remove(self, existing: Sequence[Observation]) -> int:
        """Clear this kind on the image (the store deletes an observation left with nothing)."""
        roi = self.kind == "roi"
        clear = [o for o in existing if (o.box is not None if roi else o.has_keypoints)]
        for obs in clear:
            self._record(obs.id)
            self.index.remove_parts(obs.id, box=roi, keypoints=not roi, source=obs.source)
        return len(clear)

    def _model_fields(self, detection: Detection) -> dict[str, Any]:
        return {"source": "model", "score": detection.score,
                "model_version": self.model_version, "run_id": self.run_id}

    def _add(self, image: ImageRecord, parts: list[tuple[Detection, dict[str, Any]]]) -> list[int]:
        """Add one observation per (detection, its box or keypoints), in one insert for the
        image: one at a time was most of Complete's write time."""
        if not parts:
            return []
        made = self.index.add_observations(
            [dict(image=image, category=self.category.id, **fields, **self._model_fields(det))
             for det, fields in parts])
        for obs in made:
            self._record(obs.id, created=True)
        return [obs.id for obs in made]

    def _boxes(self, image: ImageRecord, detections: Sequence[Detection],
               existing: Sequence[Observation]) -> list[int]:
        taken = [o.box for o in existing if o.box is not None]
        fresh = [det for det in detections
                 if not (taken and iou(det.box, taken).max() >= DUPLICATE_IOU)]
        homes: dict[int, Observation] = {}  # id(detection) -> keypoints its box belongs to
        for bare in (o for o in existing if o.id in self._before):  # box removed by this run
            match = attach_target(bare.extent, [d for d in fresh if id(d) not in homes])
            if match is not None:
                homes[id(match)] = bare
        added = iter(self._add(image, [(det, {"box": det.box}) for det in fresh
                                       if id(det) not in homes]))
        ids = []
        for det in fresh:
            if (home := homes.get(id(det))) is None:
                ids.append(next(added))
            else:
                self.index.update_observation(home.id, box=det.box, **self._model_fields(det))
                ids.append(home.id)
        return ids

    def _keypoints(self, image: ImageRecord, detections: Sequence[Detection],
                   existing: Sequence[Observation]) -> list[int]:
        free = [o for o in existing if o.box is not None]
        loose = [o.extent for o in existing if o.box is None and o.has_keypoints]
        ids, alone = [], []
        for det in detections:
            match = attach_target(det.box, free)
            if match is not None:
                free.remove(match)
                if match.has_keypoints:
                    continue  # this object already has keypoints: not overwritten
                self._record(match.id)
                self.index.update_observation(match.id, keypoints=det.keypoints,
                                              **self._model_fields(det))
                ids.append(match.id)
            elif not (loose and iou(det.box, loose).max() >= DUPLICATE_IOU):
                alone.append((det, {"keypoints": det.keypoints}))
        return ids + self._add(image, alone)
