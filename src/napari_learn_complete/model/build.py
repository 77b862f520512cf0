"""Build torchvision detectors from a :class:`ModelConfig`, and read/write our weight files.

The detectors are torchvision's own: Faster R-CNN for boxes and Keypoint R-CNN for boxes plus
keypoints, on MobileNetV3-Large FPN or ResNet-50 FPN v2. torchvision has no Keypoint R-CNN
builder for these backbones, so the keypoint model reuses the backbone, RPN and box head of the
matching Faster R-CNN builder; COCO box weights then load into it unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_V2_Weights,
    KeypointRCNN,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from ..errors import BadInputError, BadWeightsError
from .config import ModelConfig

WEIGHTS_FORMAT = "napari-learn-complete.weights"
WEIGHTS_FORMAT_VERSION = 1

# The RPN settings of torchvision's fasterrcnn_mobilenet_v3_large_320_fpn: few proposals keep the
# light backbone fast on a CPU, which is what it is chosen for.
_MOBILENET_RPN = {"rpn_pre_nms_top_n_test": 150, "rpn_post_nms_top_n_test": 150,
                  "rpn_score_thresh": 0.05}
_BUILDERS = {
    "mobilenet_v3_large_fpn": (fasterrcnn_mobilenet_v3_large_fpn, _MOBILENET_RPN),
    "resnet50_fpn_v2": (fasterrcnn_resnet50_fpn_v2, {}),
}


def build_model(config: ModelConfig, weights: str | os.PathLike = "none") -> nn.Module:
    """A detector for ``config`` in train mode, starting from ``weights``.

    ``"none"``: random weights (nothing is downloaded). ``"coco"``: torchvision's COCO Faster R-CNN
    weights of the backbone; layers whose shape depends on the classes or keypoints (box predictor,
    keypoint head) stay freshly initialised. A path: a weight file of ours for the same
    architecture, backbone and keypoints; class rows are matched by category name, categories the
    file lacks get fresh rows.
    """
    if isinstance(weights, str) and weights == "none":
        return _construct(config)
    if isinstance(weights, str) and weights == "coco":
        model = _construct(config)
        _load_matching(model, _coco_state_dict(config))
        return model
    path = Path(weights)
    state, config_dict, _ = load_weights(path)
    try:
        saved = ModelConfig.from_dict(config_dict)
    except BadInputError as exc:
        raise BadWeightsError(f"{path}: its model configuration is invalid: {exc}") from exc
    for key in ("architecture", "backbone", "keypoint_names"):
        if getattr(saved, key) != getattr(config, key):
            raise BadWeightsError(
                f"{path}: holds a model with {key} {getattr(saved, key)!r}, this model needs "
                f"{getattr(config, key)!r}"
            )
    model = _construct(config.replace(categories=saved.categories))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BadWeightsError(
            f"{path}: the weights do not fit a {saved.architecture} on {saved.backbone}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    if saved.categories != config.categories:
        _remap_classes(model, saved.categories, config.categories)
    return model


def _construct(config: ModelConfig) -> nn.Module:
    builder, rpn = _BUILDERS[config.backbone]
    options: dict[str, Any] = {
        **rpn,
        "min_size": config.min_size,
        "max_size": config.max_size,
        "box_score_thresh": config.inference.score_threshold,
        "box_nms_thresh": config.inference.nms_iou,
        "box_detections_per_img": config.inference.max_detections,
    }
    num_classes = len(config.categories) + 1
    boxes = builder(weights=None, weights_backbone=None, num_classes=num_classes, **options)
    if config.architecture == "fasterrcnn":
        return boxes
    return KeypointRCNN(
        boxes.backbone,
        num_classes=num_classes,
        num_keypoints=len(config.keypoint_names),
        rpn_anchor_generator=boxes.rpn.anchor_generator,
        rpn_head=boxes.rpn.head,
        box_head=boxes.roi_heads.box_head,
        **options,
    )


def _coco_weights(config: ModelConfig) -> Any:
    if config.backbone == "resnet50_fpn_v2":
        return FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    if config.min_size <= 480:  # the 320 px weights suit low-resolution inputs better
        return FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    return FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1


def _coco_state_dict(config: ModelConfig) -> dict[str, torch.Tensor]:
    """torchvision's COCO weights (downloaded once into torch's hub cache)."""
    weights = _coco_weights(config)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise BadInputError(
            f"could not get torchvision's COCO weights {weights} ({exc}). They are downloaded "
            f"once from the internet into {cache}: create the model once with network access "
            "(or copy the file there), or use --weights none (random) or --weights PATH "
            "(a weight file of napari-learn-complete)"
        ) from exc


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load every tensor whose name and shape match; the others keep their initialisation."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)


# ---------------------------------------------------------------------- classes
def _remap_classes(model: nn.Module, old: list[str], new: list[str]) -> None:
    """Replace the box predictor by one for ``new`` classes; rows are copied by category name
    (background included), classes absent from ``old`` keep a fresh initialisation."""
    predictor = model.roi_heads.box_predictor
    weight = predictor.cls_score.weight
    fresh = FastRCNNPredictor(predictor.cls_score.in_features, len(new) + 1)
    fresh.to(device=weight.device, dtype=weight.dtype)
    pairs = [(0, 0)] + [(i + 1, old.index(n) + 1) for i, n in enumerate(new) if n in old]
    with torch.no_grad():
        for dst, src in pairs:
            fresh.cls_score.weight[dst] = predictor.cls_score.weight[src]
            fresh.cls_score.bias[dst] = predictor.cls_score.bias[src]
            rows, src_rows = slice(4 * dst, 4 * dst + 4), slice(4 * src, 4 * src + 4)
            fresh.bbox_pred.weight[rows] = predictor.bbox_pred.weight[src_rows]
            fresh.bbox_pred.bias[rows] = predictor.bbox_pred.bias[src_rows]
    model.roi_heads.box_predictor = fresh


# ---------------------------------------------------------------------- freezing
def backbone_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The backbone's parameters (body and FPN), named as in ``model.named_parameters()``."""
    for name, param in model.backbone.named_parameters():
        yield f"backbone.{name}", param


def _batchnorm_eval(module: nn.Module, _args: Any) -> None:
    module.train(False)


def freeze_backbone(model: nn.Module, frozen: bool) -> None:
    """"Heads only" when ``frozen``: the backbone including its FPN gets no gradients and its
    BatchNorm layers keep their running statistics even in train mode (a forward pre-hook puts
    them in eval mode, since ``model.train()`` would switch them back); RPN and ROI heads train."""
    for _, param in backbone_parameters(model):
        param.requires_grad_(not frozen)
    for module in model.backbone.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        hook = getattr(module, "_nlc_frozen_hook", None)
        if frozen and hook is None:
            module._nlc_frozen_hook = module.register_forward_pre_hook(_batchnorm_eval)
        elif not frozen and hook is not None:
            hook.remove()
            module._nlc_frozen_hook = None


# ---------------------------------------------------------------------- weight files
def save_weights(
    path: str | os.PathLike, model: nn.Module, config: ModelConfig, meta: dict[str, Any]
) -> None:
    """Write a weight file atomically: a temporary file in the same folder, fsynced, then
    ``os.replace``d over ``path``, so a crash mid-write never leaves a half-written version."""
    path = Path(path)
    try:
        meta = json.loads(json.dumps(meta))  # plain values only: they must load with weights_only
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"weight file metadata must be plain JSON values: {exc}") from exc
    payload = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "config": config.to_dict(),
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a weight file of ours: ``(state_dict, config_dict, meta)``.

    Only plain tensors and containers are unpickled (``weights_only=True``); anything else,
    including a bare torchvision state dict, raises :class:`BadWeightsError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise BadWeightsError(f"{path}: weight file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types: UnpicklingError, RuntimeError, EOFError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadWeightsError(
            f"{path}: not a readable weight file of napari-learn-complete (truncated, corrupt, "
            f"or not plain weights): {first}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        what = "a bare state dict" if isinstance(payload, dict) else type(payload).__name__
        raise BadWeightsError(
            f"{path}: not a weight file of napari-learn-complete (it holds {what}, without the "
            f"{WEIGHTS_FORMAT!r} marker)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > WEIGHTS_FORMAT_VERSION:
        raise BadWeightsError(
            f"{path}: weight file format {version!r} is newer than this plugin reads "
            f"({WEIGHTS_FORMAT_VERSION}); upgrade napari-learn-complete"
        )
    state, config, meta = payload.get("state_dict"), payload.get("config"), payload.get("meta")
    if not (
        isinstance(state, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        and isinstance(config, dict)
        and isinstance(meta, dict)
    ):
        raise BadWeightsError(f"{path}: weight file is incomplete (state_dict, config or meta)")
    return state, config, meta
