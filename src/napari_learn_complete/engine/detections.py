"""Detections in index terms, the protocol Complete needs from a model, and the image stream.

Free of torch: Complete's write rules, propose files and accept use these in napari's process too;
only :mod:`.predict` (the real model) needs torch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..index import Box, Category, ImageRecord, Index, Keypoint, media

# The largest min_size and max_size a model configuration allows (model.config.Size): an image
# read for any detector needs no more pixels than this.
LARGEST_INPUT = (4096, 4096)


@dataclass(frozen=True)
class Detection:
    """One object found by the model, in image pixels (box corners x0, y0, x1, y1); keypoints
    are (x, y, v) in the category's keypoint order, or None when the category has none."""

    category: str
    box: Box
    score: float
    keypoints: tuple[Keypoint, ...] | None = None


class Detector(Protocol):
    """What Complete needs from a model; tests of the write rules inject a deterministic one."""

    model_id: int | None
    model_version: str

    def check(self, kind: str, category: Category) -> None:
        """Raise RefusedError when the model cannot write ``kind`` for ``category``."""

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, in the pixels of the image itself: an image read reduced
        (:class:`~napari_learn_complete.index.media.Reduced`) has its positions scaled back."""


def stream_images(
    index: Index, images: Sequence[ImageRecord], batch_size: int,
    fit: tuple[int, int] = LARGEST_INPUT,
) -> Iterator[tuple[list[ImageRecord], list[np.ndarray]]]:
    """Batches of ``(records, RGB uint8 arrays)``, decoded in a background thread one batch ahead.

    At most two decoded batches exist at a time (the one in use and the next), whatever the
    number of images, and each image is read reduced for ``fit`` (see :meth:`Index.read_image`), so
    the memory they take is bounded whatever the image sizes. Closing the generator early stops
    the reader.
    """
    ahead: queue.Queue = queue.Queue()
    slots = threading.Semaphore(2)  # decoded batches alive: the one in use and the next
    stop = threading.Event()

    def take_slot() -> bool:
        while not stop.is_set():
            if slots.acquire(timeout=0.1):
                return True
        return False

    def read() -> None:
        try:
            for start in range(0, len(images), batch_size):
                if not take_slot():
                    return
                chunk = list(images[start:start + batch_size])
                ahead.put((chunk, [media.to_rgb_uint8(index.read_image(r, fit=fit))
                                  for r in chunk]))
            ahead.put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            ahead.put(exc)

    reader = threading.Thread(target=read, name="napari-learn-complete-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = ahead.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            del item  # drop our reference, then let the reader decode the one after next
            slots.release()
    finally:
        stop.set()
        reader.join()
