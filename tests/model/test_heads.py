"""Every model trains its boxes on their overlap too (GIoU); the keypoint head trains on a few
positive regions per object; inference is torchvision's."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads

from napari_learn_complete.engine.train import _loss_names
from napari_learn_complete.model import InferenceSettings, ModelConfig, build_model
from napari_learn_complete.model.heads import OverlapRoIHeads, SampledKeypointRoIHeads

SIZE = 96


def _model(architecture: str = "keypointrcnn") -> torch.nn.Module:
    keypoints = {"keypoint_names": ["apex", "left", "right"], "keypoint_head": [16, 16]}
    config = ModelConfig(architecture=architecture, min_size=SIZE, max_size=SIZE,
                         categories=["disc", "triangle"],
                         inference=InferenceSettings(max_detections=5),
                         **(keypoints if architecture == "keypointrcnn" else {}))
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
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_box_giou", "loss_objectness",
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


def test_the_giou_loss_scores_each_positive_region_with_its_objects_class():
    heads = _model("fasterrcnn").roi_heads
    assert isinstance(heads, OverlapRoIHeads)
    # image 1: a positive region on object 0 (class 1) and a negative one; image 2: no object
    regions = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]),
               torch.tensor([[0.0, 0.0, 5.0, 5.0]])]
    matched = [torch.tensor([0, 0]), torch.tensor([0])]
    labels = [torch.tensor([1, 0]), torch.tensor([0])]
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0]])}, {"boxes": torch.zeros(0, 4)}]
    regression = torch.zeros(3, 3 * 4)  # background, disc, triangle
    regression[0, 8:] = 3.0  # the other class's offsets: not this object's
    regression[1:] = -2.0  # negatives: no box to fit
    loss = heads.giou_loss(regression, regions, matched, labels, targets)
    # the region's own box against the object's: IoU 100/200, the enclosing box is the union,
    # so GIoU 0.5; loss 1 - 0.5, weighted, over the 3 sampled regions
    assert loss.item() == pytest.approx(heads.giou_weight * 0.5 / 3)
    regression[0, 4:8] = heads.box_coder.encode_single(targets[0]["boxes"], regions[0][:1])
    assert heads.giou_loss(regression, regions, matched, labels, targets).item() == \
        pytest.approx(0.0, abs=1e-3)


def test_a_box_model_trains_on_the_overlap_and_infers_as_torchvision():
    torch.manual_seed(0)
    model = _model("fasterrcnn")
    model.train()
    images, targets = _batch()
    losses = model(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets])
    assert losses["loss_box_giou"] > 0
    # a ROI Learn (on a keypoint model too) optimises every loss a box model trains on
    assert set(losses) == _loss_names("roi")
    losses["loss_box_giou"].backward()
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    model.eval()
    plain = RoIHeads.__new__(RoIHeads)
    plain.__dict__.update(model.roi_heads.__dict__)
    with torch.no_grad():
        ours = model(images)
        model.roi_heads = plain
        theirs = model(images)
    for a, b in zip(ours, theirs, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)
