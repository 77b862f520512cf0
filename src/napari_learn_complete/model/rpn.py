"""A region proposal network whose per-image proposal filtering runs on several CPU threads.

torchvision filters each image's proposals in turn, and its CPU non-maximum suppression is one
thread: in training (2,000 proposals per level) it was 43% of a heads-only step on 4 images at
480 px, with the other core idle (docs/performance.md). Each image's filtering depends on that
image alone and the kernel releases the GIL, so the images go to a thread pool; the proposals
are the same to the bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="proposals")


class ThreadedRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's :class:`RegionProposalNetwork`, filtering images in parallel on the CPU."""

    @classmethod
    def like(cls, rpn: RegionProposalNetwork) -> ThreadedRegionProposalNetwork:
        """The same anchors, head, matcher, sampler and proposal counts as ``rpn``."""
        threaded = cls(
            rpn.anchor_generator, rpn.head,
            rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction,
            dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n), rpn.nms_thresh,
            rpn.score_thresh,
        )
        threaded.min_size = rpn.min_size
        return threaded

    def filter_proposals(self, proposals: Tensor, objectness: Tensor,
                         image_shapes: list[tuple[int, int]], num_anchors_per_level: list[int],
                         ) -> tuple[list[Tensor], list[Tensor]]:
        images = len(image_shapes)
        if images < 2 or proposals.device.type != "cpu" or torch.get_num_threads() < 2:
            return super().filter_proposals(proposals, objectness, image_shapes,
                                            num_anchors_per_level)
        scores = objectness.reshape(images, -1)  # what torchvision's filtering reads per image

        def one(i: int) -> tuple[list[Tensor], list[Tensor]]:
            return super(ThreadedRegionProposalNetwork, self).filter_proposals(
                proposals[i:i + 1], scores[i:i + 1], image_shapes[i:i + 1],
                num_anchors_per_level)

        parts = list(_pool().map(one, range(images)))
        return [p[0][0] for p in parts], [p[1][0] for p in parts]
