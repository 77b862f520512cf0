"""Test-time views: each detection averaged with the model's detections of the same object in the
mirrored image and at other input sizes.

A model that learned mirrored images (``training.augment.hflip``, else ``vflip``) and sizes
(``scale_jitter``) finds an object in the mirrored image and at another input size too, each
time with its own small error; the errors are partly independent, so their average lies closer
to the object. A person adjusts every box that overlaps its object by less than 0.85 IoU
(docs/effort.md): on the effort benchmark the mirror alone turned 18 of the next 64 images' 72
box corrections into none, and a second input size (1.2 times the model's) took off more
(docs/complete.md, "Mirror averaging", "Averaging over input sizes"). Each view costs a pass of
the model; the images of one size and their mirrors run as one batch. Scores, labels and the
number of detections stay those of the plain image at the model's own size, so the min score and
max detections mean what they meant without the views.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ..model.config import ModelConfig
from .data import HFLIP_PATTERNS, VFLIP_PATTERNS, mirror_permutation

PAIR_IOU = 0.5  # a detection of another view overlapping this much (same class) is the same object

Output = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Views:
    """The views a model's detections are averaged over: ``axis`` of the image tensor its mirror
    flips (-1: left-right, -2: top-bottom; None: no mirrored view), per keypoint channel the
    channel of its mirror partner, and the input sizes as shares of the model's own."""

    axis: int | None
    permutation: tuple[int, ...] = ()
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def of(cls, config: ModelConfig) -> Views | None:
        """The views of ``config``: the mirror when its inference averages (``inference.mirror``)
        and its training taught the model mirrored images, and its ``inference.scales``; None
        when that leaves the plain image alone (one pass)."""
        augment = config.training.augment
        scales = config.inference.scales
        if not config.inference.mirror or not (augment.hflip or augment.vflip):
            return cls(None, (), scales) if len(scales) > 1 else None
        patterns = HFLIP_PATTERNS if augment.hflip else VFLIP_PATTERNS
        return cls(-1 if augment.hflip else -2,
                   tuple(mirror_permutation(config.keypoint_names, patterns)), scales)

    def unmirror(self, mirrored: Output, extent: int) -> Output:
        """``mirrored``, the output on the image mirrored along an axis ``extent`` pixels long, in
        the plain image's coordinates, its keypoints back in their own channels."""
        c = 0 if self.axis == -1 else 1  # the coordinate the mirror flips
        boxes = mirrored["boxes"].clone()
        boxes[:, [c, c + 2]] = extent - mirrored["boxes"][:, [c + 2, c]]
        back = dict(mirrored, boxes=boxes)
        if "keypoints" in mirrored:
            points = mirrored["keypoints"][:, list(self.permutation)].clone()
            points[..., c] = extent - points[..., c]
            back["keypoints"] = points
        return back


def fuse(plain: Output, views: Sequence[Output]) -> Output:
    """``plain`` with each box (and keypoint) averaged, weighted by score, with the best
    overlapping detection of the same class in each of ``views`` (outputs in the plain image's
    coordinates); a detection without one in a view keeps its own there."""
    if not len(plain["boxes"]):
        return plain
    weight = plain["scores"].clone()
    boxes = plain["boxes"] * weight[:, None]
    points = plain["keypoints"][..., :2] * weight[:, None, None] if "keypoints" in plain else None
    paired = torch.zeros_like(weight, dtype=torch.bool)
    for view in views:
        if not len(view["boxes"]):
            continue
        overlap = box_iou(plain["boxes"].float(), view["boxes"].float())
        overlap[plain["labels"][:, None] != view["labels"][None, :]] = 0
        best, partner = overlap.max(dim=1)
        found = best >= PAIR_IOU
        paired |= found
        share = torch.where(found, view["scores"][partner], 0)
        weight = weight + share
        boxes = boxes + share[:, None] * view["boxes"][partner]
        if points is not None:
            points = points + share[:, None, None] * view["keypoints"][partner][..., :2]
    weight = weight.clamp_min(1e-12)[:, None]
    fused = dict(plain, boxes=torch.where(paired[:, None], boxes / weight, plain["boxes"]))
    if points is not None:
        averaged = plain["keypoints"].clone()
        averaged[..., :2] = torch.where(paired[:, None, None], points / weight[..., None],
                                        plain["keypoints"][..., :2])
        fused["keypoints"] = averaged
    return fused


@contextmanager
def input_scale(model: torch.nn.Module, scale: float) -> Iterator[None]:
    """``model`` (a torchvision detector) resizing its inputs to ``scale`` times its own size
    while inside; its own size again after."""
    if scale == 1.0:
        yield
        return
    transform = model.transform
    sizes = transform.min_size, transform.max_size
    transform.min_size = tuple(round(size * scale) for size in sizes[0])
    transform.max_size = round(sizes[1] * scale)
    try:
        yield
    finally:
        transform.min_size, transform.max_size = sizes


def detect(model: torch.nn.Module, images: Sequence[torch.Tensor],
           views: Views | None) -> list[Output]:
    """``model(images)`` in eval mode; with ``views``, the images (and their mirrored copies) go
    through the model once per input size, and each image's detections are averaged with those
    of its other views."""
    if views is None:
        return model(list(images))
    count = len(images)
    mirrored = [] if views.axis is None else [image.flip(views.axis) for image in images]
    passes = []
    for scale in views.scales:
        with input_scale(model, scale):
            passes.append(model([*images, *mirrored]))
    fused = []
    for i, image in enumerate(images):
        others = [outputs[i] for outputs in passes[1:]]
        if mirrored:
            extent = image.shape[views.axis]
            others += [views.unmirror(outputs[count + i], extent) for outputs in passes]
        fused.append(fuse(passes[0][i], others))
    return fused
