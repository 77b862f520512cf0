"""Annotation effort: how many human edits Learn & Complete saves over labelling by hand.

A scripted annotator finishes a synthetic index (discs, squares, triangles with three keypoints)
whose ground truth only this script holds; the index starts with no observation at all. It labels
a first set by hand, Learns on it, then cycles: Complete the next batch (every category, boxes then
keypoints), count the corrections that make the batch equal the ground truth, save the corrected
batch (its observations become the ground truth, source "human"), Learn on it with a mix-in of
earlier labelled images; until every image is labelled. The ground truth only judges the edits.

Edits (one each):

- manual: a box drawn per ground-truth object, a point placed per labelled keypoint;
- boxes, per category: a missing box (draw), a false box (delete), a box whose IoU with its
  ground truth is below :data:`ADJUST_IOU` (adjust). A prediction is a ground-truth object's box
  when the one-to-one matching (largest total IoU) pairs them with IoU >= :data:`MATCH_IOU`;
- keypoints, per category, objects paired the same way by their extent (box, else the box around
  the keypoints): a missing point (place), a false point (delete), a point further than
  :data:`KEYPOINT_TOLERANCE` of the ground-truth box diagonal from its ground truth (move). An
  unpaired object's points are all missing, or all false.

Figures (the last line of stdout is the JSON object): ``roi_edits_manual``, ``roi_edits_loop``,
``roi_edit_ratio`` (manual / loop), the same with ``kp_``, ``edit_kinds_loop`` (the loop's
edits by kind: box draw, delete, adjust; point place, delete, move), ``cycles`` (images, edits
per image and by kind, Learn and Complete seconds of each) and ``compute_seconds``. The
protocol and measured figures are in docs/effort.md.

    .venv/bin/python benchmarks/effort.py [--quick] [--json PATH] [--device cpu|cuda|mps]
        [--weights none|coco|imagenet|PATH] [--seed N] [--shared-data PATH]
        [--epochs N] [--min-steps N] [--mode heads|full] [--mix-in N] [--min-score S]
        [--max-detections N]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment  # napari depends on scipy

from _report import emit, say
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import PredictionCache
from napari_learn_complete.engine.device import choose_device
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.scope import (
    FIRST_LEARN_STEPS,
    LATER_LEARN_STEPS,
    advised_epochs,
    mix_in,
)
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.engine.train import learn
from napari_learn_complete.index import ImageRecord, Index, Observation, iou, keypoint_extent
from napari_learn_complete.index.coco import import_coco
from napari_learn_complete.model.config import ModelConfig
from napari_learn_complete.model.registry import CONFIG_FILE, active_model, create_model
from napari_learn_complete.sample import generate, sample_index

ADJUST_IOU = 0.85  # a box below this IoU with its ground truth needs adjusting
MATCH_IOU = 0.5  # below this a prediction is not the object's box (the product's duplicate IoU)
KEYPOINT_TOLERANCE = 0.05  # share of the ground-truth box diagonal a point may be off

# What a correction is, for the figures' breakdown (Edits.kinds).
EDIT_KINDS = ("box draw", "box delete", "box adjust", "point place", "point delete", "point move")

Box = tuple[float, float, float, float]
Keypoints = tuple[tuple[float, float, float], ...]


class Annotation(NamedTuple):
    """What a person sees of one object: category, box and (x, y, v) keypoints, either may be
    None."""

    category: str
    box: Box | None
    keypoints: Keypoints | None

    @property
    def extent(self) -> Box | None:
        return self.box if self.box is not None else keypoint_extent(self.keypoints or ())

    @property
    def labelled_points(self) -> int:
        return sum(1 for _, _, v in self.keypoints or () if v > 0)


@dataclass
class Edits:
    """Edits of boxes and of keypoints, counted separately; ``kinds`` splits them by what the
    person does ("box draw", "box delete", "box adjust", "point place", "point delete", "point
    move"), to show which mistakes of the model cost the edits."""

    roi: int = 0
    kp: int = 0
    kinds: Counter[str] = field(default_factory=Counter, compare=False)

    @classmethod
    def of(cls, box: Counter[str], point: Counter[str]) -> Edits:
        """Edits from the boxes' and the points' counts by kind."""
        return cls(box.total(), point.total(),
                   Counter({f"box {k}": n for k, n in box.items()})
                   + Counter({f"point {k}": n for k, n in point.items()}))

    def __iadd__(self, other: Edits) -> Edits:
        self.roi += other.roi
        self.kp += other.kp
        self.kinds += other.kinds
        return self


@dataclass(frozen=True)
class Plan:
    """How much work one run does."""

    images: int
    first: int  # labelled by hand before the first Learn
    batch: int  # the first Complete batch; each next one doubles, up to ``max_batch``
    max_batch: int
    size_range: tuple[int, int]  # image sides, px
    # The model's configuration (a user edits it in the model's config.json); None: the
    # product's. Its input size, and its detections per image: the keypoint head runs on each
    # (0.15 GMAC with the light head), and a barely trained keypoint model scores every
    # proposal above the 0.05 threshold.
    min_size: int | None = None
    detections: int | None = None
    # Earlier labelled images mixed into each Learn; None: the largest batch.
    mix_in: int | None = None


QUICK = Plan(images=160, first=16, batch=16, max_batch=32, size_range=(96, 128), detections=10,
             mix_in=8)
FULL = Plan(images=300, first=20, batch=20, max_batch=80, size_range=(96, 160))



# ---------------------------------------------------------------------------- counting edits
def match(truth: Sequence[Box], predicted: Sequence[Box]) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(truth index, predicted index, IoU)`` with the largest total IoU among
    pairs of IoU >= :data:`MATCH_IOU`."""
    if not truth or not predicted:
        return []
    overlap = np.stack([iou(box, predicted) for box in truth])
    overlap[overlap < MATCH_IOU] = 0.0
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return [(int(r), int(c), float(overlap[r, c])) for r, c in zip(rows, cols, strict=True)
            if overlap[r, c] > 0]


def point_edits(truth: Keypoints, predicted: Keypoints, box: Box) -> Counter[str]:
    """Missing (place), false (delete) and misplaced (move) points of one paired object."""
    tolerance = KEYPOINT_TOLERANCE * math.hypot(box[2] - box[0], box[3] - box[1])
    edits: Counter[str] = Counter()
    for (tx, ty, tv), (px, py, pv) in zip(truth, predicted, strict=True):
        if tv > 0 and pv > 0:
            edits["move"] += math.hypot(px - tx, py - ty) > tolerance
        else:
            edits["place"] += tv > 0 and pv <= 0
            edits["delete"] += pv > 0 and tv <= 0
    return edits


def box_edits(truth: Sequence[Annotation], predicted: Sequence[Annotation]) -> Counter[str]:
    """Draw, delete and adjust edits that turn one category's predicted boxes into the truth."""
    t = [a.box for a in truth if a.box is not None]
    p = [a.box for a in predicted if a.box is not None]
    pairs = match(t, p)
    return Counter(draw=len(t) - len(pairs), delete=len(p) - len(pairs),
                   adjust=sum(1 for *_, o in pairs if o < ADJUST_IOU))


def keypoint_edits(truth: Sequence[Annotation], predicted: Sequence[Annotation]
                   ) -> Counter[str]:
    """Place, delete and move edits that turn one category's predicted keypoints into the
    truth."""
    t = [a for a in truth if a.labelled_points]
    p = [a for a in predicted if a.labelled_points]
    pairs = match([a.extent for a in t], [a.extent for a in p])
    edits = sum((point_edits(t[i].keypoints, p[j].keypoints, t[i].extent) for i, j, _ in pairs),
                Counter())
    paired_t, paired_p = {i for i, _, _ in pairs}, {j for _, j, _ in pairs}
    edits["place"] += sum(a.labelled_points for i, a in enumerate(t) if i not in paired_t)
    edits["delete"] += sum(a.labelled_points for j, a in enumerate(p) if j not in paired_p)
    return edits


def count_edits(truth: Sequence[Annotation], predicted: Sequence[Annotation]) -> Edits:
    """The corrections that make one image's ``predicted`` annotations equal ``truth``."""
    edits = Edits()
    for category in {a.category for a in (*truth, *predicted)}:
        t = [a for a in truth if a.category == category]
        p = [a for a in predicted if a.category == category]
        edits += Edits.of(box_edits(t, p), keypoint_edits(t, p))
    return edits


def manual_edits(truth: Sequence[Annotation]) -> Edits:
    """Labelling an image by hand: a box per object, a point per labelled keypoint."""
    return Edits.of(Counter(draw=sum(1 for a in truth if a.box is not None)),
                    Counter(place=sum(a.labelled_points for a in truth)))


# ---------------------------------------------------------------------------- the annotator
class Annotator:
    """The scripted person: knows the ground truth of each image (by index image name), reads
    what Complete wrote, counts the corrections and saves the corrected images."""

    def __init__(self, index: Index, truth: dict[str, list[Annotation]]) -> None:
        self.index = index
        self.truth = truth
        self.names = {c.id: c.name for c in index.categories()}

    def seen(self, image: ImageRecord) -> list[Annotation]:
        return [as_annotation(o, self.names)
                for o in self.index.observations(images=[image]) if not o.iscrowd]

    def corrections(self, images: Sequence[ImageRecord]) -> Edits:
        edits = Edits()
        for image in images:
            edits += count_edits(self.truth[image.name], self.seen(image))
        return edits

    def manual(self, images: Sequence[ImageRecord]) -> Edits:
        edits = Edits()
        for image in images:
            edits += manual_edits(self.truth[image.name])
        return edits

    def save(self, images: Sequence[ImageRecord]) -> None:
        """The corrected images: whatever the model wrote there replaced by the ground truth."""
        self.index.delete_observations(o.id for o in self.index.observations(images=images))
        self.index.add_observations([
            {"image": image.name, "category": a.category, "box": a.box,
             "keypoints": a.keypoints, "source": "human"}
            for image in images for a in self.truth[image.name]
        ])


def as_annotation(observation: Observation, names: dict[int, str]) -> Annotation:
    return Annotation(names[observation.category_id], observation.box, observation.keypoints)


@dataclass(frozen=True)
class Recipe:
    """The settings the annotator uses: the dialogs' unless overridden. With ``suggested`` the
    annotator presses the Complete dialog's "Use suggested" whenever the active version offers
    one for the category (what its Learn judged to cost the fewest corrections)."""

    learn: LearnSettings
    complete: CompleteSettings
    device: torch.device
    suggested: bool = True
    # docs/learn.md's advice for a model from random weights, which the Learn dialog offers as
    # "Use N epochs": raise a small set's epochs until its Learn takes this many optimizer steps
    # (0: the dialog's epochs always), and the first Learn's, on a backbone that has learned
    # nothing yet, until it takes ``first_steps``.
    min_steps: int = 0
    first_steps: int = 0

    def epochs(self, images: int, batch_size: int, *, untrained: bool = False) -> int:
        """Learn epochs for ``images`` training images (mixed-in ones included); ``untrained``:
        the model's backbone never trained (``ModelConfig.backbone_trained`` false)."""
        steps = max(self.min_steps, self.first_steps) if untrained else self.min_steps
        return max(self.learn.epochs,
                   advised_epochs(images, self.learn.test_percent, batch_size, steps))


def complete_all(index: Index, images: Sequence[ImageRecord], recipe: Recipe) -> list[int]:
    """Complete boxes, then keypoints, of every category on ``images`` (one prediction per image,
    shared through a cache); returns the run ids."""
    predictor = Predictor.from_index(index, recipe.device)
    chosen = complete_settings(index, recipe)
    cache = PredictionCache()
    runs = []
    for category in index.categories():
        kinds = ("roi", "keypoints") if category.keypoints_enabled else ("roi",)
        for kind in kinds:
            runs.append(complete(index, images, category.name, kind=kind,
                                 settings=chosen[category.name], predictor=predictor,
                                 cache=cache).run_id)
    return runs


def complete_settings(index: Index, recipe: Recipe) -> dict[str, CompleteSettings]:
    """Each category's Complete settings: the dialog's suggestion when it offers one and the
    recipe presses it, else the recipe's."""
    offered = active_model(index).config.suggested if recipe.suggested else {}
    return {category.name: recipe.complete if (s := offered.get(category.name)) is None
            else recipe.complete.replace(min_score=s.min_score, max_detections=s.max_detections)
            for category in index.categories()}


def learn_on(index: Index, images: Sequence[ImageRecord], annotator: Annotator,
             recipe: Recipe) -> tuple[float, int]:
    """Learn on ``images``: keypoints (which trains every head of a keypoint model) when they
    hold any, else boxes; returns the seconds and the epochs."""
    kind = "keypoints" if any(a.labelled_points for i in images
                              for a in annotator.truth[i.name]) else "roi"
    trained = len(images) + len(mix_in(index, images, recipe.learn.mix_in, recipe.learn.seed))
    config = active_model(index).config
    epochs = recipe.epochs(trained, config.training.batch_size,
                           untrained=not config.backbone_trained)
    seconds = learn(index, images=images, kind=kind, settings=recipe.learn.replace(epochs=epochs),
                    device=recipe.device).seconds
    return seconds, epochs


def batches(plan: Plan) -> list[tuple[int, int]]:
    """``(start, stop)`` of each Complete batch after the first set: sizes double up to the
    cap."""
    spans, start, size = [], plan.first, plan.batch
    while start < plan.images:
        spans.append((start, min(plan.images, start + size)))
        start, size = spans[-1][1], min(plan.max_batch, 2 * size)
    return spans


def cycle_row(cycle: int, images: int, edits: Edits, learned: tuple[float, int],
              complete_s: float, settings: dict[str, CompleteSettings] | None = None
              ) -> dict[str, Any]:
    """One cycle's figures; ``learned``: the Learn's seconds and epochs after it (0, 0: none);
    ``settings``: each category's Complete (min score, max detections)."""
    return {"cycle": cycle, "images": images, "roi_edits": edits.roi, "kp_edits": edits.kp,
            "roi_edits_per_image": round(edits.roi / images, 3),
            "kp_edits_per_image": round(edits.kp / images, 3),
            "edit_kinds": {kind: edits.kinds[kind] for kind in EDIT_KINDS},
            "learn_seconds": round(learned[0], 1), "learn_epochs": learned[1],
            "complete_seconds": round(complete_s, 1),
            "complete_settings": {name: [round(c.min_score, 4), c.max_detections]
                                  for name, c in (settings or {}).items()}}


def run_loop(index: Index, annotator: Annotator, plan: Plan, recipe: Recipe) -> dict[str, Any]:
    """The whole loop on a fresh index; returns the figures."""
    images = index.images()
    manual = annotator.manual(images)
    first = images[:plan.first]
    annotator.save(first)
    loop = annotator.manual(first)
    learned = learn_on(index, first, annotator, recipe)
    cycles = [cycle_row(0, len(first), loop, learned, 0.0)]
    say(f"cycle 0: {len(first)} images by hand ({loop.roi} box, {loop.kp} point edits), "
        f"Learn {learned[0]:.0f} s ({learned[1]} epochs)")
    spans = batches(plan)
    for number, (start, stop) in enumerate(spans, 1):
        batch = images[start:stop]
        began = time.perf_counter()
        complete_all(index, batch, recipe)
        complete_s = time.perf_counter() - began
        used = complete_settings(index, recipe)
        edits = annotator.corrections(batch)
        loop += edits
        annotator.save(batch)
        learned = (0.0, 0)
        if number < len(spans):  # after the last batch nothing is left to Complete
            learned = learn_on(index, batch, annotator, recipe)
        cycles.append(cycle_row(number, len(batch), edits, learned, complete_s, used))
        say(f"cycle {number}: {len(batch)} images, {edits.roi} box and {edits.kp} point "
            f"corrections (by hand: {annotator.manual(batch).roi}, "
            f"{annotator.manual(batch).kp}); Complete {complete_s:.0f} s, Learn "
            f"{learned[0]:.0f} s ({learned[1]} epochs)")
    return {
        "roi_edits_manual": manual.roi, "roi_edits_loop": loop.roi,
        "roi_edit_ratio": round(manual.roi / max(1, loop.roi), 3),
        "kp_edits_manual": manual.kp, "kp_edits_loop": loop.kp,
        "kp_edit_ratio": round(manual.kp / max(1, loop.kp), 3),
        "edit_kinds_loop": {kind: loop.kinds[kind] for kind in EDIT_KINDS},
        "cycles": cycles,
        "compute_seconds": round(sum(c["learn_seconds"] + c["complete_seconds"]
                                     for c in cycles), 1),
    }


# ---------------------------------------------------------------------------- the runs
def synthetic(folder: Path, plan: Plan, seed: int) -> tuple[Index, Annotator]:
    """An index of the synthetic images with no observation, and the annotator holding their
    ground truth."""
    samples = generate(plan.images, seed=seed, size_range=plan.size_range)
    index = sample_index(folder, samples, labelled=0, ground_truth_file=False)
    truth = {s.name: [Annotation(o.category, o.box, o.keypoints) for o in s.objects]
             for s in samples}
    return index, Annotator(index, truth)


def make_model(index: Index, plan: Plan, weights: str, seed: int) -> ModelConfig:
    """The keypoint model every run starts from, with the plan's configuration."""
    handle = create_model(index, keypoints=True, weights=weights, min_size=plan.min_size,
                          seed=seed)
    config = handle.config
    if plan.detections is not None:
        config = config.replace(inference=config.inference.replace(max_detections=plan.detections))
        config.save(handle.folder / CONFIG_FILE)
    return config


def shared_data(root: Path, work: Path, plan: Plan, recipe: Recipe,
                weights: str, seed: int) -> list[dict[str, Any]]:
    """Per COCO keypoint sample folder under ``root``: corrections on its second half before and
    after a Learn on its first half (from ``weights``; the plan's model configuration, its input
    size left to the product, as these images are larger)."""
    results = []
    for source in sorted(root.glob("*/*.json")):
        index = Index.create(work / source.parent.name)
        import_coco(index, source, source.parent)
        names = {c.id: c.name for c in index.categories()}
        truth = {image.name: [as_annotation(o, names)
                              for o in index.observations(images=[image]) if not o.iscrowd]
                 for image in index.images()}
        images = index.images()
        taught, rest = images[:len(images) // 2], images[len(images) // 2:]
        annotator = Annotator(index, truth)
        index.delete_observations(o.id for o in index.observations(images=rest))
        make_model(index, replace(plan, min_size=None), weights, seed)
        row: dict[str, Any] = {"dataset": source.parent.name, "learn_images": len(taught),
                               "scored_images": len(rest), "manual": vars(annotator.manual(rest))}
        runs = complete_all(index, rest, recipe)
        row["before_learn"] = vars(annotator.corrections(rest))
        for run_id in reversed(runs):
            index.runs.undo(run_id)
        seconds, row["learn_epochs"] = learn_on(index, taught, annotator, recipe)
        row["learn_seconds"] = round(seconds, 1)
        complete_all(index, rest, recipe)
        row["after_learn"] = vars(annotator.corrections(rest))
        say(f"shared data {row['dataset']}: {row}")
        results.append(row)
        index.close()
    return results


def benchmark(work: Path, plan: Plan, recipe: Recipe, *, weights: str = "none", seed: int = 0,
              shared: Path | None = None) -> dict[str, Any]:
    """Every figure, measured in ``work`` (a scratch folder)."""
    index, annotator = synthetic(work / "index", plan, seed)
    model = make_model(index, plan, weights, seed)
    say(f"{plan.images} images of {plan.size_range} px (model input {model.min_size}), first "
        f"{plan.first} by hand; Learn {recipe.learn.epochs} epochs (at least {recipe.min_steps} "
        f"steps, the first {recipe.first_steps}) {recipe.learn.mode}, mix-in "
        f"{recipe.learn.mix_in}; Complete min score {recipe.complete.min_score}, at most "
        f"{recipe.complete.max_detections} per image"
        f"{', or what the dialog suggests after a Learn' if recipe.suggested else ''}")
    figures = run_loop(index, annotator, plan, recipe)
    index.close()
    if shared is not None:
        figures["shared_data"] = shared_data(shared, work / "shared", plan, recipe,
                                             weights, seed)
    figures["setup"] = {
        "images": plan.images, "first": plan.first, "size_range": list(plan.size_range),
        "model_input": [model.min_size, model.max_size],
        "model_detections": model.inference.max_detections, "weights": weights, "seed": seed,
        "device": str(recipe.device), "learn": recipe.learn.model_dump(mode="json"),
        "learn_min_steps": recipe.min_steps, "learn_first_steps": recipe.first_steps,
        "complete": recipe.complete.model_dump(mode="json"), "suggested": recipe.suggested,
        "torch_threads": torch.get_num_threads()}
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 15 minutes on 2 CPU cores")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--weights", default="none",
                        help="start weights: none (random), coco, imagenet, or a weight file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared-data", type=Path,
                        help="also score the COCO keypoint samples under this folder")
    defaults = LearnSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="Learn epochs")
    parser.add_argument("--min-steps", type=int,
                        help="raise a small set's Learn epochs to this many optimizer steps "
                             f"(default: {LATER_LEARN_STEPS} from random weights, as the Learn "
                             "dialog advises, else 0)")
    parser.add_argument("--first-steps", type=int,
                        help="likewise for a Learn on a backbone that never trained, the first "
                             f"from random weights (default: {FIRST_LEARN_STEPS} from random "
                             "weights, as the Learn dialog advises, else 0)")
    parser.add_argument("--mode", choices=("heads", "full"),
                        help="Learn mode (default: full from random weights, else the dialog's)")
    parser.add_argument("--mix-in", type=int, default=None,
                        help="earlier labelled images mixed into each Learn (default: the "
                             "plan's, else the largest batch)")
    parser.add_argument("--min-score", type=float,
                        help="Complete's min score for every category (default: the dialog's "
                             "suggestion after a Learn, else its default)")
    parser.add_argument("--max-detections", type=int, help="likewise, Complete's max detections")
    parser.add_argument("--no-suggested", action="store_true",
                        help="never press the dialog's \"Use suggested\": its defaults throughout")
    parser.add_argument("--images", type=int, help="images in the index (default: the plan's)")
    parser.add_argument("--first", type=int, help="images labelled by hand before the first Learn")
    parser.add_argument("--batch", type=int, help="the first Complete batch (doubles after)")
    parser.add_argument("--max-batch", type=int, help="the largest Complete batch")
    parser.add_argument("--min-size", type=int, help="model input size (default: the plan's)")
    parser.add_argument("--detections", type=int,
                        help="the model's detections per image (default: the plan's)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    plan = replace(plan, **{field: getattr(args, field) for field in (
        "images", "first", "batch", "max_batch", "min_size", "detections")
        if getattr(args, field) is not None})
    from_random = args.weights == "none"
    mode = args.mode or ("full" if from_random else defaults.mode)
    mixed = next(m for m in (args.mix_in, plan.mix_in, plan.max_batch) if m is not None)
    recipe = Recipe(
        LearnSettings(epochs=args.epochs, mode=mode, mix_in=mixed, seed=args.seed),
        CompleteSettings(**{key: value for key, value in (
            ("min_score", args.min_score), ("max_detections", args.max_detections))
            if value is not None}),
        choose_device(args.device),
        suggested=not (args.no_suggested or args.min_score is not None
                       or args.max_detections is not None),
        min_steps=next(m for m in (args.min_steps, LATER_LEARN_STEPS if from_random else 0)
                       if m is not None),
        first_steps=next(m for m in (args.first_steps, FIRST_LEARN_STEPS if from_random else 0)
                         if m is not None))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-effort-") as tmp:
        figures = benchmark(Path(tmp), plan, recipe, weights=args.weights, seed=args.seed,
                            shared=args.shared_data)
    figures["setup"].update(quick=args.quick, seconds=round(time.monotonic() - started, 1))
    emit(figures, args.json)


if __name__ == "__main__":
    main()
