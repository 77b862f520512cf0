"""Propose and accept: the model's detections on the images of other categories that lack a
category, shown for review before anything is saved; the ones a person keeps are saved as one run
(undoable). Proposals travel as JSON files between the CLI's ``propose`` and ``accept``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RefusedError, read_json
from ..index import Category, ImageRecord, Index, check_kind
from .complete import LocalSource, Source, load_predictor, missing_files, rate, refuse_video
from .detections import Detection, Detector, PredictionCache
from .progress import CancelFn, Progress, ProgressFn, report
from .results import CompleteResult, Proposal, Proposals
from .settings import CompleteSettings
from .write_rules import ObservationWriter, select

PROPOSALS_FORMAT = "napari-learn-complete.proposals"
PROPOSALS_FORMAT_VERSION = 1


def propose(
    index: Index, category: Category | int | str, *, kind: str = "roi",
    settings: CompleteSettings | None = None, progress: ProgressFn | None = None,
    cancel: CancelFn | None = None, device: str | None = None, predictor: Detector | None = None,
    cache: PredictionCache | None = None, source: Source | None = None,
) -> Proposals:
    """Detections of ``category`` on the images of other categories that have no observation
    of it yet (the specification: it "looks across the other categories"; images with no
    observation at all and videos are left out), as proposals numbered from 1, best first per
    image. Nothing is saved, so an image whose file is gone is skipped, not a reason to stop;
    it is named in ``skipped``. ``settings``: the Complete dialog's min score and max detections
    (remove existing does not apply: nothing is written). ``predictor``, ``cache`` and
    ``source`` as for :func:`~napari_learn_complete.engine.complete.complete`; a source may
    return images in any order, the proposals are numbered in the images' order all the same."""
    check_kind(kind)
    settings = settings or CompleteSettings()
    batch_size = settings.batch_size
    cat = index.category(category)
    cat.require(kind)
    if not index.has_observations(cat):
        raise RefusedError(
            f"category {cat.name!r} has no observations yet; label some and Learn first"
        )
    labelled = index.observation_counts()  # images belonging to some category
    records = [image for image in index.images(exclude_category=cat.id)
               if image.id in labelled and not image.is_video]
    missing = missing_files(index, records)
    skipped = {image.name: f"image file not found: {index.resolve(image)}" for image in missing}
    records = [image for image in records if image.name not in skipped]
    source = source or LocalSource(predictor or load_predictor(index, device), cache)
    source.check(kind, cat)
    gone = f", {len(skipped)} skipped (file not found)" if skipped else ""
    batches = math.ceil(len(records) / batch_size)
    start = time.perf_counter()
    found: dict[int, list[Detection]] = {}  # image id -> its selected detections
    count = 0
    stream = source.predictions(index, records, batch_size, cancel=cancel)
    with closing(stream):  # a stop ends the decoding threads (or the workers) now
        for number, (chunk, detected) in enumerate(stream, 1):
            for image, detections in zip(chunk, detected, strict=True):
                found[image.id] = select(detections, cat.name, kind, settings)
                count += len(found[image.id])
            elapsed = time.perf_counter() - start
            report(progress, Progress(
                "propose", number, batches,
                message=f"{len(found)}/{len(records)} images ({rate(len(found), elapsed)}), "
                        f"{count} proposals{gone}",
                eta_s=elapsed / len(found) * (len(records) - len(found)),
            ))
    proposals = Proposals(skipped=skipped)
    for image in records:
        for det in found.get(image.id, ()):
            proposals.append(Proposal(
                id=len(proposals) + 1, image_id=image.id, image_name=image.name,
                category=cat.name, box=det.box,
                keypoints=det.keypoints if kind == "keypoints" else None,
                score=det.score, kind=kind, model_version=source.model_version,
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
    check_kind(kind)
    cat = index.category(name)
    cat.require(kind)
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
    refuse_video(image for image, _ in per_image.values())

    start = time.perf_counter()
    written: list[int] = []
    with index.transaction():  # all or nothing, run record included
        run_id = index.runs.start(
            "accept", model_id=None, kind=kind,
            scope={"category": cat.name, "category_id": cat.id, "proposals": sorted(seen)},
            settings={"min_score": min_score, "model_version": version},
        )
        writer = ObservationWriter(index, run_id, cat, kind, version, remove_existing=False)
        for image, detections in per_image.values():
            ids, _ = writer.write(image, sorted(detections, key=lambda d: -d.score))
            written += ids
        seconds = time.perf_counter() - start
        index.runs.finish(run_id, "done", seconds=seconds,
                         metrics={"images": len(per_image), "written": len(written), "removed": 0})
    return CompleteResult(run_id, len(per_image), len(written), 0, seconds, written)


def save_proposals(
    path: str | os.PathLike, proposals: Sequence[Proposal], *, index: Index,
    category: Category | int | str, kind: str,
) -> None:
    """Write proposals as JSON, with the index, category, kind and model version they are for."""
    check_kind(kind)
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
