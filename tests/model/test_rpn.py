"""Proposals filtered on several threads are torchvision's, image by image, to the bit."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork

from napari_learn_complete.model import ModelConfig, build_model
from napari_learn_complete.model.rpn import ThreadedRegionProposalNetwork

SIZE = 160


@pytest.mark.parametrize("training", [True, False])
def test_threaded_proposals_equal_torchvisions(training):
    torch.manual_seed(0)
    config = ModelConfig(categories=["disc"], min_size=SIZE, max_size=SIZE)
    model = build_model(config).train(training)
    assert isinstance(model.rpn, ThreadedRegionProposalNetwork)
    images = [torch.rand(3, SIZE, SIZE) for _ in range(3)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])}
               for _ in images]
    batch, targets = model.transform(images, targets)
    with torch.no_grad():
        features = model.backbone(batch.tensors)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)  # the threaded path runs with two or more intra-op threads
        try:
            ours, _ = model.rpn(batch, features, targets if training else None)
        finally:
            torch.set_num_threads(threads)
        plain = RegionProposalNetwork.__new__(RegionProposalNetwork)
        plain.__dict__.update(model.rpn.__dict__)
        theirs, _ = plain(batch, features, targets if training else None)
    assert len(ours) == len(theirs) == len(images)
    for a, b in zip(ours, theirs, strict=True):
        assert len(a) > 0
        assert torch.equal(a, b)
    assert not all(torch.equal(ours[0], o) for o in ours[1:])  # each image has its own
