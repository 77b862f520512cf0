"""Inference with the active model: detections per image, streamed batch by batch.

Complete and propose read images, run them through the detector and turn its raw output (class ids,
boxes, keypoint channels) into :class:`Detection` objects in index terms: a category name and the
category's own keypoint order. Images are decoded in a background thread one batch ahead of the
device, and nothing is kept once a batch has been handed on, so memory does not grow with the
number of images.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ..errors import RefusedError
from ..index import Category, ImageRecord, Index
from ..index.media import to_rgb_uint8
from ..index.store import Box, Keypoint
from ..model.config import ModelConfig
from .device import autocast, choose_device


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

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


class Predictor:
    """A loaded detector in eval mode plus the mapping of its outputs to index categories."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        categories: Sequence[Category],
        *,
        device: torch.device | str | None = None,
        model_version: str = "",
        model_id: int | None = None,
    ) -> None:
        self.device = choose_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.model_version = model_version
        self.model_id = model_id
        # Keypoint channels per category name, fixed now: a category renamed later keeps its
        # captured mapping for the whole run. Categories whose keypoints the model does not know
        # get boxes only (``check`` refuses keypoint work on them).
        self._slots = {
            c.name: config.keypoint_slots(c)
            for c in categories
            if c.keypoints_enabled and config.supports("keypoints")
            and set(c.keypoint_names) <= set(config.keypoint_names)
        }

    @classmethod
    def from_index(cls, index: Index, device: torch.device | str | None = None) -> Predictor:
        """The active model of ``index`` at its active version (RefusedError when none)."""
        from ..model.registry import active_model

        handle = active_model(index)
        dev = choose_device(device)
        model = handle.load(dev)
        return cls(
            model, handle.config, index.categories(), device=dev,
            model_version=f"{handle.name}:v{handle.active_version}", model_id=handle.id,
        )

    def check(self, kind: str, category: Category) -> None:
        """Refuse a kind the architecture lacks, a category the model was not made for, and
        keypoints the model has no channel for (the message says which)."""
        name = self.config.name
        if not self.config.supports(kind):
            raise RefusedError(
                f"model {name!r} ({self.config.architecture}) does not predict {kind}; "
                "create a keypoint model to complete keypoints"
            )
        if category.name not in self.config.categories:
            raise RefusedError(f"model {name!r} was not made for category {category.name!r}")
        if kind == "keypoints":
            self.config.keypoint_slots(category)  # raises naming the missing keypoints

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections of each image (any dtype/channels; converted to RGB uint8 first)."""
        # Decoded files can be read-only arrays; torch wants writable memory.
        arrays = [np.require(to_rgb_uint8(a), requirements="W") for a in images]
        tensors = [
            F.to_dtype(F.to_image(a).to(self.device), torch.float32, scale=True) for a in arrays
        ]
        with torch.inference_mode():
            with autocast(self.device):
                outputs = self.model(tensors)
            return [
                self._detections(out, a.shape[1], a.shape[0])
                for out, a in zip(outputs, arrays, strict=True)
            ]

    def _detections(self, output: dict, width: int, height: int) -> list[Detection]:
        boxes = output["boxes"].float().cpu().clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        labels = output["labels"].cpu().tolist()
        scores = output["scores"].float().cpu().tolist()
        keypoints = output.get("keypoints")
        if keypoints is not None:
            keypoints = keypoints.float().cpu().clone()
            keypoints[..., 0] = keypoints[..., 0].clamp(0, width)
            keypoints[..., 1] = keypoints[..., 1].clamp(0, height)
        found = []
        for i, (label, score) in enumerate(zip(labels, scores, strict=True)):
            if not 1 <= label <= len(self.config.categories):
                continue  # background or a class the configuration does not name
            name = self.config.categories[label - 1]
            kps = None
            if keypoints is not None and name in self._slots:
                # Keypoint R-CNN predicts every channel; the category keeps its own, visible.
                kps = tuple(
                    (float(keypoints[i, s, 0]), float(keypoints[i, s, 1]), 2)
                    for s in self._slots[name]
                )
            box = tuple(float(v) for v in boxes[i])
            found.append(Detection(name, box, float(score), kps))  # type: ignore[arg-type]
        return found


def stream_images(
    index: Index, images: Sequence[ImageRecord], batch_size: int
) -> Iterator[tuple[list[ImageRecord], list[np.ndarray]]]:
    """Batches of ``(records, RGB uint8 arrays)``, decoded in a background thread one batch ahead.

    At most two decoded batches exist at a time (the one in use and the next), whatever the
    number of images. Closing the generator early stops the reader.
    """
    ahead: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for start in range(0, len(images), batch_size):
                chunk = list(images[start:start + batch_size])
                arrays = [to_rgb_uint8(index.read_image(r)) for r in chunk]
                if not put((chunk, arrays)):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

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
            del item  # drop our reference before waiting for the next batch
    finally:
        stop.set()
        reader.join()


class ScriptedDetector:
    """A deterministic :class:`Detector` that returns given detections per image: for tests
    and demos of the write rules (Complete, propose, the review table) without a trained model.

    Images are recognised by their pixels, since ``predict`` only sees arrays.
    """

    def __init__(
        self,
        index: Index,
        detections: dict[str, Sequence[Detection]],
        *,
        kinds: tuple[str, ...] = ("roi", "keypoints"),
        model_version: str = "scripted:v1",
    ) -> None:
        self.model_id = None
        self.model_version = model_version
        self.kinds = kinds
        self.calls = 0  # batches predicted so far
        self._by_pixels = {
            _fingerprint(index.read_image(name)): list(found)
            for name, found in detections.items()
        }

    def check(self, kind: str, category: Category) -> None:
        if kind not in self.kinds:
            raise RefusedError(f"model {self.model_version!r} does not predict {kind}")

    def predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self.calls += 1
        return [list(self._by_pixels.get(_fingerprint(a), [])) for a in images]


def _fingerprint(array: np.ndarray) -> bytes:
    return hashlib.sha1(to_rgb_uint8(array).tobytes()).digest()
