"""One trainer for Learn and for the full training run.

:func:`train` trains the active model on every labelled image with the model's own
:class:`~napari_learn_complete.model.config.TrainingSettings`. :func:`learn` is the same trainer
with the specification's focused overrides applied on top of that configuration: the scope
restricted to the chosen images, cosine learning-rate decay, patience 0 (no early stopping), and
the current active weights as the start (never from scratch); epochs, training mode and test share
come from :class:`LearnSettings`.

Every run is recorded in the index's ``runs`` table (scope with its notes, settings, per-epoch
losses, held-out metrics, resulting version, duration, status) and a successful one becomes a new
active weight version. Refusals happen before anything is written; a cancelled or failed run
leaves the previous active version in place and records its status.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from ..errors import RefusedError
from ..index import Category, ImageRecord, Index, check_kind
from ..model.build import freeze_backbone
from ..model.config import ModelConfig, Suggested, TrainingSettings
from ..model.registry import ModelHandle, active_model
from .data import DetectionDataset, make_loader
from .device import PRECISION, choose_device, precision
from .features import cache_backbone, uncache_backbone
from .metrics import coco_metrics, predict
from .progress import CancelFn, Progress, ProgressFn, check_cancel, report
from .results import TrainResult
from .scope import labelled_images, learn_scope, mix_in, require_kind, split, split_notes
from .settings import LearnSettings
from .suggest import suggest
from .views import Views

GRAD_CLIP = 10.0  # max gradient norm: a few odd boxes must not throw the weights off
WARMUP_START = 0.001  # the learning rate ramps up linearly from this share of its value
MAX_WARMUP_SHARE = 0.2  # short runs spend at most this share of their steps warming up
REGIONS_PER_OBJECT = 32  # regions sampled for the box head per object of the most crowded image
STEP_EPOCHS, STEP_GAMMA = 3, 0.1  # "step" decay: torchvision's detection tutorial recipe
# Share of the keypoint loss's gradient that reaches the backbone. At full strength it was ten
# times the box losses' there (norm 21 against 2 on a fresh keypoint model) and, clipped with
# them, left boxes half learned (docs/effort.md); the keypoint head itself keeps all of it.
KEYPOINT_FEATURE_GRADIENT = 0.1


def sampled_regions(most_objects: int) -> int:
    """Regions per image the box head trains on: torchvision's 512 (at most a quarter of them
    positive) suit COCO's crowded images; on images with a few objects nearly all of them are
    background, and the box head's time follows their number. From 128 (up to 4 objects) to 512
    (16 or more): on the demo's sample 128 halve a Full Learn's steps and keep held-out AP
    (docs/learn.md)."""
    return min(512, max(128, REGIONS_PER_OBJECT * most_objects))


@dataclass
class _Plan:
    """One run, fully decided before anything is written."""

    operation: str  # "learn" | "train"
    kind: str | None  # "roi" | "keypoints"; None trains every head of the model
    mode: str
    training: TrainingSettings
    seed: int
    num_workers: int
    train_images: list[ImageRecord]
    test_images: list[ImageRecord]
    notes: list[str] = field(default_factory=list)
    scope: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def _refuse_identify(handle: ModelHandle, what: str) -> None:
    if handle.config.purpose == "identify":
        raise RefusedError(f"{what} is not supported for identify models "
                           f"(model {handle.name!r} has purpose 'identify')")


def _scope_record(images: Sequence[ImageRecord]) -> list[dict]:
    return [{"id": image.id, "name": image.name} for image in images]


def learn(
    index: Index,
    *,
    images: Sequence[ImageRecord | int | str] | None = None,
    category: Category | int | str | None = None,
    kind: str = "roi",
    settings: LearnSettings | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Fine-tune the active model on a scope (images or a category) and save a new version.

    Refused (:class:`RefusedError`, nothing written) for identify models, a kind the model does not
    predict, an empty scope and a scope without observations of ``kind``.
    """
    settings = settings or LearnSettings()
    check_kind(kind)
    handle = active_model(index)
    _refuse_identify(handle, "Learn")
    if not handle.supports(kind):
        raise RefusedError(
            f"model {handle.name!r} ({handle.config.architecture}) does not predict {kind}; "
            "Learn keypoints needs a keypoint model"
        )
    scope = learn_scope(index, images=images, category=category, kind=kind)
    require_kind(index, scope, kind)
    train_images, test_images = split(scope, settings.test_percent, settings.seed)
    mixed = mix_in(index, scope, settings.mix_in, settings.seed)
    training = handle.config.training.replace(epochs=settings.epochs, lr_decay="cosine",
                                              patience=0, test_percent=settings.test_percent)
    if settings.mode == "heads":  # flips only: the frozen backbone then runs once per view
        training = training.replace(augment=training.augment.replace(
            scale_jitter=(1.0, 1.0), color_jitter=0.0))
    cat_name = None if category is None else index.category(category).name
    notes = split_notes(len(scope), settings.test_percent)
    plan = _Plan(
        operation="learn", kind=kind, mode=settings.mode, training=training, seed=settings.seed,
        num_workers=settings.num_workers, train_images=train_images + mixed,
        test_images=test_images, notes=notes,
        scope={"category": cat_name, "images": _scope_record(scope),
               "test": _scope_record(test_images), "mix_in": _scope_record(mixed),
               "notes": notes},
        settings={**settings.model_dump(mode="json"),
                  "training": training.model_dump(mode="json")},
    )
    return _fit(index, handle, plan, progress=progress, cancel=cancel, device=device)


def train(
    index: Index,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> TrainResult:
    """The full training run that consolidates a dataset: every labelled image, the whole model,
    the model's own settings (its decay, epochs, and early stopping on its held-out share)."""
    handle = active_model(index)
    _refuse_identify(handle, "Training")
    images = labelled_images(index)
    if not images:
        raise RefusedError("nothing to train on: the index has no labelled images")
    training = handle.config.training
    train_images, test_images = split(images, training.test_percent, seed=0)
    notes = split_notes(len(images), training.test_percent)
    plan = _Plan(
        operation="train", kind=None, mode="full", training=training, seed=0,
        num_workers=num_workers, train_images=train_images, test_images=test_images,
        notes=notes,
        scope={"category": None, "images": _scope_record(images),
               "test": _scope_record(test_images), "mix_in": [], "notes": notes},
        settings={"mode": "full", "seed": 0, "training": training.model_dump(mode="json")},
    )
    return _fit(index, handle, plan, progress=progress, cancel=cancel, device=device)


# ---------------------------------------------------------------------------- the trainer
def make_scheduler(
    optimizer: torch.optim.Optimizer,
    training: TrainingSettings,
    total_steps: int,
    steps_per_epoch: int,
) -> lr_scheduler.LRScheduler:
    """Per-step schedule: linear warm-up, then ``training.lr_decay`` over the remaining steps.

    The warm-up is ``training.warmup_iters`` steps, but at most a fifth of a short run.
    """
    warmup = min(training.warmup_iters, int(total_steps * MAX_WARMUP_SHARE))
    main: lr_scheduler.LRScheduler
    if training.lr_decay == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    elif training.lr_decay == "step":
        main = lr_scheduler.StepLR(optimizer, STEP_EPOCHS * steps_per_epoch, STEP_GAMMA)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def make_optimizer(params: list[nn.Parameter], training: TrainingSettings) -> torch.optim.Optimizer:
    if training.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=training.learning_rate,
                                 weight_decay=training.weight_decay)
    return torch.optim.SGD(params, lr=training.learning_rate, momentum=training.momentum,
                           weight_decay=training.weight_decay)


def _trainable(model: nn.Module, mode: str, kind: str | None,
               backbone_pretrained: bool) -> list[nn.Parameter]:
    """Freeze what this run must not change; return the parameters the optimizer may touch.

    Learning ROI on a keypoint model leaves its keypoint head alone (the two kinds are
    independent), so that head is frozen and its loss left out; learning keypoints on the full
    model damps the keypoint loss's pull on the backbone. A pretrained backbone keeps its
    BatchNorm statistics under Full model too.
    """
    for param in model.parameters():
        param.requires_grad_(True)
    freeze_backbone(model, mode == "heads",
                    statistics_frozen=mode == "heads" or backbone_pretrained)
    heads = model.roi_heads
    if getattr(heads, "keypoint_head", None) is not None:
        if kind == "roi":
            for part in (heads.keypoint_head, heads.keypoint_predictor):
                for param in part.parameters():
                    param.requires_grad_(False)
        elif mode == "full":
            heads.keypoint_head.register_forward_pre_hook(_damp_keypoint_gradient)
    return [p for p in model.parameters() if p.requires_grad]


def _damp_keypoint_gradient(_head: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
    """The keypoint head's input as it is, passing back :data:`KEYPOINT_FEATURE_GRADIENT` of its
    gradient to the features it was pooled from."""
    features = args[0]
    kept = features.detach()
    return (kept + KEYPOINT_FEATURE_GRADIENT * (features - kept),)


def _loss_names(kind: str | None) -> set[str] | None:
    """The detector losses a run optimises; None means all of them."""
    return None if kind != "roi" else {
        "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"
    }


def evaluate(model: nn.Module, loader: Iterable, device: torch.device,
             config: ModelConfig, keypoint_classes: list[int]) -> dict[str, float]:
    """COCO box (and keypoint) AP of ``model`` on a held-out loader."""
    targets, predictions = predict(model, loader, device, Views.of(config))
    return coco_metrics(targets, predictions, len(config.categories),
                        keypoint_classes=keypoint_classes)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: Iterable,
    device: torch.device,
    epoch: int,
    *,
    losses_used: set[str] | None,
    on_step: Callable[[float, float], None],
    cancel: CancelFn | None,
) -> float:
    """Epoch ``epoch``: one pass over the training images (one optimizer step per batch,
    gradients clipped, the learning rate scheduled per step); returns the mean loss.
    ``on_step(loss, lr)`` after each step; a non-finite loss stops the run (it has diverged)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    step_losses = []
    for images, targets in loader:
        check_cancel(cancel)
        images = [image.to(device) for image in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with precision(device, "train"):
            parts = model(images, targets)
        loss = sum(v for k, v in parts.items() if losses_used is None or k in losses_used)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged: the loss became {loss.item()} at epoch {epoch}, so no "
                "version was saved; lower the learning rate in the model configuration"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        scheduler.step()
        step_losses.append(loss.item())
        on_step(step_losses[-1], lr)
    return sum(step_losses) / max(1, len(step_losses))


def _score(metrics: dict[str, float], kind: str | None) -> float:
    """The held-out figure early stopping watches."""
    if kind == "keypoints" and "keypoint_AP" in metrics:
        return metrics["keypoint_AP"]
    return metrics.get("box_AP", 0.0)


@dataclass
class _Trainer:
    """A run's model, data and optimisation, built before the run is recorded."""

    plan: _Plan
    model: nn.Module
    config: ModelConfig
    device: torch.device
    loader: Any
    test_loader: Any
    keypoint_classes: list[int]

    @classmethod
    def build(cls, index: Index, handle: ModelHandle, plan: _Plan,
              device: str | torch.device | None) -> _Trainer:
        dev = choose_device(device)
        model, config = handle.load(dev)  # the active weights: Learn never starts from scratch
        training = plan.training
        keypoint_classes = [
            config.categories.index(c.name) + 1 for c in index.categories()
            if c.keypoints_enabled and config.keypoint_names and c.name in config.categories
        ]
        train_set = DetectionDataset(index, plan.train_images, config, augment=training.augment)
        model.roi_heads.fg_bg_sampler.batch_size_per_image = sampled_regions(
            max((len(target.boxes) for target in train_set.targets), default=0))
        loader = make_loader(train_set, batch_size=training.batch_size, shuffle=True,
                             seed=plan.seed, num_workers=plan.num_workers)
        test_loader = None
        if plan.test_images:
            test_loader = make_loader(DetectionDataset(index, plan.test_images, config),
                                      batch_size=training.batch_size, shuffle=False,
                                      num_workers=plan.num_workers)
        return cls(plan, model, config, dev, loader, test_loader, keypoint_classes)

    def evaluate(self) -> dict[str, float]:
        if self.test_loader is None:
            return {}
        return evaluate(self.model, self.test_loader, self.device, self.config,
                        self.keypoint_classes)

    def suggest(self) -> dict[str, Suggested]:
        """Complete's suggested settings per category (:mod:`.suggest`), judged on the held-out
        images when there are some, else on the training images as they are, unaugmented."""
        held_out = self.test_loader is not None
        loader = self.test_loader if held_out else make_loader(
            self.loader.dataset.unaugmented(), batch_size=self.plan.training.batch_size,
            shuffle=False, num_workers=self.plan.num_workers)
        # boxes and scores judge the settings: a keypoint model's keypoint head is not run
        targets, outputs = predict(self.model, loader, self.device, Views.of(self.config),
                                   keypoints=False)
        found = {}
        for label, name in enumerate(self.config.categories, 1):
            truth = [target["boxes"][target["labels"] == label].numpy() for target in targets]
            detected = [(out["boxes"][out["labels"] == label].numpy(),
                         out["scores"][out["labels"] == label].numpy()) for out in outputs]
            if (suggestion := suggest(truth, detected, held_out=held_out)) is not None:
                found[name] = suggestion
        return found

    def fit(self, losses: list[float], progress: ProgressFn | None,
            cancel: CancelFn | None) -> tuple[dict[str, float], dict[str, Suggested]]:
        """Train for the planned epochs, appending each epoch's mean loss to ``losses``; with
        patience and a held-out part, stop early and keep the best epoch's weights. Returns the
        held-out metrics of the weights kept and Complete's suggested settings (:meth:`suggest`,
        judged while a frozen backbone's features are still cached)."""
        plan, training = self.plan, self.plan.training
        params = _trainable(self.model, plan.mode, plan.kind, self.config.backbone_pretrained)
        optimizer = make_optimizer(params, training)
        total = training.epochs * len(self.loader)
        scheduler = make_scheduler(optimizer, training, total, len(self.loader))
        # loss scaling keeps fp16 gradients from underflowing; other precisions need none
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda"
                                      and PRECISION["train"] == "fp16")
        if plan.mode == "heads":  # a frozen backbone: each image view's features computed once
            cache_backbone(self.model)
        try:
            metrics = self._epochs(losses, progress, cancel, optimizer, scheduler, scaler)
            check_cancel(cancel)
            return metrics, self.suggest()
        finally:
            uncache_backbone(self.model)

    def _epochs(self, losses: list[float], progress: ProgressFn | None, cancel: CancelFn | None,
                optimizer: torch.optim.Optimizer, scheduler: lr_scheduler.LRScheduler,
                scaler: torch.amp.GradScaler) -> dict[str, float]:
        plan, training = self.plan, self.plan.training
        total = training.epochs * len(self.loader)
        started, done = time.monotonic(), 0
        best: tuple[float, dict, dict[str, float]] | None = None
        since_best = 0
        for epoch in range(1, training.epochs + 1):

            def on_step(loss: float, lr: float, epoch: int = epoch) -> None:
                nonlocal done
                done += 1
                report(progress, Progress(
                    plan.operation, done, total, message=f"epoch {epoch}/{training.epochs}",
                    epoch=epoch, epochs=training.epochs, loss=loss, lr=lr,
                    eta_s=(time.monotonic() - started) / done * (total - done),
                ))

            losses.append(train_one_epoch(
                self.model, optimizer, scheduler, scaler, self.loader, self.device, epoch,
                losses_used=_loss_names(plan.kind), on_step=on_step, cancel=cancel))
            if not (training.patience and self.test_loader is not None):
                continue
            metrics = self.evaluate()
            score = _score(metrics, plan.kind)
            if best is None or score > best[0]:
                best, since_best = (score, copy.deepcopy(self.model.state_dict()), metrics), 0
            else:
                since_best += 1
                if since_best >= training.patience:
                    break
        if best is None:
            return self.evaluate()
        self.model.load_state_dict(best[1])  # early stopping keeps the best held-out epoch
        return best[2]


def _fit(
    index: Index,
    handle: ModelHandle,
    plan: _Plan,
    *,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    device: str | torch.device | None,
) -> TrainResult:
    """Record the run, train, and commit the weights as a new version; a cancelled or failed
    run is recorded as such and leaves the active version as it was."""
    start_version = handle.active_version
    trainer = _Trainer.build(index, handle, plan, device)
    run_id = index.runs.start(plan.operation, model_id=handle.id,
                              kind=plan.kind or ",".join(handle.config.kinds),
                              scope=plan.scope, settings=plan.settings)
    started = time.monotonic()
    losses: list[float] = []
    metrics: dict[str, float] = {}

    def measured() -> dict[str, Any]:
        return {"seconds": time.monotonic() - started, "metrics": metrics, "losses": losses}

    try:
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda"
                                   else []):
            torch.manual_seed(plan.seed)  # augmentations and shuffling repeat; caller's RNG kept
            metrics, suggested = trainer.fit(losses, progress, cancel)
        check_cancel(cancel)
        note = (f"{plan.operation} ({plan.kind or 'all'}, {plan.mode}) on "
                f"{len(plan.train_images)} image(s) from v{start_version}")
        config = trainer.config.replace(suggested={**trainer.config.suggested, **suggested})
        if plan.mode == "full":  # the backbone learned: "Heads only" is sound from now on
            config = config.replace(backbone_trained=True)
        version = handle.commit_version(trainer.model.eval().cpu(), config, note=note,
                                        parent=start_version)
    except BaseException as exc:
        index.runs.end_on_error(run_id, exc, **measured())
        raise
    fields = measured()
    index.runs.finish(run_id, "done", version=version, **fields)
    return TrainResult(run_id=run_id, version=version, seconds=fields["seconds"], losses=losses,
                       metrics=metrics, images=len(plan.train_images), notes=plan.notes)
