"""RoI heads that train on what a person corrects: box overlap, and a few regions per object.

- :class:`OverlapRoIHeads` (every model) adds a GIoU loss on the positive regions' decoded boxes
  to torchvision's smooth L1 loss on encoded offsets. A person adjusts a box by how well it
  overlaps its object (the effort benchmark's 0.85 IoU); the offsets' loss weighs a pixel off on
  a small box as on a large one (docs/learn.md has what it changed).
- :class:`SampledKeypointRoIHeads` (keypoint models) also trains the keypoint head on a sample of
  each object's positive regions. torchvision trains it on every positive region the box sampler
  drew: on images of a few objects that is about a dozen jittered copies of each object, and the
  head's 14 x 14 convolutions over them (forward and backward) were more than half of a training
  step (docs/effort.md). A few regions per object carry the same lesson; which ones is drawn anew
  every step from torch's generator, so a seeded run repeats.

Inference is torchvision's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, keypointrcnn_loss
from torchvision.ops import generalized_box_iou_loss

# Positive regions per object the keypoint head trains on in one step.
KEYPOINT_REGIONS_PER_OBJECT = 4
# Weight of the GIoU loss, summed over the positive regions and divided by all sampled regions
# as torchvision divides its smooth L1 box loss (the weight mmdetection's GIoU Faster R-CNN uses).
GIOU_WEIGHT = 10.0

Target = dict[str, Tensor]
_KEYPOINT_MODULES = ("keypoint_roi_pool", "keypoint_head", "keypoint_predictor")


class OverlapRoIHeads(RoIHeads):
    """torchvision's :class:`RoIHeads` whose training step adds ``loss_box_giou``."""

    giou_weight: float = GIOU_WEIGHT

    @classmethod
    def like(cls, heads: RoIHeads, **keypoint_modules: Any) -> OverlapRoIHeads:
        """The same heads, matcher, sampler and inference settings as ``heads``."""
        return cls(
            heads.box_roi_pool, heads.box_head, heads.box_predictor,
            heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights, heads.score_thresh, heads.nms_thresh,
            heads.detections_per_img, **keypoint_modules,
        )

    def select_training_samples(self, proposals: list[Tensor], targets: list[Target]) -> tuple:
        # kept for the losses added after torchvision's forward: (regions, matched objects,
        # labels, regression targets) per image
        self.sampled = super().select_training_samples(proposals, targets)
        return self.sampled

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]], targets: list[Target] | None = None,
                ) -> tuple[list[Target], dict[str, Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        seen: list[Tensor] = []
        hook = self.box_predictor.register_forward_hook(lambda _m, _a, out: seen.append(out[1]))
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            hook.remove()
        regions, matched, labels, _ = self.sampled
        losses["loss_box_giou"] = self.giou_loss(seen[0], regions, matched, labels, targets)
        return result, losses

    def giou_loss(self, regression: Tensor, regions: list[Tensor], matched: list[Tensor],
                  labels: list[Tensor], targets: list[Target]) -> Tensor:
        """GIoU loss between each positive region's box (decoded with its object's class) and
        its object's box, weighted and normalised like torchvision's box loss."""
        label = torch.cat(labels)
        positive = torch.where(label > 0)[0]
        deltas = regression.reshape(len(label), -1, 4)[positive, label[positive]]
        boxes = self.box_coder.decode_single(deltas, torch.cat(regions)[positive])
        # an image without objects matches every region to a stand-in (all negatives)
        truth = torch.cat([t["boxes"][m] if len(t["boxes"]) else t["boxes"].new_zeros(len(m), 4)
                           for t, m in zip(targets, matched, strict=True)])
        loss = generalized_box_iou_loss(boxes, truth[positive], reduction="sum")
        return self.giou_weight * loss / max(1, len(label))


class SampledKeypointRoIHeads(OverlapRoIHeads):
    """:class:`OverlapRoIHeads` whose training step feeds the keypoint head at most
    ``regions_per_object`` positive regions of each ground-truth object."""

    regions_per_object: int = KEYPOINT_REGIONS_PER_OBJECT

    @classmethod
    def like(cls, heads: RoIHeads, **_: Any) -> SampledKeypointRoIHeads:
        """The same heads, keypoint modules included, as ``heads``."""
        return super().like(heads, **{name: getattr(heads, name) for name in _KEYPOINT_MODULES})

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]], targets: list[Target] | None = None,
                ) -> tuple[list[Target], dict[str, Tensor]]:
        if not self.training or not self.has_keypoint():
            return super().forward(features, proposals, image_shapes, targets)
        with self._without_keypoints():
            result, losses = super().forward(features, proposals, image_shapes, targets)
        sampled, matched, labels, _ = self.sampled
        regions, objects = [], []
        for boxes, matches, label in zip(sampled, matched, labels, strict=True):
            keep = self.pick(matches, label > 0)
            regions.append(boxes[keep])
            objects.append(matches[keep])
        pooled = self.keypoint_roi_pool(features, regions, image_shapes)
        logits = self.keypoint_predictor(self.keypoint_head(pooled))
        truth = [t["keypoints"] for t in targets]
        losses["loss_keypoint"] = keypointrcnn_loss(logits, regions, truth, objects)
        return result, losses

    def pick(self, matches: Tensor, positive: Tensor) -> Tensor:
        """Indices of at most ``regions_per_object`` positive regions of each object, drawn at
        random."""
        candidates = torch.where(positive)[0]
        candidates = candidates[torch.randperm(len(candidates), device="cpu").to(matches.device)]
        owners = matches[candidates]
        order = torch.argsort(owners, stable=True)
        candidates, owners = candidates[order], owners[order]
        # rank of each region among its object's: position minus where the object's run starts
        position = torch.arange(len(owners), device=owners.device)
        starts = torch.ones_like(owners, dtype=torch.bool)
        starts[1:] = owners[1:] != owners[:-1]
        first = torch.cummax(torch.where(starts, position, 0), 0).values
        return candidates[position - first < self.regions_per_object]

    @contextmanager
    def _without_keypoints(self) -> Iterator[None]:
        """torchvision's forward with the keypoint branch off (it runs when all three are set)."""
        modules = {name: getattr(self, name) for name in _KEYPOINT_MODULES}
        for name in _KEYPOINT_MODULES:
            setattr(self, name, None)
        try:
            yield
        finally:
            for name, module in modules.items():
                setattr(self, name, module)
