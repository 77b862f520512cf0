"""Complete: the active model writes boxes (ROI) or keypoints into a captured index and category,
batch by batch (the write rules: :mod:`.write_rules`; propose/accept: :mod:`.proposals`; undo:
``index.runs.undo``).

Where the detections come from is a :class:`Source`: the model in this process
(:class:`LocalSource`) or workers elsewhere (:class:`~.ray_runner.RaySource`); this process
writes them either way, so the index keeps one writer and one set of rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import BadInputError, Cancelled, RefusedError, StoppedPartWay, explain, listed
from ..index import Category, ImageRecord, Index, check_kind
from .detections import Detection, Detector, PredictionCache, predictions
from .progress import CancelFn, Progress, ProgressFn, check_cancel, report
from .results import CompleteResult
from .settings import CompleteSettings
from .write_rules import ObservationWriter, select

Batches = Generator[tuple[list[ImageRecord], list[list[Detection]]], None, None]


def refuse_video(images: Iterable[ImageRecord]) -> None:
    """Complete, propose and accept write to images only (the specification: video is refused,
    naming the clips)."""
    video = [image for image in images if image.is_video]
    if video:
        raise RefusedError(
            f"Complete supports images only; the selection includes {len(video)} video "
            f"item(s): {listed(i.name for i in video)}"
        )


def missing_files(index: Index, images: Iterable[ImageRecord]) -> list[ImageRecord]:
    """The images whose file is gone (moved or deleted since they were added): Complete refuses
    them before writing anything, propose leaves them out and names them."""
    return [image for image in images if not index.resolve(image).exists()]


def load_predictor(index: Index, device: str | None) -> Detector:
    """The active model, loaded only when no predictor was injected: importing it loads torch."""
    from .predict import Predictor

    return Predictor.from_index(index, device)


class Source(Protocol):
    """Where Complete and propose get their detections: the model version they come from, its
    refusals, and the stream of ``(images, detections per image)`` batches, each of at most
    ``batch_size`` images, in any order, every image once. Closing the stream stops the work."""

    model_id: int | None
    model_version: str

    def check(self, kind: str, category: Category) -> None: ...

    def predictions(self, index: Index, images: Sequence[ImageRecord], batch_size: int, *,
                    cancel: CancelFn | None = None) -> Batches: ...


@dataclass
class LocalSource:
    """The detector in this process (the active model, or one a test injects) and its cache of
    detections of images it already saw."""

    detector: Detector
    cache: PredictionCache | None = None

    @property
    def model_id(self) -> int | None:
        return self.detector.model_id

    @property
    def model_version(self) -> str:
        return self.detector.model_version

    def check(self, kind: str, category: Category) -> None:
        self.detector.check(kind, category)

    def predictions(self, index: Index, images: Sequence[ImageRecord], batch_size: int, *,
                    cancel: CancelFn | None = None) -> Batches:
        return predictions(index, images, self.detector, batch_size, cancel=cancel,
                           cache=self.cache)


def rate(images: int, seconds: float) -> str:
    """Images per second as the progress messages show it."""
    return f"{images / seconds:.1f} images/s" if seconds > 0 else "- images/s"


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
    cache: PredictionCache | None = None,
    source: Source | None = None,
) -> CompleteResult:
    """Run the active model over ``images`` and write ``kind`` for ``category``, batch by batch.

    The index, the category and the images are resolved now and written whatever happens
    afterwards (a rename, another category chosen in the UI). Everything that can be refused is
    refused before anything is written (a missing image file included). Each batch is one
    transaction; ``on_batch(ids)`` hears the observation ids written by it after its commit. On
    cancel, the batches committed so far stay (undo them with the run id in the
    :class:`Cancelled` message) and ``Cancelled`` is raised; an error after a batch changed the
    index (a corrupt image, the write lock, a full disk) is raised as :class:`StoppedPartWay`,
    which says the same, with the error as its cause. The run is recorded as failed.
    ``predictor`` replaces the active model (tests inject a deterministic one); ``cache`` holds
    its detections of images it already saw (see :class:`PredictionCache`), reused, not predicted
    again. ``source`` replaces both: detections computed elsewhere (:class:`Source`), written
    here by the same rules and transactions.
    """
    check_kind(kind)
    settings = settings or CompleteSettings()
    cat = index.category(category)
    records = index.resolve_images(images)
    if not records:
        raise RefusedError("Complete needs at least one image; none were selected")
    refuse_video(records)
    if missing := missing_files(index, records):
        raise BadInputError(
            f"image file not found for {len(missing)} selected image(s), so nothing was "
            f"written: {listed(i.name for i in missing)} (first: {index.resolve(missing[0])})"
        )
    cat.require(kind)
    source = source or LocalSource(predictor or load_predictor(index, device), cache)
    source.check(kind, cat)

    start = time.perf_counter()
    run_id = index.runs.start(
        "complete", model_id=source.model_id, kind=kind,
        scope={"category": cat.name, "category_id": cat.id, "images": len(records)},
        settings=settings.model_dump(mode="json"),
    )
    writer = ObservationWriter(index, run_id, cat, kind, source.model_version,
                               settings.remove_existing)
    batches = math.ceil(len(records) / settings.batch_size)
    done, written, removed = 0, [], 0

    def measured() -> dict[str, Any]:
        return {"seconds": time.perf_counter() - start,
                "metrics": {"images": done, "written": len(written), "removed": removed}}

    # runs nothing until iterated
    stream = source.predictions(index, records, settings.batch_size, cancel=cancel)
    try:
        for number, (chunk, found) in enumerate(stream, 1):
            check_cancel(cancel)
            batch_ids, batch_removed = [], 0
            with index.transaction():
                for image, detections in zip(chunk, found, strict=True):
                    ids, n = writer.write(image, select(detections, cat.name, kind, settings))
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
                message=f"{done}/{len(records)} images ({rate(done, elapsed)}), "
                        f"{len(written)} written, {removed} removed",
                eta_s=elapsed / done * (len(records) - done),
            ))
        index.runs.finish(run_id, "done", **measured())
    except BaseException as exc:
        status = index.runs.end_on_error(run_id, exc, **measured())
        kept = (f"the {len(written)} result(s) saved so far are kept"
                f"{f' and the {removed} removed stay removed' if removed else ''} "
                f"(run {run_id}: undo it to take them back)")
        if status == "cancelled":
            raise Cancelled(
                f"Complete cancelled after {done} of {len(records)} images; {kept}"
            ) from None
        if isinstance(exc, Exception) and (written or removed):
            raise StoppedPartWay(
                f"{explain(exc)}; Complete stopped part-way, after {done} of {len(records)} "
                f"images: {kept}", run_id,
            ) from exc
        raise
    finally:
        stream.close()  # a stop ends the decoding threads (or the workers) now, not when collected
    return CompleteResult(run_id, done, len(written), removed, time.perf_counter() - start,
                          written)
