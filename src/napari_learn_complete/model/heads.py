"""RoI heads that train the keypoint head on a sample of each object's positive regions.

torchvision's Keypoint R-CNN trains its keypoint head on every positive region the box sampler
drew: on images of a few objects that is about a dozen jittered copies of each object, and the
head's 14 x 14 convolutions over them (forward and backward) were more than half of a training
step (docs/effort.md). A few regions per object carry the same lesson; which ones is drawn anew
every step from torch's generator, so a seeded run repeats. Inference is torchvision's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, keypointrcnn_loss

# Positive regions per object the keypoint head trains on in one step.
KEYPOINT_REGIONS_PER_OBJECT = 4

Target = dict[str, Tensor]
_KEYPOINT_MODULES = ("keypoint_roi_pool", "keypoint_head", "keypoint_predictor")


class SampledKeypointRoIHeads(RoIHeads):
    """torchvision's :class:`RoIHeads` whose training step feeds the keypoint head at most
    ``regions_per_object`` positive regions of each ground-truth object."""

    regions_per_object: int = KEYPOINT_REGIONS_PER_OBJECT

    @classmethod
    def like(cls, heads: RoIHeads) -> SampledKeypointRoIHeads:
        """The same heads, matcher, sampler and inference settings as ``heads``."""
        return cls(
            heads.box_roi_pool, heads.box_head, heads.box_predictor,
            heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights, heads.score_thresh, heads.nms_thresh,
            heads.detections_per_img,
            keypoint_roi_pool=heads.keypoint_roi_pool, keypoint_head=heads.keypoint_head,
            keypoint_predictor=heads.keypoint_predictor,
        )

    def select_training_samples(self, proposals: list[Tensor], targets: list[Target]) -> tuple:
        sampled = super().select_training_samples(proposals, targets)
        self._sampled = sampled
        return sampled

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]], targets: list[Target] | None = None,
                ) -> tuple[list[Target], dict[str, Tensor]]:
        if not self.training or not self.has_keypoint():
            return super().forward(features, proposals, image_shapes, targets)
        with boxes_only(self):
            result, losses = super().forward(features, proposals, image_shapes, targets)
        sampled, matched, labels, _ = self._sampled
        del self._sampled
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
def boxes_only(heads: RoIHeads) -> Iterator[None]:
    """torchvision's forward of ``heads`` with the keypoint branch off (it runs when all three of
    its modules are set): the boxes, scores and labels are the same, and what judges only those
    skips the keypoint head's work on every detection."""
    modules = {name: getattr(heads, name) for name in _KEYPOINT_MODULES}
    for name in _KEYPOINT_MODULES:
        setattr(heads, name, None)
    try:
        yield
    finally:
        for name, module in modules.items():
            setattr(heads, name, module)
