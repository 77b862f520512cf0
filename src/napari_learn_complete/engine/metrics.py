"""Evaluation with pycocotools: COCO box AP and, for keypoint models, keypoint AP.

:func:`evaluate_coco` is the one wrapper of ``COCOeval`` (the demo scores what Complete wrote with
it); :func:`coco_metrics` feeds it torchvision targets and predictions (Learn's held-out part).

Keypoint AP uses object keypoint similarity (OKS), whose per-keypoint sigmas COCO tuned for human
joints. Our keypoints are arbitrary (a triangle's apex, a mouse's tail), so every keypoint gets the
same sigma, :data:`KEYPOINT_SIGMA` = 0.05: near COCO's median joint, so a point off by 5% of the
object's size still scores an OKS of about 0.6. The object area in OKS is the box area.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..model.build import folded
from ..model.heads import boxes_only
from .device import precision
from .features import CachedBackbone
from .views import Views, detect

KEYPOINT_SIGMA = 0.05
_STATS = ("AP", "AP50", "AP75")  # the first three entries of COCOeval.stats


def _coco_boxes(boxes: torch.Tensor) -> list[list[float]]:
    b = boxes.detach().cpu().double()
    return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).tolist()


def coco_metrics(
    targets: Sequence[dict[str, torch.Tensor]],
    predictions: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    *,
    keypoint_classes: Sequence[int] = (),
) -> dict[str, float]:
    """``box_AP``, ``box_AP50``, ``box_AP75`` (and ``keypoint_*`` over ``keypoint_classes``).

    ``targets`` and ``predictions`` are in torchvision's format, one per image, in the same order.
    Metrics that are undefined (no ground truth of that kind) are left out.
    """
    images, gts, dets = [], [], []
    for i, (target, pred) in enumerate(zip(targets, predictions, strict=True)):
        images.append({"id": i})
        kps = target.get("keypoints")
        for j, (box, label) in enumerate(zip(_coco_boxes(target["boxes"]),
                                             target["labels"].tolist(), strict=True)):
            ann = {"id": len(gts) + 1, "image_id": i, "category_id": label, "bbox": box,
                   "area": box[2] * box[3], "iscrowd": 0}
            if kps is not None:
                ann["keypoints"] = kps[j].reshape(-1).tolist()
                ann["num_keypoints"] = int((kps[j, :, 2] > 0).sum())
            gts.append(ann)
        pred_kps = pred.get("keypoints")
        rows = zip(_coco_boxes(pred["boxes"]), pred["labels"].tolist(), pred["scores"].tolist(),
                   strict=True)
        for j, (box, label, score) in enumerate(rows):
            det = {"image_id": i, "category_id": label, "bbox": box, "score": score}
            if pred_kps is not None:
                det["keypoints"] = pred_kps[j].detach().cpu().reshape(-1).tolist()
            dets.append(det)
    truth = {"images": images, "annotations": gts,
             "categories": [{"id": c} for c in range(1, num_classes + 1)]}
    return evaluate_coco(truth, dets, keypoint_classes=keypoint_classes)


def evaluate_coco(
    truth: dict[str, Any], detections: list[dict[str, Any]], *,
    keypoint_classes: Sequence[int] = (),
) -> dict[str, float]:
    """``box_AP``, ``box_AP50``, ``box_AP75`` of ``detections`` (COCO results: ``image_id``,
    ``category_id``, ``bbox`` as x, y, w, h, ``score``, optional ``keypoints``) against ``truth``
    (a COCO dataset dict), and ``keypoint_*`` over the annotations of ``keypoint_classes`` that
    have visible keypoints. Empty when ``truth`` has no annotations (AP is undefined)."""
    if not truth["annotations"]:
        return {}
    kp_gts = [a for a in truth["annotations"]
              if a["category_id"] in keypoint_classes and a.get("num_keypoints")]
    ground = COCO()
    ground.dataset = truth
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground.createIndex()
        found = ground.loadRes(detections) if detections else None
        metrics = _evaluate(ground, found, "bbox", "box", None)
        if kp_gts:
            sigmas = np.full(len(kp_gts[0]["keypoints"]) // 3, KEYPOINT_SIGMA)
            metrics.update(_evaluate(ground, found, "keypoints", "keypoint",
                                     list(keypoint_classes), sigmas=sigmas))
    return metrics


def _evaluate(
    ground: COCO,
    found: COCO | None,
    iou_type: str,
    prefix: str,
    cat_ids: list[int] | None,
    sigmas: np.ndarray | None = None,
) -> dict[str, float]:
    if found is None:  # no detections at all: every AP is 0
        return {f"{prefix}_{name}": 0.0 for name in _STATS}
    evaluator = COCOeval(ground, found, iou_type)
    if cat_ids is not None:
        evaluator.params.catIds = cat_ids
    if sigmas is not None:
        evaluator.params.kpt_oks_sigmas = sigmas
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    # -1 marks "no ground truth" for a slot; with some ground truth it only arises per area range.
    stats = evaluator.stats[: len(_STATS)]
    return {f"{prefix}_{name}": max(0.0, float(v)) for name, v in zip(_STATS, stats, strict=True)}


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device,
            views: Views | None = None, *, keypoints: bool = True) -> tuple[list, list]:
    """Targets and predictions (on the CPU) of every batch of ``loader``, model in eval mode,
    averaged over the model's views as Complete does (``views``: :mod:`.views`); without
    ``keypoints`` a keypoint model's keypoint head is not run (the boxes are the same)."""
    was_training = model.training
    model.eval()
    # BatchNorms folded as Complete folds them; a cached frozen backbone computes folded already
    cached = isinstance(getattr(model, "backbone", None), CachedBackbone)
    net = model if cached else folded(model)
    heads = getattr(net, "roi_heads", None)
    skipped = not keypoints and heads is not None and heads.has_keypoint()
    targets, predictions = [], []
    try:
        with boxes_only(heads) if skipped else contextlib.nullcontext():
            for images, batch_targets in loader:
                with precision(device, "infer"):
                    outputs = detect(net, [image.to(device) for image in images], views)
                targets += batch_targets
                predictions += [{k: v.float().cpu() for k, v in out.items()} for out in outputs]
    finally:
        model.train(was_training)
    return targets, predictions
