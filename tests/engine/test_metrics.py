"""COCO box and keypoint AP of held-out predictions (pycocotools)."""

from __future__ import annotations

import pytest
import torch

from napari_learn_complete.engine.metrics import coco_metrics

BOXES = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 20.0, 90.0, 60.0]])
KEYPOINTS = torch.tensor([[[20.0, 12.0, 2], [12.0, 38.0, 2]], [[0.0, 0.0, 0], [0.0, 0.0, 0]]])
TARGET = {"boxes": BOXES, "labels": torch.tensor([1, 2]), "keypoints": KEYPOINTS}


def _pred(boxes, labels, scores, keypoints=None):
    out = {"boxes": boxes, "labels": torch.tensor(labels), "scores": torch.tensor(scores)}
    if keypoints is not None:
        out["keypoints"] = keypoints
    return out


def test_perfect_predictions_score_one():
    metrics = coco_metrics([TARGET], [_pred(BOXES, [1, 2], [0.9, 0.8], KEYPOINTS)], 2,
                           keypoint_classes=[1])
    assert metrics == pytest.approx({f"{p}_{s}": 1.0 for p in ("box", "keypoint")
                                     for s in ("AP", "AP50", "AP75")})


def test_wrong_class_shifted_box_and_no_detections():
    wrong = coco_metrics([TARGET], [_pred(BOXES, [2, 1], [0.9, 0.8])], 2)
    assert wrong == {"box_AP": 0.0, "box_AP50": 0.0, "box_AP75": 0.0}
    # Shifted by a third of its size: IoU 0.5 for the first box, so AP50 counts it, AP75 not.
    shifted = BOXES.clone()
    shifted[0] += torch.tensor([7.5, 0.0, 7.5, 0.0])
    half = coco_metrics([TARGET], [_pred(shifted[:1], [1], [0.9])], 2)
    assert half["box_AP75"] == 0.0 and half["box_AP50"] == pytest.approx(0.5, abs=0.01)
    empty = _pred(torch.zeros(0, 4), [], [])
    empty["labels"] = empty["labels"].long()
    assert coco_metrics([TARGET], [empty], 2)["box_AP"] == 0.0
    assert coco_metrics([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}],
                        [empty], 2) == {}


def test_keypoint_ap_uses_uniform_sigmas_and_ignores_invisible_points():
    near = KEYPOINTS.clone()
    near[0, :, :2] += 1.0  # 1.4 px off on a 30 px object: OKS ~0.9
    far = KEYPOINTS.clone()
    far[0, :, :2] += 8.0  # 11 px off: OKS ~0.001
    assert coco_metrics([TARGET], [_pred(BOXES, [1, 2], [0.9, 0.8], near)], 2,
                        keypoint_classes=[1])["keypoint_AP50"] == pytest.approx(1.0)
    assert coco_metrics([TARGET], [_pred(BOXES, [1, 2], [0.9, 0.8], far)], 2,
                        keypoint_classes=[1])["keypoint_AP50"] == 0.0


def test_predict_without_keypoints_skips_the_keypoint_head_and_keeps_the_boxes(sample_index):
    """What judges boxes only (Learn's suggestion) need not run a keypoint model's keypoint head
    on every detection: the boxes, scores and labels are the same without it."""
    from napari_learn_complete.engine.data import DetectionDataset, make_loader
    from napari_learn_complete.engine.metrics import predict
    from napari_learn_complete.engine.views import Views
    from napari_learn_complete.model import create_model

    handle = create_model(sample_index, weights="none", keypoints=True, min_size=96, seed=0)
    model, config = handle.load()
    loader = make_loader(DetectionDataset(sample_index, sample_index.images()[:3], config),
                         batch_size=3, shuffle=False)
    runs = {kps: predict(model, loader, torch.device("cpu"), Views.of(config), keypoints=kps)[1]
            for kps in (True, False, True)}  # the model keeps its keypoint head afterwards
    with_points, boxes_only = runs[True], runs[False]
    assert all("keypoints" in out and len(out["boxes"]) for out in with_points)
    assert not any("keypoints" in out for out in boxes_only)
    for full, plain in zip(with_points, boxes_only, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(full[key], plain[key])
    assert model.roi_heads.has_keypoint()
