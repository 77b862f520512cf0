"""Inference with the active model: detections per image, streamed batch by batch.

Complete and propose read images, run them through the detector and turn its raw output (class ids,
boxes, keypoint channels) into :class:`Detection` objects in index terms: a category name and the
category's own keypoint order. This is the only part of Complete that needs torch (the write rules
and the image stream are in :mod:`.complete` and :mod:`.detections`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ..errors import RefusedError
from ..index import Category, Index
from ..index.media import full_size, to_rgb_uint8
from ..model.build import folded
from ..model.config import ModelConfig
from .detections import Detection
from .device import choose_device, precision
from .views import Views, detect


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
        self.model = model.to(self.device).eval()  # its weights as saved (RaySource pins them)
        self.net = folded(self.model)  # what runs: the same detections, faster
        self.config = config
        self.model_version = model_version
        self.model_id = model_id
        self.fit = (config.min_size, config.max_size)  # images are read reduced to this
        self.views = Views.of(config)
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
        model, config = handle.load(dev)
        return cls(
            model, config, index.categories(), device=dev,
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
        """Detections of each image (any dtype/channels; converted to RGB uint8 first), in the
        pixels of the image itself: a reduced image's are scaled back to its full size."""
        tensors = self._inputs(images)
        with torch.inference_mode(), precision(self.device, "infer"):
            outputs = detect(self.net, tensors, self.views)
            return [
                self._detections(out, t.shape[-1], t.shape[-2], full_size(a))
                for out, t, a in zip(outputs, tensors, images, strict=True)
            ]

    def _inputs(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """The model's inputs on its device. Images of one size travel as one tensor; an image
        larger than the model uses is scaled down to that size as uint8, before the float
        conversion, so memory stays bounded whatever the image size."""
        arrays = [to_rgb_uint8(a) for a in images]
        same_size = len({a.shape for a in arrays}) == 1
        inputs: list[torch.Tensor] = []
        for group in [np.stack(arrays)] if same_size else [a[None] for a in arrays]:
            # Decoded files can be read-only arrays; torch wants writable memory.
            pixels = torch.from_numpy(np.require(group, requirements="W"))
            pixels = pixels.permute(0, 3, 1, 2).contiguous()
            height, width = pixels.shape[-2:]
            scale = min(self.config.min_size / min(height, width),
                        self.config.max_size / max(height, width))
            if scale < 1:
                size = [max(1, round(height * scale)), max(1, round(width * scale))]
                pixels = F.resize(pixels, size, antialias=True)
            inputs += F.to_dtype(pixels.to(self.device), torch.float32, scale=True).unbind()
        return inputs

    def _detections(
        self, output: dict, width: int, height: int, full: tuple[int, int]
    ) -> list[Detection]:
        """Detections on a ``width`` x ``height`` input, in the pixels of an image of size
        ``full``; each tensor is scaled as a whole and read once (``tolist``)."""
        sx, sy = full[0] / width, full[1] / height
        boxes = output["boxes"].float().cpu().clone()
        boxes[:, 0::2] = (boxes[:, 0::2] * sx).clamp(0, full[0])
        boxes[:, 1::2] = (boxes[:, 1::2] * sy).clamp(0, full[1])
        labels = output["labels"].cpu().tolist()
        scores = output["scores"].float().cpu().tolist()
        keypoints = output.get("keypoints")
        if keypoints is not None:
            keypoints = keypoints.float().cpu().clone()
            keypoints[..., 0] = (keypoints[..., 0] * sx).clamp(0, full[0])
            keypoints[..., 1] = (keypoints[..., 1] * sy).clamp(0, full[1])
            keypoints = keypoints.tolist()
        names = self.config.categories
        found = []
        for i, (label, box, score) in enumerate(zip(labels, boxes.tolist(), scores, strict=True)):
            if not 1 <= label <= len(names):
                continue  # background or a class the configuration does not name
            name = names[label - 1]
            kps = None
            if keypoints is not None and name in self._slots:
                # Keypoint R-CNN predicts every channel; the category keeps its own, visible.
                kps = tuple((keypoints[i][s][0], keypoints[i][s][1], 2) for s in self._slots[name])
            found.append(Detection(name, tuple(box), score, kps))  # type: ignore[arg-type]
        return found
