"""Detections in index terms, the protocol Complete needs from a model, the image stream and the
cache of predictions that lets a second Complete or a propose skip the model.

Free of torch: Complete's write rules, propose files and accept use these in napari's process too;
only :mod:`.predict` (the real model) needs torch.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..index import Box, Category, ImageRecord, Index, Keypoint, media
from .progress import CancelFn, check_cancel

# The largest min_size and max_size a model configuration allows (model.config.Size): an image
# read for any detector needs no more pixels than this.
LARGEST_INPUT = (4096, 4096)
# Threads decoding the next batch while the model runs on this one: PIL and tifffile release the
# GIL while they decode, so a batch of PNGs or JPEGs is read in about the time of its slowest one.
DECODE_WORKERS = 4
READER = "napari-learn-complete-reader"  # the name (prefix) of the decoding threads
# Detections a PredictionCache keeps (about 270 bytes each with a box only: 27 MB), least recently
# used image first out.
MAX_CACHED_DETECTIONS = 100_000


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found by the model, in image pixels (box corners x0, y0, x1, y1); keypoints
    are (x, y, v) in the category's keypoint order, or None when the category has none."""

    category: str
    box: Box
    score: float
    keypoints: tuple[Keypoint, ...] | None = None


class Detector(Protocol):
    """What Complete needs from a model; tests of the write rules inject a deterministic one.

    A detector may also have ``fit = (min_size, max_size)``, the input size it scales images to:
    images are then read reduced to that (as Learn reads them), else at most to
    :data:`LARGEST_INPUT`.
    """

    model_id: int | None
    model_version: str

    def check(self, kind: str, category: Category) -> None:
        """Raise RefusedError when the model cannot write ``kind`` for ``category``."""

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, in the pixels of the image itself: an image read reduced
        (:class:`~napari_learn_complete.index.media.Reduced`) has its positions scaled back."""


def stream_images(
    index: Index, images: Sequence[ImageRecord], batch_size: int,
    fit: tuple[int, int] = LARGEST_INPUT, workers: int = DECODE_WORKERS,
) -> Iterator[tuple[list[ImageRecord], list[np.ndarray]]]:
    """Batches of ``(records, RGB uint8 arrays)`` in order; ``workers`` threads decode the next
    batch while the caller works on this one.

    At most two batches exist at a time (the one in use and the next, being decoded), whatever
    the number of images, and each image is read reduced for ``fit`` (see
    :meth:`Index.read_image`), so the memory they take is bounded whatever the image sizes. A read
    error is raised when its batch is asked for, naming the first failing image of it. Closing
    the generator early stops the reading: it returns once the threads have ended.
    """
    batches = [list(images[start:start + batch_size])
               for start in range(0, len(images), batch_size)]
    if not batches:
        return

    def read(record: ImageRecord) -> np.ndarray:
        return media.to_rgb_uint8(index.read_image(record, fit=fit))

    pool = ThreadPoolExecutor(max(1, min(workers, batch_size)), thread_name_prefix=READER)

    def submit(chunk: list[ImageRecord]) -> list[Future]:
        return [pool.submit(read, record) for record in chunk]

    try:
        pending = submit(batches[0])
        for number, chunk in enumerate(batches):
            arrays = [future.result() for future in pending]
            pending = submit(batches[number + 1]) if number + 1 < len(batches) else []
            yield chunk, arrays
            del arrays  # the caller is done with this batch: only the next one is held now
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


ImageKey = tuple[str, int, str, int, int]


def image_key(index: Index, image: ImageRecord) -> ImageKey | None:
    """What identifies an image's pixels for the cache: the index, the image, its file's path,
    size and modification time (a file rewritten in place gets a new key). None for a frame of a
    zarr array, whose chunks can change without its folder showing it, or a file gone."""
    if image.media == "zarr":
        return None
    path = index.resolve(image)
    try:
        stat = os.stat(path)
    except OSError:
        return None  # the read says what is wrong with it
    return str(index.path), image.id, str(path), stat.st_size, stat.st_mtime_ns


class PredictionCache:
    """The detections of recently predicted images, for one detector, so Complete for another
    category (or propose after Complete) over the same images reuses them instead of decoding
    and predicting again. The detections kept are all the detector returned (before Complete's
    own min score and max detections), so they serve any category and settings.

    Entries are keyed by :func:`image_key`; the cache belongs to one detector object at a time
    (:meth:`bind`): a detector reloaded for another model version, configuration or category
    list is another object and starts it empty. Bounded to ``max_detections`` (an image with
    none counts as one), least recently used first out.
    """

    def __init__(self, max_detections: int = MAX_CACHED_DETECTIONS) -> None:
        self.max_detections = max_detections
        self._entries: OrderedDict[ImageKey, tuple[Detection, ...]] = OrderedDict()
        self._held = 0
        self._detector: weakref.ref | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, detector: Detector) -> None:
        """Use the cache for ``detector``'s predictions, forgetting another detector's."""
        if self._detector is None or self._detector() is not detector:
            self.clear()
            self._detector = weakref.ref(detector)

    def get(self, key: ImageKey | None) -> tuple[Detection, ...] | None:
        if key is None or key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: ImageKey | None, detections: Sequence[Detection]) -> None:
        if key is None:
            return
        if key in self._entries:
            self._held -= _weight(self._entries.pop(key))
        self._entries[key] = tuple(detections)
        self._held += _weight(detections)
        while self._held > self.max_detections:
            self._held -= _weight(self._entries.popitem(last=False)[1])

    def clear(self) -> None:
        self._entries.clear()
        self._held = 0
        self._detector = None


def _weight(detections: Sequence[Detection]) -> int:
    return max(1, len(detections))


def predictions(
    index: Index, images: Sequence[ImageRecord], detector: Detector, batch_size: int, *,
    cancel: CancelFn | None = None, cache: PredictionCache | None = None,
) -> Iterator[tuple[list[ImageRecord], list[list[Detection]]]]:
    """``detector``'s detections of ``images``, in order, in batches of ``batch_size`` images.

    Images in ``cache`` are neither read nor predicted; the others are decoded by
    :func:`stream_images` and predicted in batches of ``batch_size`` (``cancel`` is checked
    before each), and cached. Read errors and cancelling arrive as the stream and ``cancel``
    raise them, when the batch holding that image is asked for.
    """
    keys = [image_key(index, image) for image in images] if cache is not None else []
    cached: list[tuple[Detection, ...] | None] = [None] * len(images)
    if cache is not None:
        cache.bind(detector)
        cached = [cache.get(key) for key in keys]  # held for this run whatever the cache drops
    missing = [image for image, hit in zip(images, cached, strict=True) if hit is None]
    fit = getattr(detector, "fit", LARGEST_INPUT)
    stream = stream_images(index, missing, batch_size, fit)
    predicted: deque[list[Detection]] = deque()
    try:
        for start in range(0, len(images), batch_size):
            found = []
            for i in range(start, min(start + batch_size, len(images))):
                if cached[i] is not None:
                    found.append(list(cached[i]))
                    continue
                if not predicted:
                    _, arrays = next(stream)
                    check_cancel(cancel)
                    batch = detector.predict(arrays)
                    if len(batch) != len(arrays):
                        raise RuntimeError(f"the detector gave {len(batch)} results for "
                                           f"{len(arrays)} images")
                    predicted.extend(batch)
                    del arrays
                found.append(predicted.popleft())
                if cache is not None:
                    cache.put(keys[i], found[-1])
            yield list(images[start:start + batch_size]), found
    finally:
        stream.close()
