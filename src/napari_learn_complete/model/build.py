"""Build torchvision detectors from a :class:`ModelConfig`, and read/write our weight files.

The detectors are torchvision's own: Faster R-CNN for boxes and Keypoint R-CNN for boxes plus
keypoints, on MobileNetV3-Large FPN (two RPN settings: "fast" and "balanced"), ResNet-50 FPN v2 or
ResNet-50 FPN. torchvision builds Keypoint R-CNN only on ResNet-50 FPN, so the keypoint model
reuses the backbone, RPN and box head of the matching Faster R-CNN builder (on ResNet-50 FPN that
is exactly torchvision's ``keypointrcnn_resnet50_fpn``); COCO box weights then load into it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from copy import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.detection import (
    KeypointRCNN,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor

from ..errors import BadInputError, BadWeightsError
from .config import ModelConfig
from .heads import SampledKeypointRoIHeads
from .pooling import FastMultiScaleRoIAlign
from .pretrained import DownloadFn, cache_file, load_state_dict, pretrained_weights
from .rpn import ThreadedRegionProposalNetwork

WEIGHTS_FORMAT = "napari-learn-complete.weights"
WEIGHTS_FORMAT_VERSION = 1

# The RPN settings of torchvision's fasterrcnn_mobilenet_v3_large_320_fpn ("fast"): few proposals
# keep the light backbone fast on a CPU; fasterrcnn_mobilenet_v3_large_fpn's ("balanced") keep
# torchvision's 1000.
_MOBILENET_320_RPN = {"rpn_pre_nms_top_n_test": 150, "rpn_post_nms_top_n_test": 150,
                      "rpn_score_thresh": 0.05}
_BUILDERS = {
    "mobilenet_v3_large_320_fpn": (fasterrcnn_mobilenet_v3_large_fpn, _MOBILENET_320_RPN),
    "mobilenet_v3_large_fpn": (fasterrcnn_mobilenet_v3_large_fpn, {"rpn_score_thresh": 0.05}),
    "resnet50_fpn_v2": (fasterrcnn_resnet50_fpn_v2, {}),
    "resnet50_fpn": (fasterrcnn_resnet50_fpn, {}),
}


def build_model(
    config: ModelConfig, weights: str | os.PathLike = "none", download: DownloadFn | None = None,
    *, seed: int = 0,
) -> nn.Module:
    """A detector for ``config`` in train mode, starting from ``weights``.

    Whatever ``weights`` leaves random (all of it for ``"none"``, the rows of new categories and
    keypoints otherwise) is drawn from ``seed``: the same seed builds the same model, so a run
    from random weights repeats (the demo's AP varied from run to run before), and the caller's
    random state is left as it was.

    ``"none"``: random weights (nothing is downloaded). ``"coco"``: torchvision's COCO detector
    (see :func:`.pretrained.pretrained_weights`): backbone, FPN, RPN and box head keep their
    weights; the class rows of COCO classes the index also has (same name, any case) are kept,
    the other categories get fresh rows; likewise the keypoint channels by keypoint name.
    ``"imagenet"``: the backbone body from torchvision's ImageNet classifier, the rest random.
    torchvision's files are downloaded once into its cache, reported to ``download``. A path: a
    weight file of ours for the same architecture, backbone and keypoints; class rows are matched
    by category name, categories the file lacks get fresh rows.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(config, weights, download)


def _build(config: ModelConfig, weights: str | os.PathLike,
           download: DownloadFn | None) -> nn.Module:
    if isinstance(weights, str) and weights == "none":
        return _construct(config)
    if isinstance(weights, str) and weights in ("coco", "imagenet"):
        return _pretrained(config, weights, download)
    path = Path(weights)
    state, saved = load_ours(path)
    for key in ("architecture", "backbone", "keypoint_names", "keypoint_head", "box_head"):
        if getattr(saved, key) != getattr(config, key):
            raise BadWeightsError(
                f"{path}: holds a model with {key} {getattr(saved, key)!r}, this model needs "
                f"{getattr(config, key)!r}"
            )
    model = _construct_uninitialised(config.replace(categories=saved.categories))
    try:
        model.load_state_dict(state)  # strict: every tensor comes from the file
    except RuntimeError as exc:
        raise BadWeightsError(
            f"{path}: the weights do not fit a {saved.architecture} on {saved.backbone}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    if saved.categories != config.categories:
        _remap_classes(model, saved.categories, config.categories)
    return model


def place(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` on ``device``. On the CPU its convolution weights go channels-last: oneDNN runs
    them 1.2-1.5x faster so, Learn and Complete alike, and the feature maps reach the RoIAlign
    pooler as the rows it reads (docs/performance.md). CUDA keeps torch's default layout, and so
    does the keypoint head everywhere: torchvision's keypoint loss views its output as is."""
    if torch.device(device).type != "cpu":
        return model.to(device)
    model = model.to(device, memory_format=torch.channels_last)
    for name in ("keypoint_head", "keypoint_predictor"):
        head = getattr(model.roi_heads, name, None)
        if head is not None:
            head.to(memory_format=torch.contiguous_format)
    return model


def folded(model: nn.Module) -> nn.Module:
    """``model`` for inference with each BatchNorm that follows a convolution in a Sequential
    folded into that convolution, as eval mode applies it (a fixed scale and shift per channel
    from its running statistics): as a pass of its own it took 17% of a Complete batch on the
    CPU (docs/performance.md). The same outputs within float rounding. The model itself is left
    as it is (Learn trains it, versions save it): the result is a new tree along the paths to the
    folded layers that shares every other module and weight with it, so a change to a shared
    head shows in both; ``model`` itself when it has nothing to fold."""
    pairs = [(name, i) for name, module in model.named_modules()
             if isinstance(module, nn.Sequential) for i in range(len(module) - 1)
             if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d)]
    if not pairs:
        return model
    copies: dict[str, nn.Module] = {}

    def own(name: str) -> nn.Module:
        """The new tree's module at ``name``: a shallow copy of the model's."""
        if name not in copies:
            copies[name] = clone = _shallow(model.get_submodule(name))
            if name:
                parent, _, child = name.rpartition(".")
                own(parent)._modules[child] = clone
        return copies[name]

    for name, i in pairs:
        sequence = model.get_submodule(name)
        conv, norm = sequence[i], sequence[i + 1]
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean,
                                            norm.running_var, norm.eps, norm.weight, norm.bias)
        fused = _shallow(conv)
        fused._parameters = {  # the weight in the layout ``place`` gave the convolution's
            "weight": nn.Parameter(torch.empty_like(conv.weight).copy_(weight.detach()),
                                   requires_grad=False),
            "bias": nn.Parameter(bias.detach(), requires_grad=False)}
        keys = list(sequence._modules)
        own(name)._modules.update({keys[i]: fused, keys[i + 1]: nn.Identity()})
    return own("")


def _shallow(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its weights and children, with lists of its own (children,
    parameters, hooks): what is set on either later does not show in the other."""
    clone = copy(module)
    vars(clone).update({key: value.copy() for key, value in vars(module).items()
                        if isinstance(value, dict | set)})
    return clone


def _construct(config: ModelConfig, classes: int | None = None,
               keypoints: int | None = None) -> nn.Module:
    """The detector of ``config``, with ``classes`` (background included) and ``keypoints``
    channels instead of the configuration's when given (to load weights made for other ones)."""
    builder, rpn = _BUILDERS[config.backbone]
    options: dict[str, Any] = {
        **rpn,
        "min_size": config.min_size,
        "max_size": config.max_size,
        "box_score_thresh": config.inference.score_threshold,
        "box_nms_thresh": config.inference.nms_iou,
        "box_detections_per_img": config.inference.max_detections,
    }
    num_classes = classes or len(config.categories) + 1
    boxes = builder(weights=None, weights_backbone=None, num_classes=num_classes, **options)
    if config.box_head is not None:
        pooled = boxes.roi_heads.box_head.fc6.in_features
        boxes.roi_heads.box_head = TwoMLPHead(pooled, config.box_head)
        boxes.roi_heads.box_predictor = FastRCNNPredictor(config.box_head, num_classes)
    pool = FastMultiScaleRoIAlign.like(boxes.roi_heads.box_roi_pool)
    if config.architecture == "fasterrcnn":
        boxes.roi_heads.box_roi_pool = pool
        boxes.rpn = ThreadedRegionProposalNetwork.like(boxes.rpn)
        return boxes
    # torchvision's keypoint pooler: 14 x 14 from the same feature maps
    keypoint_pool = FastMultiScaleRoIAlign(pool.featmap_names, 14, pool.sampling_ratio)
    count = keypoints or len(config.keypoint_names)
    layers = config.keypoint_head
    head: dict[str, Any] = {"num_keypoints": count} if layers is None else {
        "keypoint_head": KeypointRCNNHeads(boxes.backbone.out_channels, layers),
        "keypoint_predictor": KeypointRCNNPredictor(layers[-1], count),
    }
    model = KeypointRCNN(
        boxes.backbone,
        rpn_anchor_generator=boxes.rpn.anchor_generator,
        rpn_head=boxes.rpn.head,
        box_roi_pool=pool,
        box_head=boxes.roi_heads.box_head,
        box_predictor=boxes.roi_heads.box_predictor,
        keypoint_roi_pool=keypoint_pool,
        **head,
        **options,
    )
    model.roi_heads = SampledKeypointRoIHeads.like(model.roi_heads)
    model.rpn = ThreadedRegionProposalNetwork.like(model.rpn)
    return model


def _construct_uninitialised(config: ModelConfig) -> nn.Module:
    """:func:`_construct` with storage allocated but not initialised, for a state that fills
    every tensor: torchvision's random initialisation, overwritten at once, was 0.45 s of the
    0.6 s a version took to load (docs/performance.md)."""
    with torch.device("meta"):
        model = _construct(config)
    # torchvision makes the anchor generator's cell anchors on the CPU whatever the default
    # device, so they are whole; the parameters and buffers are allocated here, unset.
    return model.to_empty(device="cpu")


def _pretrained(config: ModelConfig, start: str, download: DownloadFn | None) -> nn.Module:
    source = pretrained_weights(config, start)
    state = load_state_dict(source, download)
    if start == "imagenet":
        model = _construct(config)
        body = model.backbone.body
        # torchvision's MobileNetV3 classifier names its layers "features.N"; the FPN body "N"
        state = {k.removeprefix("features."): v for k, v in state.items()}
        _load_checked(body, state, source)
        return model
    coco_classes: list[str] = source.meta["categories"][1:]
    coco_keypoints: list[str] = source.meta.get("keypoint_names", [])
    model = _construct(config, classes=len(coco_classes) + 1,
                       keypoints=len(coco_keypoints) or None)
    _load_checked(model, state, source)
    # COCO classes the index also has (any case) keep their rows, under the index's spelling
    ours = {name.lower(): name for name in config.categories}
    _remap_classes(model, [ours.get(c.lower(), c) for c in coco_classes], config.categories)
    if config.architecture == "keypointrcnn":
        _remap_keypoints(model, coco_keypoints, config.keypoint_names)
    return model


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: Any) -> None:
    """Load ``state`` into ``model``, refusing a file that lacks tensors the model needs or holds
    them in other shapes (a stray or damaged file under torchvision's name). Keypoint layers may
    be missing (COCO box weights for a keypoint model) or of another shape: they keep their
    initialisation."""
    own = model.state_dict()
    wrong = [k for k, v in own.items()
             if not k.endswith("num_batches_tracked") and not k.startswith("roi_heads.keypoint")
             and (k not in state or state[k].shape != v.shape)]
    if wrong:
        raise BadWeightsError(
            f"{cache_file(source)}: does not hold torchvision's {source} weights "
            f"({len(wrong)} tensors missing or of another shape, e.g. "
            f"{wrong[0]}); delete the file to download it again"
        )
    # keypoint layers of another shape (a lighter keypoint head) keep their initialisation too
    model.load_state_dict({k: v for k, v in state.items()
                           if k in own and v.shape == own[k].shape}, strict=False)


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


def _remap_keypoints(model: nn.Module, old: list[str], new: list[str]) -> None:
    """Replace the keypoint predictor by one for ``new`` keypoint names; channels are copied by
    name (any case), the others keep a fresh initialisation."""
    predictor = model.roi_heads.keypoint_predictor
    layer = predictor.kps_score_lowres
    fresh = KeypointRCNNPredictor(layer.in_channels, len(new))
    fresh.to(device=layer.weight.device, dtype=layer.weight.dtype)
    lowered = [name.lower() for name in old]
    with torch.no_grad():
        for dst, name in enumerate(new):
            if name.lower() in lowered:
                src = lowered.index(name.lower())
                fresh.kps_score_lowres.weight[:, dst] = layer.weight[:, src]
                fresh.kps_score_lowres.bias[dst] = layer.bias[src]
    model.roi_heads.keypoint_predictor = fresh


# ---------------------------------------------------------------------- freezing
def backbone_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The backbone's parameters (body and FPN), named as in ``model.named_parameters()``."""
    for name, param in model.backbone.named_parameters():
        yield f"backbone.{name}", param


def _batchnorm_eval(module: nn.Module, _args: Any) -> None:
    module.train(False)


def freeze_backbone(model: nn.Module, frozen: bool, statistics_frozen: bool | None = None) -> None:
    """"Heads only" when ``frozen``: the backbone including its FPN gets no gradients; RPN and ROI
    heads train. The backbone's BatchNorm layers keep their running statistics when
    ``statistics_frozen`` (default: ``frozen``), even in train mode (a forward pre-hook puts them
    in eval mode, since ``model.train()`` would switch them back): a backbone that already
    learned its features (pretrained, or after a Full Learn) keeps them under Full model too, as
    torchvision's frozen BatchNorm does, instead of re-estimating them from a few images."""
    statistics_frozen = frozen if statistics_frozen is None else statistics_frozen
    for _, param in backbone_parameters(model):
        param.requires_grad_(not frozen)
    for module in model.backbone.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        hook = getattr(module, "_nlc_frozen_hook", None)
        if statistics_frozen and hook is None:
            module._nlc_frozen_hook = module.register_forward_pre_hook(_batchnorm_eval)
        elif not statistics_frozen and hook is not None:
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


def load_ours(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """A weight file of ours: its state dict and its model configuration, validated (an invalid
    one is :class:`BadWeightsError` naming the file)."""
    state, config_dict, _ = load_weights(path)
    try:
        return state, ModelConfig.from_dict(config_dict)
    except BadInputError as exc:
        raise BadWeightsError(f"{path}: its model configuration is invalid: {exc}") from exc


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
