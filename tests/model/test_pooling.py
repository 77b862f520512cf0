"""The CPU RoIAlign computes torchvision's RoIAlign, forward and backward, and the models use it."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align

from napari_learn_complete.model import ModelConfig, build_model
from napari_learn_complete.model.pooling import FastMultiScaleRoIAlign, roi_align


def _rois(generator: torch.Generator, count: int, images: int, width: float,
          height: float) -> torch.Tensor:
    """Boxes of every kind: inside, across the border, far outside, thinner than a pixel."""
    corner = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    corner = corner * torch.tensor([width + 40, height + 40], dtype=torch.float64) - 20
    size = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 120 + 0.2
    batch = torch.randint(0, images, (count, 1), generator=generator).to(torch.float64)
    return torch.cat([batch, corner, corner + size], 1)


def _forward_and_gradient(pool, features, *args) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.detach().requires_grad_(True)
    out = pool(features, *args)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (gradient,) = torch.autograd.grad((out * weights).sum(), features)
    return out, gradient


@pytest.mark.parametrize("output_size, sampling_ratio, scale", [
    ((7, 7), 2, 1 / 16), ((14, 14), 2, 1 / 8), ((3, 5), 1, 1 / 4), ((7, 7), 3, 1.0)])
def test_roi_align_equals_torchvisions_forward_and_backward(output_size, sampling_ratio, scale):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 8, 13, 17, generator=generator, dtype=torch.float64)
    rois = _rois(generator, 300, 3, 17 / scale, 13 / scale)
    expected = _forward_and_gradient(torchvision_roi_align, features, rois, output_size, scale,
                                     sampling_ratio)
    got = _forward_and_gradient(roi_align, features, rois, output_size, scale, sampling_ratio)
    # float64: equal up to the order of the sums
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels", [["0", "1"], ["0", "1", "2", "3"]])
def test_multiscale_pooling_equals_torchvisions(levels):
    """Same level per box, same scales, same output, on MobileNet's 2 maps and ResNet's 4."""
    generator = torch.Generator().manual_seed(1)
    image_shapes = [(320, 288), (256, 320)]
    features = OrderedDict(
        (name, torch.randn(2, 4, 320 // 2 ** (i + 2), 320 // 2 ** (i + 2), generator=generator,
                           dtype=torch.float64))
        for i, name in enumerate([*levels, "pool"]))
    boxes = [_rois(generator, 200, 1, 320, 320)[:, 1:] for _ in image_shapes]
    boxes = [b.clamp(min=0) for b in boxes]  # torchvision's proposals are clipped to the image

    def run(pool):
        maps = OrderedDict((k, v.detach().requires_grad_(True)) for k, v in features.items())
        out = pool(maps, boxes, image_shapes)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
        gradients = torch.autograd.grad((out * weights).sum(), [maps[k] for k in levels])
        return out, gradients

    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    expected_out, expected_gradients = run(reference)
    got_out, got_gradients = run(FastMultiScaleRoIAlign.like(reference))
    torch.testing.assert_close(got_out, expected_out, rtol=0, atol=1e-12)
    for got, expected in zip(got_gradients, expected_gradients, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("architecture, keypoints", [("fasterrcnn", []),
                                                     ("keypointrcnn", ["apex", "left"])])
def test_models_pool_with_it_and_keep_torchvisions_weight_names(architecture, keypoints):
    config = ModelConfig(architecture=architecture, min_size=96, max_size=96,
                         categories=["disc"], keypoint_names=keypoints)
    model = build_model(config)
    heads = model.roi_heads
    assert isinstance(heads.box_roi_pool, FastMultiScaleRoIAlign)
    if keypoints:
        assert isinstance(heads.keypoint_roi_pool, FastMultiScaleRoIAlign)
        assert heads.keypoint_roi_pool.output_size == (14, 14)
    # the pooler has no weights: the files stay loadable by torchvision's own model
    assert not any("roi_pool" in name for name in model.state_dict())


def test_cpu_models_run_channels_last_but_the_keypoint_head():
    """oneDNN's faster layout on the CPU; the keypoint head stays as torchvision views it."""
    from napari_learn_complete.model.build import place

    config = ModelConfig(architecture="keypointrcnn", min_size=96, max_size=96,
                         categories=["disc"], keypoint_names=["apex", "left"])
    model = place(build_model(config), "cpu")
    stem = model.backbone.body["0"][0].weight
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    head = next(model.roi_heads.keypoint_head.parameters())
    assert head.is_contiguous()
    model.train()  # a training step with keypoint targets goes through torchvision's view
    image = torch.rand(3, 96, 96)
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([1]),
              "keypoints": torch.tensor([[[20.0, 20.0, 2.0], [50.0, 50.0, 2.0]]])}
    losses = model([image], [target])
    assert torch.isfinite(losses["loss_keypoint"])
