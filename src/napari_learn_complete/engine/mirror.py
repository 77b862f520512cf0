"""Mirror averaging: each detection averaged with the model's detection of the same object in the
mirrored image.

A model that learned mirrored images (``training.augment.hflip``, else ``vflip``) finds an object
in the mirrored image too, with its own small error; the two errors are partly independent, so
their average lies closer to the object. A person adjusts every box that overlaps its object by
less than 0.85 IoU (docs/effort.md): on the effort benchmark averaging turned 18 of the next 64
images' 72 box corrections into none (docs/complete.md, "Mirror averaging"). It costs a second
pass of the model, run in the same batch. Scores, labels and the number of detections stay the
plain image's, so the min score and max detections mean what they meant without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ..model.config import ModelConfig
from .data import HFLIP_PATTERNS, VFLIP_PATTERNS, mirror_permutation

MIRROR_IOU = 0.5  # a mirrored detection overlapping this much (same class) is the same object


@dataclass(frozen=True)
class Mirror:
    """The mirror a model learned: ``axis`` of the image tensor it flips (-1: left-right, -2:
    top-bottom) and, per keypoint channel, the channel of its mirror partner."""

    axis: int
    permutation: tuple[int, ...] = ()

    @classmethod
    def of(cls, config: ModelConfig) -> Mirror | None:
        """The mirror of ``config`` when its inference averages (``inference.mirror``) and its
        training taught the model mirrored images; else None (one pass)."""
        augment = config.training.augment
        if not config.inference.mirror or not (augment.hflip or augment.vflip):
            return None
        patterns = HFLIP_PATTERNS if augment.hflip else VFLIP_PATTERNS
        return cls(-1 if augment.hflip else -2,
                   tuple(mirror_permutation(config.keypoint_names, patterns)))

    def fuse(self, plain: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor],
             extent: int) -> dict[str, torch.Tensor]:
        """``plain`` with each box (and keypoint) averaged, weighted by score, with the best
        overlapping detection of the same class in ``mirrored`` (the output on the image mirrored
        along an axis ``extent`` pixels long); detections without one are kept as they are."""
        if not len(plain["boxes"]) or not len(mirrored["boxes"]):
            return plain
        c = 0 if self.axis == -1 else 1  # the coordinate the mirror flips
        back = mirrored["boxes"].clone()
        back[:, [c, c + 2]] = extent - mirrored["boxes"][:, [c + 2, c]]
        overlap = box_iou(plain["boxes"].float(), back.float())
        overlap[plain["labels"][:, None] != mirrored["labels"][None, :]] = 0
        best, partner = overlap.max(dim=1)
        paired = best >= MIRROR_IOU
        share = plain["scores"] / (plain["scores"] + mirrored["scores"][partner]).clamp_min(1e-12)
        share = torch.where(paired, share, torch.ones_like(share))[:, None]
        fused = dict(plain, boxes=share * plain["boxes"] + (1 - share) * back[partner])
        if "keypoints" in plain:
            points = mirrored["keypoints"][partner][:, list(self.permutation)].clone()
            points[..., c] = extent - points[..., c]
            averaged = plain["keypoints"].clone()
            averaged[..., :2] = (share[..., None] * plain["keypoints"][..., :2]
                                 + (1 - share[..., None]) * points[..., :2])
            fused["keypoints"] = averaged
        return fused


def detect(model: torch.nn.Module, images: Sequence[torch.Tensor],
           mirror: Mirror | None) -> list[dict[str, torch.Tensor]]:
    """``model(images)`` in eval mode; with a ``mirror``, the images and their mirrored copies go
    through the model as one batch and each image's detections are averaged with its copy's."""
    if mirror is None:
        return model(list(images))
    outputs = model([*images, *(image.flip(mirror.axis) for image in images)])
    count = len(images)
    return [mirror.fuse(plain, mirrored, image.shape[mirror.axis])
            for plain, mirrored, image in zip(outputs[:count], outputs[count:], images,
                                              strict=True)]
