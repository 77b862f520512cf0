"""The keypoint head trains on a few positive regions per object; inference is torchvision's."""

from __future__ import annotations

import torch
from torchvision.models.detection.roi_heads import RoIHeads

from napari_learn_complete.model import InferenceSettings, ModelConfig, build_model
from napari_learn_complete.model.heads import SampledKeypointRoIHeads

SIZE = 96


def _model() -> torch.nn.Module:
    config = ModelConfig(architecture="keypointrcnn", min_size=SIZE, max_size=SIZE,
                         categories=["disc", "triangle"], keypoint_names=["apex", "left", "right"],
                         keypoint_head=[16, 16], inference=InferenceSettings(max_detections=5))
    return build_model(config)


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two images of two objects each."""
    images = [torch.rand(3, SIZE, SIZE) for _ in range(2)]
    boxes = torch.tensor([[8.0, 8.0, 44.0, 44.0], [50.0, 46.0, 90.0, 88.0]])
    points = torch.tensor([[[26.0, 8.0, 2], [8.0, 44.0, 2], [44.0, 44.0, 2]],
                           [[70.0, 46.0, 2], [50.0, 88.0, 2], [90.0, 88.0, 2]]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "keypoints": points}
    return images, [dict(target), dict(target)]


def test_pick_keeps_at_most_the_quota_of_each_objects_positive_regions():
    heads = _model().roi_heads
    heads.regions_per_object = 3
    matches = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 0, 1])
    positive = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=torch.bool)
    for seed in range(5):
        torch.manual_seed(seed)
        kept = heads.pick(matches, positive)
        assert positive[kept].all()
        assert len(set(kept.tolist())) == len(kept)
        per_object = torch.bincount(matches[kept], minlength=3).tolist()
        assert per_object == [3, 2, 3]  # object 1 has only two positive regions
    torch.manual_seed(0)
    first = heads.pick(matches, positive)
    torch.manual_seed(0)
    assert torch.equal(heads.pick(matches, positive), first)  # seeded: a run repeats
    assert len(heads.pick(matches, torch.zeros_like(positive))) == 0


def test_a_training_step_feeds_the_keypoint_head_a_few_regions_per_object():
    torch.manual_seed(0)
    model = _model()
    assert isinstance(model.roi_heads, SampledKeypointRoIHeads)
    rows = []
    model.roi_heads.keypoint_head.register_forward_hook(
        lambda _m, args, _out: rows.append(len(args[0])))
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg", "loss_keypoint"}
    assert torch.isfinite(losses["loss_keypoint"])
    per_object = model.roi_heads.regions_per_object
    assert rows == [len(images) * 2 * per_object]  # enough positives: the quota of each object
    sum(losses.values()).backward()
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.weight.grad.abs().sum() > 0
    # the keypoint modules are back in place after the step
    assert model.roi_heads.has_keypoint()


def test_inference_is_torchvisions():
    torch.manual_seed(0)
    model = _model().eval()
    images, _ = _batch()
    plain = RoIHeads.__new__(RoIHeads)
    plain.__dict__.update(model.roi_heads.__dict__)
    with torch.no_grad():
        ours = model(images)
        model.roi_heads = plain
        theirs = model(images)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key])
