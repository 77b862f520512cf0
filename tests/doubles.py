"""Test doubles shared by the test modules."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Category, Index
from napari_learn_complete.index.media import to_rgb_uint8


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
