"""Complete: the active model writes boxes (ROI) or keypoints into a captured index and category.

Two entry points, as in the specification:

- :func:`complete` runs over chosen images and saves what it finds at once, batch by batch;
- :func:`propose` looks at the images that have no observation of a category yet and returns
  :class:`Proposal` objects without saving anything; :func:`accept` saves the ones a person kept.

Write rules, shared by both:

- Only detections of the target category are used; ``min_score`` then ``max_detections`` (best
  scores first) narrow them.
- ROI writes boxes only, as new observations; a box overlapping an existing box of the category on
  that image by IoU >= 0.5 is a duplicate and is not stacked on it.
- Keypoints never change a box: they attach to the observation of the category whose box overlaps
  the detection most (or the nearest box close by), else they make a keypoints-only observation;
  an observation that already has keypoints is not overwritten.
- "Remove existing first" (Complete only) clears that kind of the category on each image in the
  same transaction as the image's new results.
- Every observation written carries source "model", its score, the model version and the run id.
  Each run is recorded (``runs``) with what it changed (``run_changes``), so :func:`undo` puts the
  observations back exactly as they were.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, Cancelled, RefusedError, read_json
from ..index import Category, ImageRecord, Index, Observation
from ..index.store import Box, Keypoint
from .detections import Detection, Detector, stream_images
from .progress import CancelFn, Progress, ProgressFn, check_cancel, report
from .results import CompleteResult, Proposal
from .settings import CompleteSettings

KINDS = ("roi", "keypoints")
DUPLICATE_IOU = 0.5  # a detection overlapping an existing annotation this much is the same object
PROPOSALS_FORMAT = "napari-learn-complete.proposals"
PROPOSALS_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- checks
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise BadInputError(f"kind must be 'roi' or 'keypoints', not {kind!r}")


def _check_category(category: Category, kind: str) -> None:
    if kind == "keypoints" and not category.keypoints_enabled:
        raise RefusedError(f"keypoints are not enabled for category {category.name!r}")
    if kind == "roi" and not category.roi_enabled:
        raise RefusedError(f"ROI is not enabled for category {category.name!r}")


def _refuse_video(images: Iterable[ImageRecord]) -> None:
    video = [image.name for image in images if image.is_video]
    if video:
        raise RefusedError(
            f"Complete supports images only; the selection includes {len(video)} video "
            f"item(s): {', '.join(video[:10])}{' ...' if len(video) > 10 else ''}"
        )


def _select(detections: Sequence[Detection], category: str, kind: str, min_score: float,
            max_detections: int) -> list[Detection]:
    """The target category's detections above ``min_score``, best first, at most ``max``."""
    kept = [
        d for d in detections
        if d.category == category and d.score >= min_score
        and (kind == "roi" or d.keypoints is not None)
    ]
    return sorted(kept, key=lambda d: -d.score)[:max_detections]


class _Writer:
    """Writes one run's results image by image, recording each observation's state before."""

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
        self._flush()
        return ids, removed

    def _record(self, obs_id: int, created: bool = False) -> None:
        """Remember an observation's state before its first change by this run."""
        if obs_id not in self._before:
            self._before[obs_id] = None if created else _snapshot(self.index, obs_id)

    def _flush(self) -> None:
        """One ``run_changes`` row per observation changed on the image, holding its state
        before and after (an id freed by a deletion and reused by a new observation is one row:
        undo puts the old one back)."""
        with self.index.transaction() as conn:  # joins the caller's transaction
            for obs_id, before in self._before.items():
                after = _snapshot(self.index, obs_id)
                action = "created" if before is None else "deleted" if after is None \
                    else "updated"
                conn.execute(
                    "INSERT INTO run_changes(run_id, observation_id, action, before) "
                    "VALUES (?, ?, ?, ?)",
                    (self.run_id, obs_id, action,
                     json.dumps({"before": before, "after": after})),
                )

    def _remove(self, existing: Sequence[Observation]) -> int:
        """Clear this kind on the image; an observation left with nothing is deleted."""
        removed = 0
        for obs in existing:
            if self.kind == "roi" and obs.box is not None:
                keep = obs.has_keypoints
                change: dict[str, Any] = {"box": None}
            elif self.kind == "keypoints" and obs.has_keypoints:
                keep = obs.box is not None
                change = {"keypoints": None}
            else:
                continue
            self._record(obs.id)
            if keep:
                self.index.update_observation(obs.id, source=obs.source, **change)
            else:
                self.index.delete_observations([obs.id])
            removed += 1
        return removed

    def _model_fields(self, detection: Detection) -> dict[str, Any]:
        return {"source": "model", "score": detection.score,
                "model_version": self.model_version, "run_id": self.run_id}

    def _boxes(self, image: ImageRecord, detections: Sequence[Detection],
               existing: Sequence[Observation]) -> list[int]:
        taken = [o.box for o in existing if o.box is not None]
        ids = []
        for det in detections:
            if taken and _iou(det.box, taken).max() >= DUPLICATE_IOU:
                continue  # already annotated: do not stack a duplicate
            obs = self.index.add_observation(image, self.category.id, box=det.box,
                                             **self._model_fields(det))
            self._record(obs.id, created=True)
            ids.append(obs.id)
        return ids

    def _keypoints(self, image: ImageRecord, detections: Sequence[Detection],
                   existing: Sequence[Observation]) -> list[int]:
        free = [o for o in existing if o.box is not None]
        loose = [_extent(o.keypoints) for o in existing if o.box is None and o.has_keypoints]
        ids = []
        for det in detections:
            match = _match(det.box, free)
            if match is not None:
                free.remove(match)
                if match.has_keypoints:
                    continue  # this object already has keypoints: not overwritten
                self._record(match.id)
                self.index.update_observation(match.id, keypoints=det.keypoints,
                                              **self._model_fields(det))
                ids.append(match.id)
            elif not (loose and _iou(det.box, loose).max() >= DUPLICATE_IOU):
                obs = self.index.add_observation(image, self.category.id,
                                                 keypoints=det.keypoints,
                                                 **self._model_fields(det))
                self._record(obs.id, created=True)
                ids.append(obs.id)
        return ids


def _snapshot(index: Index, obs_id: int) -> dict[str, Any] | None:
    """The stored row of an observation and its attribute rows (with their rowids), as JSON
    gives it back: enough to compare it and to put it back byte for byte. None when absent."""
    rows = index.query("SELECT * FROM observations WHERE id = ?", (obs_id,))
    if not rows:
        return None
    attributes = index.query(
        "SELECT rowid, key, value FROM attributes WHERE observation_id = ? ORDER BY rowid",
        (obs_id,),
    )
    return {"row": dict(rows[0]), "attributes": [list(a) for a in attributes]}


def _iou(box: Box, boxes: Sequence[Box]) -> np.ndarray:
    """IoU of ``box`` with each of ``boxes`` (numpy: this module is used in napari's process,
    which must not load torch)."""
    a, b = np.asarray(box, dtype=np.float64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = (np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])).clip(min=0)
    height = (np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])).clip(min=0)
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _extent(keypoints: Sequence[Keypoint]) -> Box:
    """The box around the labelled keypoints (to compare keypoints-only observations)."""
    xs = [x for x, _, v in keypoints if v > 0]
    ys = [y for _, y, v in keypoints if v > 0]
    return (min(xs), min(ys), max(xs), max(ys))


def _match(box: Box, candidates: Sequence[Observation]) -> Observation | None:
    """The observation whose box overlaps ``box`` most; with no overlap, the nearest box whose
    centre lies within one diagonal of ``box``'s centre (a keypoint model's box can be off)."""
    if not candidates:
        return None
    ious = _iou(box, [o.box for o in candidates])
    best = int(ious.argmax())
    if ious[best] > 0:
        return candidates[best]

    def centre(b: Box) -> tuple[float, float]:
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    cx, cy = centre(box)
    distances = [math.dist((cx, cy), centre(o.box)) for o in candidates]
    nearest = min(range(len(candidates)), key=distances.__getitem__)
    reach = math.hypot(box[2] - box[0], box[3] - box[1])
    return candidates[nearest] if distances[nearest] <= reach else None


def _predictor(index: Index, device: str | None) -> Detector:
    """The active model, loaded only when no predictor was injected: importing it loads torch."""
    from .predict import Predictor

    return Predictor.from_index(index, device)


# ---------------------------------------------------------------------------- Complete
def complete(
    index: Index,
    images: Iterable[ImageRecord | int | str],
    category: Category | int | str,
    *,
    kind: str = "roi",
    settings: CompleteSettings | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    device: str | None = None,
    on_batch: Callable[[list[int]], None] | None = None,
    predictor: Detector | None = None,
) -> CompleteResult:
    """Run the active model over ``images`` and write ``kind`` for ``category``, batch by batch.

    The index, the category and the images are resolved now and written whatever happens
    afterwards (a rename, another category chosen in the UI). Everything that can be refused is
    refused before anything is written. Each batch is one transaction; ``on_batch(ids)`` hears
    the observation ids written by it after its commit. On cancel, the batches committed so far
    stay (undo them with the run id in the :class:`Cancelled` message) and ``Cancelled`` is raised.
    ``predictor`` replaces the active model (tests inject a deterministic one).
    """
    _check_kind(kind)
    settings = settings or CompleteSettings()
    settings.validate()
    cat = index.category(category)
    records = index.resolve_images(images)
    if not records:
        raise RefusedError("Complete needs at least one image; none were selected")
    _refuse_video(records)
    _check_category(cat, kind)
    predictor = predictor or _predictor(index, device)
    predictor.check(kind, cat)

    start = time.perf_counter()
    run_id = index.start_run(
        "complete", model_id=predictor.model_id, kind=kind,
        scope={"category": cat.name, "category_id": cat.id, "images": len(records)},
        settings=asdict(settings),
    )
    writer = _Writer(index, run_id, cat, kind, predictor.model_version, settings.remove_existing)
    batches = math.ceil(len(records) / settings.batch_size)
    done, written, removed, status = 0, [], 0, "failed"
    try:
        batch_iter = stream_images(index, records, settings.batch_size)
        for number, (chunk, arrays) in enumerate(batch_iter, 1):
            check_cancel(cancel)
            found = predictor.predict(arrays)
            del arrays
            check_cancel(cancel)
            batch_ids, batch_removed = [], 0
            with index.transaction():
                for image, detections in zip(chunk, found, strict=True):
                    ids, n = writer.write(image, _select(
                        detections, cat.name, kind, settings.min_score, settings.max_detections))
                    batch_ids += ids
                    batch_removed += n
            done += len(chunk)
            written += batch_ids
            removed += batch_removed
            if on_batch is not None:
                on_batch(batch_ids)
            elapsed = time.perf_counter() - start
            report(progress, Progress(
                "complete", number, batches,
                message=f"{done}/{len(records)} images, {len(written)} written, {removed} removed",
                eta_s=elapsed / done * (len(records) - done),
            ))
        status = "done"
    except Cancelled:
        status = "cancelled"
        raise Cancelled(
            f"Complete cancelled after {done} of {len(records)} images; the {len(written)} "
            f"result(s) saved so far are kept (run {run_id}: undo it to remove them)"
        ) from None
    finally:
        seconds = time.perf_counter() - start
        index.finish_run(run_id, status, seconds=seconds,
                         metrics={"images": done, "written": len(written), "removed": removed})
    return CompleteResult(run_id, done, len(written), removed, seconds, written)


# ---------------------------------------------------------------------------- propose / accept
def propose(
    index: Index,
    category: Category | int | str,
    *,
    kind: str = "roi",
    min_score: float = 0.0,
    max_detections: int = 1,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    device: str | None = None,
    predictor: Detector | None = None,
) -> list[Proposal]:
    """Detections of ``category`` on the images that have no observation of it yet (videos
    left out), as proposals numbered from 1, best first per image. Nothing is saved."""
    _check_kind(kind)
    CompleteSettings(min_score, max_detections, batch_size=batch_size).validate()
    cat = index.category(category)
    _check_category(cat, kind)
    if not index.query("SELECT 1 FROM observations WHERE category_id = ? LIMIT 1", (cat.id,)):
        raise RefusedError(
            f"category {cat.name!r} has no observations yet; label some and Learn first"
        )
    records = [image for image in index.images(exclude_category=cat.id) if not image.is_video]
    predictor = predictor or _predictor(index, device)
    predictor.check(kind, cat)
    proposals: list[Proposal] = []
    batches = math.ceil(len(records) / batch_size)
    start = time.perf_counter()
    for number, (chunk, arrays) in enumerate(stream_images(index, records, batch_size), 1):
        check_cancel(cancel)
        found = predictor.predict(arrays)
        del arrays
        for image, detections in zip(chunk, found, strict=True):
            for det in _select(detections, cat.name, kind, min_score, max_detections):
                proposals.append(Proposal(
                    id=len(proposals) + 1, image_id=image.id, image_name=image.name,
                    category=cat.name, box=det.box,
                    keypoints=det.keypoints if kind == "keypoints" else None,
                    score=det.score, kind=kind, model_version=predictor.model_version,
                ))
        done = min(number * batch_size, len(records))
        report(progress, Progress(
            "propose", number, batches,
            message=f"{done}/{len(records)} images, {len(proposals)} proposals",
            eta_s=(time.perf_counter() - start) / done * (len(records) - done),
        ))
    return proposals


def _one(proposals: Sequence[Proposal], key: str) -> Any:
    values = {getattr(p, key) for p in proposals}
    if len(values) != 1:
        raise BadInputError(
            f"proposals to accept must share one {key.replace('_', ' ')}, "
            f"not {sorted(map(str, values))}"
        )
    return values.pop()


def accept(
    index: Index, proposals: Sequence[Proposal], *, min_score: float | None = None
) -> CompleteResult:
    """Save the given proposals (those scoring at least ``min_score`` when given: "accept all
    above a score") as observations of their category, in one transaction recorded as a run.

    Only observations of that category are created or updated; a proposal that duplicates an
    annotation already there (IoU >= 0.5, e.g. accepted twice) is not stacked on it.
    """
    chosen = [p for p in proposals if min_score is None or p.score >= min_score]
    if not chosen:
        above = "" if min_score is None else f" with a score of at least {min_score:g}"
        raise RefusedError(f"no proposals to accept{above}")
    seen: set[int] = set()
    for p in chosen:
        if p.id in seen:
            raise BadInputError(f"proposal {p.id} is given twice")
        seen.add(p.id)
    kind, name, version = (_one(chosen, k) for k in ("kind", "category", "model_version"))
    _check_kind(kind)
    cat = index.category(name)
    _check_category(cat, kind)
    per_image: dict[int, tuple[ImageRecord, list[Detection]]] = {}
    for p in chosen:
        image = index.image(p.image_id)
        if image.name != p.image_name:
            raise BadInputError(
                f"proposal {p.id}: image {p.image_id} is {image.name!r} in this index, "
                f"not {p.image_name!r}"
            )
        if p.box is None or (kind == "keypoints" and p.keypoints is None):
            raise BadInputError(f"proposal {p.id} on {p.image_name}: no {kind} to save")
        per_image.setdefault(image.id, (image, []))[1].append(
            Detection(cat.name, p.box, p.score, p.keypoints))
    _refuse_video(image for image, _ in per_image.values())

    start = time.perf_counter()
    written: list[int] = []
    with index.transaction():  # all or nothing, run record included
        run_id = index.start_run(
            "accept", model_id=None, kind=kind,
            scope={"category": cat.name, "category_id": cat.id, "proposals": sorted(seen)},
            settings={"min_score": min_score, "model_version": version},
        )
        writer = _Writer(index, run_id, cat, kind, version, remove_existing=False)
        for image, detections in per_image.values():
            ids, _ = writer.write(image, sorted(detections, key=lambda d: -d.score))
            written += ids
        seconds = time.perf_counter() - start
        index.finish_run(run_id, "done", seconds=seconds,
                         metrics={"images": len(per_image), "written": len(written), "removed": 0})
    return CompleteResult(run_id, len(per_image), len(written), 0, seconds, written)


# ---------------------------------------------------------------------------- undo
def undo(index: Index, run_id: int) -> int:
    """Put every observation a Complete or accept run changed back as it was before the run.

    Refused (nothing changed) when one of them was edited or deleted after the run: undo the later
    work first. The run stays in the history with status "undone". Returns how many observations
    were restored or removed.
    """
    runs = index.query("SELECT operation, status FROM runs WHERE id = ?", (run_id,))
    if not runs:
        raise BadInputError(f"no run {run_id} in the index")
    operation, status = runs[0]
    if operation not in ("complete", "accept"):
        raise RefusedError(
            f"run {run_id} is a {operation} run; only Complete and accept runs can be undone "
            "(roll back the model version instead)"
        )
    if status in ("undone", "running"):
        raise RefusedError(f"run {run_id} is {status}: nothing to undo")
    changes = index.query(
        "SELECT observation_id, before FROM run_changes WHERE run_id = ? ORDER BY rowid DESC",
        (run_id,),
    )
    columns = {r[1] for r in index.query("PRAGMA table_info(observations)")}
    events: dict[str, list[int]] = {"deleted": [], "updated": [], "added": []}
    with index.transaction() as conn:  # a refusal half-way rolls everything back
        for obs_id, record in changes:
            states = json.loads(record)
            if _as_json(_snapshot(index, obs_id)) != states["after"]:
                raise RefusedError(
                    f"cannot undo run {run_id}: observation {obs_id} was changed after the run "
                    "(undo later runs or edits first)"
                )
            conn.execute("DELETE FROM observations WHERE id = ?", (obs_id,))
            if states["before"] is not None:
                _restore(conn, states["before"], columns)
            action = "deleted" if states["before"] is None else \
                "added" if states["after"] is None else "updated"
            events[action].append(obs_id)
        conn.execute("UPDATE runs SET status = 'undone' WHERE id = ?", (run_id,))
        for action, ids in events.items():
            index.record_change("observations", action, ids)  # the store's own change events
    return len(changes)


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _restore(conn, snapshot: dict[str, Any], columns: set[str]) -> None:
    row = snapshot["row"]
    if not set(row) <= columns:
        raise BadInputError(f"run record of observation {row.get('id')} has unknown columns")
    names = list(row)
    conn.execute(
        f"INSERT INTO observations({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [row[n] for n in names],
    )
    for rowid, key, value in snapshot["attributes"]:
        taken = conn.execute("SELECT 1 FROM attributes WHERE rowid = ?", (rowid,)).fetchone()
        conn.execute(
            "INSERT INTO attributes(rowid, observation_id, key, value) VALUES (?, ?, ?, ?)",
            (None if taken else rowid, row["id"], key, value),
        )


# ---------------------------------------------------------------------------- proposals files
def save_proposals(
    path: str | os.PathLike, proposals: Sequence[Proposal], *, index: Index,
    category: Category | int | str, kind: str,
) -> None:
    """Write proposals as JSON, with the index, category, kind and model version they are for."""
    _check_kind(kind)
    cat = index.category(category)
    versions = sorted({p.model_version for p in proposals if p.model_version})
    data = {
        "format": PROPOSALS_FORMAT, "format_version": PROPOSALS_FORMAT_VERSION,
        "index": str(index.path), "category": cat.name, "kind": kind,
        "model_version": versions[0] if len(versions) == 1 else versions or None,
        "proposals": [asdict(p) for p in proposals],
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def load_proposals(
    path: str | os.PathLike, *, index: Index | None = None,
    category: Category | int | str | None = None,
) -> list[Proposal]:
    """Read a proposals file; refuse one made for another index or category than given."""
    path = Path(path)
    data = read_json(path, "proposals file")
    if not isinstance(data, dict) or data.get("format") != PROPOSALS_FORMAT:
        raise BadInputError(f"{path}: not a proposals file of napari-learn-complete")
    if data.get("format_version", 0) > PROPOSALS_FORMAT_VERSION:
        raise BadInputError(f"{path}: proposals file format is newer than this plugin reads")
    if index is not None and Path(data.get("index", "")).resolve() != index.path:
        raise BadInputError(
            f"{path}: these proposals were made for the index {data.get('index')}, "
            f"not {index.path}"
        )
    if category is not None:
        name = index.category(category).name if index is not None else str(category)
        if data.get("category") != name:
            raise BadInputError(
                f"{path}: these proposals are for category {data.get('category')!r}, not {name!r}"
            )
    try:
        return [
            Proposal(
                id=int(p["id"]), image_id=int(p["image_id"]), image_name=str(p["image_name"]),
                category=str(p["category"]),
                box=None if p["box"] is None else tuple(float(v) for v in p["box"]),
                keypoints=None if p["keypoints"] is None else tuple(
                    (float(x), float(y), int(v)) for x, y, v in p["keypoints"]),
                score=float(p["score"]), kind=str(p.get("kind", data.get("kind", "roi"))),
                model_version=p.get("model_version"),
            )
            for p in data["proposals"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{path}: a proposal is malformed ({exc!r})") from exc
