"""Learn and Complete against the loops a user would write, measured in one run on generated data.

- Learn (heads only, then the full model) against torchvision's detection fine-tuning tutorial
  loop (benchmarks/_baselines.py): same start weights (the index model's first weights, saved
  again as a version that runs one pass: :func:`make_data`), same training images, same epochs,
  same seed. Figures: ``learn_heads_ratio`` and ``learn_full_ratio``
  (baseline seconds / ours), and held-out box AP50 (pycocotools) of both sides' heads-only
  results, ``learn_ap_ours`` and ``learn_ap_baseline`` (``learn_full_ap_*`` for the full model),
  computed by the same per-image prediction for both.
- Complete against the per-image loop, same model and settings (the learned weights with a
  score threshold of 0, so that both sides have detections to compare:
  :func:`keep_every_detection`): ``complete_ratio`` (images per second, ours / baseline) and
  ``complete_outputs_match`` (what Complete wrote into the index equals the loop's detections
  within float tolerance: :data:`ABSOLUTE` plus :data:`RELATIVE` of the value).
- Peak RSS of Complete on N and 10N images, each in its own process: ``complete_rss_growth_mb``.

Each side runs once to warm up, then the sides alternate (which goes first swaps every repeat);
every figure measured per repeat is reported as min/median/max under ``spread``, its median at the
top level. Prints what it does as it goes; the last line of stdout is the JSON object.

    .venv/bin/python benchmarks/run.py [--quick] [--json PATH] [--device cpu|cuda|...]
        [--repeats N] [--weights none|coco|PATH] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment  # napari depends on scipy
from torch import nn

from _baselines import TutorialDataset, as_torchvision, per_image_predict, tutorial_learn
from _report import emit, say
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.data import class_ids
from napari_learn_complete.engine.device import choose_device
from napari_learn_complete.engine.metrics import evaluate_coco
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.engine.train import learn
from napari_learn_complete.engine.views import Views
from napari_learn_complete.index import ImageRecord, Index
from napari_learn_complete.model import ModelConfig, active_model, create_model
from napari_learn_complete.model.config import InferenceSettings
from napari_learn_complete.sample import GROUND_TRUTH_FILE, make_sample_index

# "The same detections" within float error: a box corner or score may differ by ABSOLUTE (pixels,
# score) plus RELATIVE of its value. float32 keeps about 7 significant digits; the same network
# summed in another order (the pooler, channels-last convolutions, batching) keeps about 5.
ABSOLUTE = 1e-3
RELATIVE = 1e-5
MEMORY_SCRIPT = Path(__file__).with_name("bench_complete_memory.py")
ONE_PASS = InferenceSettings(mirror=False, scales=(1.0,))  # the model once per image, as the loops
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How much work one benchmark run does. Images are square so that a batch of them needs no
    padding: Complete's batches then see exactly the pixels the per-image loop sees."""

    train: int  # labelled images both Learns train on
    held_out: int  # labelled images (ground truth only) both Learns are scored on
    complete: int  # unlabelled images both Completes run over
    image: int  # image side, px
    epochs: int
    memory: int  # N of the N / 10N memory measurement
    repeats: int
    min_size: int | None = None  # model input; None: the product's choice for the images


QUICK = Sizes(train=8, held_out=8, complete=100, image=256, epochs=2, memory=10, repeats=2)
FULL = Sizes(train=16, held_out=16, complete=300, image=480, epochs=10, memory=30, repeats=3)


@dataclass
class Data:
    """The generated index split into the parts each measurement uses."""

    index: Index
    train: list[ImageRecord]
    held_out: list[ImageRecord]
    complete: list[ImageRecord]
    truth: dict  # COCO ground truth of every image, with the index's ids


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def make_data(folder: Path, sizes: Sizes, weights: str) -> Data:
    """A synthetic index: train images labelled, held-out and Complete images not, one model."""
    total = sizes.train + sizes.held_out + sizes.complete
    index = make_sample_index(folder, n_images=total, labelled=sizes.train,
                              size_range=(sizes.image, sizes.image))
    handle = create_model(index, weights=weights, min_size=sizes.min_size)
    # Like for like: the baselines run the model once per image. The views new models average
    # over (the mirror, a second input size: engine/views.py) run it four times; Complete with
    # them is timed once on its own. A version of its own, so that rolling back to it (and
    # Learns from it) keep one pass.
    model, config = handle.load("cpu")
    handle.commit_version(model, config.replace(inference=ONE_PASS),
                          note="one pass, like the baselines", parent=handle.active_version)
    images = index.images()
    held = sizes.train + sizes.held_out
    return Data(index, images[:sizes.train], images[sizes.train:held], images[held:],
                json.loads((index.path / GROUND_TRUTH_FILE).read_text()))


# ---------------------------------------------------------------------------- Learn
def tutorial_targets(data: Data, config: ModelConfig) -> list[dict[str, torch.Tensor]]:
    """The training images' ground truth as the tutorial's dataset hands it to the model."""
    names = {c["id"]: c["name"] for c in data.truth["categories"]}
    ids = class_ids(config)
    targets = []
    for image in data.train:
        anns = [a for a in data.truth["annotations"] if a["image_id"] == image.id]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([ids[names[a["category_id"]]] for a in anns],
                                               dtype=torch.int64)})
    return targets


def held_out_ap50(model: nn.Module, config: ModelConfig, data: Data,
                  device: torch.device) -> float:
    """Box AP50 on the held-out images, scored the same way whichever side trained ``model``."""
    found = per_image_predict(model, [data.index.resolve(r) for r in data.held_out], device)
    category = {c.name: c.id for c in data.index.categories()}
    detections = [
        {"image_id": image.id, "category_id": category[config.categories[label - 1]],
         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
        for image, out in zip(data.held_out, found, strict=True)
        for (x0, y0, x1, y1), label, score in zip(out["boxes"].tolist(), out["labels"].tolist(),
                                                  out["scores"].tolist(), strict=True)
    ]
    ids = {image.id for image in data.held_out}
    truth = {**data.truth, "images": [i for i in data.truth["images"] if i["id"] in ids],
             "annotations": [a for a in data.truth["annotations"] if a["image_id"] in ids]}
    return evaluate_coco(truth, detections).get("box_AP50", 0.0)


def measure_learn(data: Data, sizes: Sizes, device: torch.device, seed: int = 0) -> dict:
    """Both Learn modes, both sides, alternating; each run starts from the same first version.
    Returns the figures and, under ``"version"``, the last version our Learn made."""
    handle = active_model(data.index)
    start = handle.active_version
    paths = [data.index.resolve(image) for image in data.train]
    targets = tutorial_targets(data, handle.load("cpu")[1])
    figures: dict[str, Any] = {"spread": {}}

    def baseline(mode: str, epochs: int) -> tuple[float, nn.Module]:
        def run() -> nn.Module:  # loading the start weights is part of both sides' time
            model = as_torchvision(active_model(data.index).load(device)[0])
            return tutorial_learn(model, TutorialDataset(paths, targets), epochs=epochs,
                                  heads_only=mode == "heads", seed=seed, device=device)
        return timed(run)

    def ours(mode: str, epochs: int) -> tuple[float, nn.Module]:
        settings = LearnSettings(epochs=epochs, mode=mode, seed=seed)
        seconds, result = timed(lambda: learn(data.index, images=data.train, settings=settings,
                                              device=device))
        figures["version"] = result.version
        return seconds, active_model(data.index).load(device)[0]

    sides = {"baseline": baseline, "ours": ours}
    for mode in ("heads", "full"):
        seconds: dict[str, list[float]] = {"baseline": [], "ours": []}
        ap: dict[str, list[float]] = {"baseline": [], "ours": []}
        for repeat in range(sizes.repeats + 1):  # repeat 0 warms up, with one epoch
            warm_up = repeat == 0
            for side in sorted(sides, reverse=repeat % 2 == 1):
                handle.rollback(start)
                took, model = sides[side](mode, 1 if warm_up else sizes.epochs)
                if warm_up:
                    continue
                seconds[side].append(took)
                ap[side].append(held_out_ap50(model, handle.config, data, device))
                say(f"learn {mode:5} {side:8} repeat {repeat}: {took:6.1f} s, "
                    f"held-out AP50 {ap[side][-1]:.3f}")
        ratios = [b / o for b, o in zip(seconds["baseline"], seconds["ours"], strict=True)]
        named = {f"learn_{mode}_ratio": ratios,
                 f"learn_{mode}_seconds_ours": seconds["ours"],
                 f"learn_{mode}_seconds_baseline": seconds["baseline"],
                 f"learn_{'' if mode == 'heads' else 'full_'}ap_ours": ap["ours"],
                 f"learn_{'' if mode == 'heads' else 'full_'}ap_baseline": ap["baseline"]}
        for name, values in named.items():
            figures["spread"][name] = spread(values)
            figures[name] = figures["spread"][name]["median"]
    handle.rollback(start)
    return figures


# ---------------------------------------------------------------------------- Complete
def _rows(boxes: Sequence, scores: Sequence) -> np.ndarray:
    """(N, 5) box corners and score, best score first."""
    rows = np.column_stack([np.asarray(boxes, float).reshape(-1, 4),
                            np.asarray(scores, float).reshape(-1)])
    return rows[np.argsort(-rows[:, 4], kind="stable")]


def difference(expected: np.ndarray, got: np.ndarray, cap: int | None = None) -> float:
    """The largest difference between paired detections in tolerances (at most 1: the same
    detections), paired one-to-one with the least total difference (order among near-equal
    scores may differ, and an untrained model's boxes crowd so that pairing each with the
    closest one left can miss); inf when the counts differ.
    When both lists hold ``cap`` detections (Complete's max detections cut them), those scoring
    within the tolerance of the cut are left out: which of several tied detections make the cut
    is float noise, and either is the same list within float tolerance."""
    if cap is not None and len(expected) == cap == len(got):
        cut = max(expected[:, 4].min(), got[:, 4].min()) + ABSOLUTE
        expected, got = expected[expected[:, 4] > cut], got[got[:, 4] > cut]
    if len(expected) != len(got):
        return float("inf")
    if not len(expected):
        return 0.0
    gaps, rows, cols = _pairs(expected, got)
    return float(gaps[rows, cols].max())


def differences(expected: Sequence[np.ndarray], got: Sequence[np.ndarray],
                cap: int | None = None) -> tuple[float, int]:
    """Per image lists: the largest :func:`difference` and how many images differ beyond the
    tolerance (a failed match on one near-tied image and on every image read alike otherwise)."""
    gaps = [difference(e, g, cap) for e, g in zip(expected, got, strict=True)]
    return max(gaps, default=0.0), sum(gap > 1 for gap in gaps)


def _pairs(expected: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The largest coordinate or score gap of every pair of rows, in tolerances, and the
    one-to-one pairing with the least total gap (as many pairs as the shorter list has rows)."""
    e, g = expected[:, None, :], got[None, :, :]
    allowed = ABSOLUTE + RELATIVE * np.maximum(np.abs(e), np.abs(g))
    gaps = (np.abs(e - g) / allowed).max(axis=2)
    rows, cols = linear_sum_assignment(gaps)
    return gaps, rows, cols


def unmatched(expected: np.ndarray, got: np.ndarray) -> dict[str, list[list[float]]]:
    """The rows of each list with no partner within the tolerance in the other, rounded: what a
    failed output match is made of (a box one side kept at NMS or at the score threshold and the
    other did not, or one moved)."""
    paired_e: set[int] = set()
    paired_g: set[int] = set()
    if len(expected) and len(got):
        gaps, rows, cols = _pairs(expected, got)
        close = gaps[rows, cols] <= 1
        paired_e, paired_g = set(rows[close].tolist()), set(cols[close].tolist())
    return {side: [[round(float(v), 4) for v in row]
                   for i, row in enumerate(rows_) if i not in paired]
            for side, rows_, paired in (("loop", expected, paired_e),
                                        ("complete", got, paired_g))}


def baseline_selection(found: Sequence[dict], label: int,
                       settings: CompleteSettings) -> list[np.ndarray]:
    """The loop's detections kept by Complete's settings: the category's, scoring at least
    ``min_score``, the best ``max_detections``."""
    selected = []
    for out in found:
        keep = (out["labels"] == label) & (out["scores"] >= settings.min_score)
        selected.append(_rows(out["boxes"][keep], out["scores"][keep])[:settings.max_detections])
    return selected


def written(index: Index, run_id: int, images: Sequence[ImageRecord]) -> list[np.ndarray]:
    """What a Complete run wrote into the index, per image."""
    by_image: dict[int, list] = {image.id: [] for image in images}
    for obs in index.observations(run_id=run_id):
        by_image[obs.image_id].append(obs)
    return [_rows([o.box for o in by_image[i.id]], [o.score for o in by_image[i.id]])
            for i in images]


def keep_every_detection(index: Index) -> None:
    """Make the active version's score threshold 0 (a version of its own, same weights), for
    both sides. A model that learned from random weights for a few epochs can score every box
    of these images under the product's 0.05: both sides would then find nothing, and the
    output match and Complete's writes would go unmeasured."""
    handle = active_model(index)
    model, config = handle.load("cpu")
    handle.commit_version(
        model, config.replace(inference=config.inference.replace(score_threshold=0.0)),
        note="every detection kept, for the output match", parent=handle.active_version)


def measure_complete(data: Data, sizes: Sizes, device: torch.device) -> dict:
    """Complete over the unlabelled images against the per-image loop, with the active model."""
    index, records = data.index, data.complete
    paths = [index.resolve(image) for image in records]
    keep_every_detection(index)
    model, config = active_model(index).load(device)
    model = as_torchvision(model)
    settings = CompleteSettings(min_score=config.inference.score_threshold,
                                max_detections=config.inference.max_detections)
    warm = records[:2 * settings.batch_size]
    found = per_image_predict(model, paths[:len(warm)], device)
    # The category the model finds most, so that there are detections to compare.
    labels = Counter(label for out in found for label in out["labels"].tolist())
    label = labels.most_common(1)[0][0] if labels else 1
    category = config.categories[label - 1]
    index.runs.undo(complete(index, warm, category, settings=settings,
                             predictor=Predictor.from_index(index, device)).run_id)
    say(f"complete: {len(records)} images of {sizes.image} px, category {category!r}, "
        f"min score {settings.min_score}, at most {settings.max_detections} per image")

    seconds: dict[str, list[float]] = {"baseline": [], "ours": []}
    worst, expected, per_image, differing = 0.0, None, 0.0, 0
    for repeat in range(1, sizes.repeats + 1):
        for side in sorted(seconds, reverse=repeat % 2 == 1):
            if side == "baseline":
                took, found = timed(partial(per_image_predict, model, paths, device))
                expected = baseline_selection(found, label, settings)
            else:
                # Warm, as the engine keeps its predictor between jobs; a fresh one each repeat
                # so nothing an earlier repeat computed can serve this one.
                predictor = Predictor.from_index(index, device)
                took, result = timed(partial(complete, index, records, category,
                                             settings=settings, predictor=predictor))
                # The match reads back what Complete wrote (observations of its run), so the
                # write path is checked too, not just the Predictor's output.
                got = written(index, result.run_id, records)
                per_image = result.written / len(records)
                index.runs.undo(result.run_id)  # the next repeat writes the same again
            seconds[side].append(took)
            say(f"complete {side:8} repeat {repeat}: {took:6.1f} s, "
                f"{len(records) / took:6.1f} images/s")
        gap, images = differences(expected, got, settings.max_detections)
        worst, differing = max(worst, gap), max(differing, images)
    # The match at equal arithmetic: one image per batch, as the loop runs, and the model's
    # BatchNorms as passes of their own, as the loop runs them (Complete folds them into the
    # convolutions: model/build.py, folded). Batched convolutions and folded BatchNorms differ
    # from the loop's in the last float bits, which on a barely trained model (objectness and
    # scores tied to 1e-6) can change which proposals and tied detections are kept; the timed
    # runs' own difference is reported beside it.
    as_the_loop = Predictor.from_index(index, device)
    as_the_loop.net = as_the_loop.model
    single = complete(index, records, category, settings=settings.replace(batch_size=1),
                      predictor=as_the_loop)
    pairs = list(zip(expected, written(index, single.run_id, records), strict=True))
    gaps = [difference(e, g, settings.max_detections) for e, g in pairs]
    exact = max(gaps)
    index.runs.undo(single.run_id)
    averaged = {}  # images per second with the mirror alone, and with a new model's views
    new = InferenceSettings()
    for name, inference in (("mirror", config.inference.replace(mirror=True)),
                            ("views", config.inference.replace(mirror=True, scales=new.scales))):
        predictor = Predictor.from_index(index, device)
        predictor.views = Views.of(config.replace(inference=inference))
        took, result = timed(partial(complete, index, records, category, settings=settings,
                                     predictor=predictor))
        index.runs.undo(result.run_id)
        averaged[name] = len(records) / took
        say(f"complete, {name}: {took:6.1f} s, {averaged[name]:6.1f} images/s")
    ratios = [b / o for b, o in zip(seconds["baseline"], seconds["ours"], strict=True)]
    figures: dict[str, Any] = {"spread": {}}
    named = {"complete_ratio": ratios,
             "complete_images_per_s_ours": [len(records) / s for s in seconds["ours"]],
             "complete_images_per_s_baseline": [len(records) / s for s in seconds["baseline"]]}
    for name, values in named.items():
        figures["spread"][name] = spread(values)
        figures[name] = figures["spread"][name]["median"]
    figures.update(complete_category=category,
                   complete_score_threshold=config.inference.score_threshold,
                   complete_outputs_match=exact <= 1,
                   complete_max_difference=exact if np.isfinite(exact) else None,
                   complete_batched_outputs_match=worst <= 1,
                   complete_batched_max_difference=worst if np.isfinite(worst) else None,
                   complete_batched_images_differing=differing,
                   complete_detections_per_image=per_image,
                   complete_mirror_images_per_s=averaged["mirror"],
                   complete_views_images_per_s=averaged["views"])
    if exact > 1:  # the image that differs most, and its rows that differ
        worst_image = int(np.argmax(gaps))
        figures["complete_mismatch"] = {"image": records[worst_image].name,
                                        **unmatched(*pairs[worst_image])}
    return figures


def measure_memory(folder: Path, work: Path, count: int) -> dict:
    """Peak RSS of Complete with the real model on ``count`` and ``10 * count`` images, each in a
    fresh process on its own copy of the index (bench_complete_memory.py's ``--one``)."""
    peaks = []
    for n in (count, 10 * count):
        copy = work / f"memory{n}"
        shutil.copytree(folder, copy)
        command = [sys.executable, str(MEMORY_SCRIPT), "--one", str(n), "--folder", str(copy),
                   "--real-model"]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        peaks.append(json.loads(out.strip().splitlines()[-1])["rss_peak_mib"])
        shutil.rmtree(copy)
        say(f"memory: Complete of {n} images, peak RSS {peaks[-1]:.0f} MiB")
    return {"complete_rss_peak_mb_n": peaks[0], "complete_rss_peak_mb_10n": peaks[1],
            "complete_rss_growth_mb": peaks[1] - peaks[0]}


# ---------------------------------------------------------------------------- the run
def benchmark(work: Path, sizes: Sizes, *, device: str = "cpu", weights: str = "none",
              profile_top: int = 0) -> dict:
    """Every figure, measured in ``work`` (a scratch folder); with ``profile_top``, then a profile
    of our side."""
    dev = choose_device(device)
    say(f"data: {sizes.train} training, {sizes.held_out} held-out and {sizes.complete} Complete "
        f"images of {sizes.image} px in {work}")
    data = make_data(work / "index", sizes, weights)
    config = active_model(data.index).config
    figures: dict[str, Any] = {
        "setup": {"device": str(dev), "weights": weights, "repeats": sizes.repeats,
                  "epochs": sizes.epochs, "train_images": sizes.train,
                  "held_out_images": sizes.held_out, "complete_images": sizes.complete,
                  "image_px": sizes.image, "model_input": [config.min_size, config.max_size],
                  "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "cpus": os.cpu_count(), "machine": platform.platform()},
    }
    # Memory first, while the index holds one weight version: less to copy per process.
    figures.update(measure_memory(data.index.path, work, sizes.memory))
    parts = [measure_learn(data, sizes, dev)]
    active_model(data.index).rollback(parts[0].pop("version"))  # Complete with a learned model
    parts.append(measure_complete(data, sizes, dev))
    figures["spread"] = {}
    for part in parts:
        figures["spread"].update(part.pop("spread"))
        figures.update(part)
    if profile_top:
        profile(data, sizes, dev, figures["complete_category"], profile_top)
    data.index.close()
    return figures


def profile(data: Data, sizes: Sizes, device: torch.device, category: str, top: int) -> None:
    """cProfile of one heads-only Learn and one Complete of ours, as measured above; prints the
    top functions by cumulative time."""
    index = data.index
    learn_settings = LearnSettings(epochs=sizes.epochs, mode="heads")
    config = active_model(index).config
    settings = CompleteSettings(min_score=config.inference.score_threshold,
                                max_detections=config.inference.max_detections)
    predictor = Predictor.from_index(index, device)
    for what, fn in (
        ("Learn, heads only", lambda: learn(index, images=data.train, settings=learn_settings,
                                            device=device)),
        ("Complete", lambda: complete(index, data.complete, category, settings=settings,
                                      predictor=predictor)),
    ):
        profiler = cProfile.Profile()
        profiler.runcall(fn)
        say(f"profile: {what}, top {top} by cumulative time")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--repeats", type=int, help="measured repeats per figure (default 3)")
    parser.add_argument("--weights", default="none",
                        help="start weights of the model: none (random), coco, or a weight file")
    parser.add_argument("--profile", action="store_true",
                        help="also profile our heads-only Learn and our Complete")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        figures = benchmark(Path(tmp), sizes, device=args.device, weights=args.weights,
                            profile_top=15 if args.profile else 0)
    figures["setup"]["seconds"] = round(time.monotonic() - started, 1)
    emit(figures, args.json)


if __name__ == "__main__":
    main()
