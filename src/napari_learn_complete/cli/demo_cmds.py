"""``demo``: one Learn & Complete cycle on the built-in sample index, headless.

It shows the whole workflow a person runs in napari, with numbers: build the sample index (a few
images labelled, the ground truth of all kept aside), create a model, Learn on the labelled images,
Complete every unlabelled image for each category, then score what Complete wrote against the
ground truth with :func:`~napari_learn_complete.engine.metrics.evaluate_coco`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..engine.complete import complete
from ..engine.detections import PredictionCache
from ..engine.metrics import evaluate_coco
from ..engine.predict import Predictor
from ..engine.settings import CompleteSettings
from ..engine.train import LearnSettings, learn
from ..errors import BadInputError, read_json
from ..index import Index
from ..model.registry import create_model
from ..sample import GROUND_TRUTH_FILE, make_sample_index
from . import EXIT_OK, ProgressBar, emit_json
from .index_cmds import print_summary, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="one Learn & Complete cycle on the built-in sample index, scored")
    demo.add_argument("--out", type=Path, default=None,
                      help="folder for the sample index (default: a new temporary folder)")
    demo.add_argument("--images", type=int, default=48, help="images in the sample index")
    demo.add_argument("--labelled", type=int, default=24, help="of which labelled by hand")
    demo.add_argument("--epochs", type=int, default=20,
                      help="Learn epochs (from random weights the sample needs ~100 steps of 4 "
                           "images; more labelled images learn more per step than more epochs)")
    demo.add_argument("--min-score", type=float, default=0.5, help="Complete's min score")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the model's random weights and of Learn: the same seed, the "
                           "same figures")
    demo.set_defaults(run=run_demo)


def completed_box_ap(index: Index, image_ids: list[int]) -> dict[str, float]:
    """Box AP of the model-made boxes on ``image_ids`` against the sample's ground truth."""
    truth = read_json(index.path / GROUND_TRUTH_FILE, "ground truth")
    wanted = set(image_ids)
    truth["images"] = [i for i in truth["images"] if i["id"] in wanted]
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in wanted]
    detections = [
        {"image_id": o.image_id, "category_id": o.category_id, "score": o.score,
         "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]]}
        for o in index.observations(images=image_ids, source="model", kind="roi")
    ]
    return evaluate_coco(truth, detections)


def check_demo_arguments(args: argparse.Namespace) -> None:
    """Refuse settings that would build for nothing (no epoch, no image to complete) before
    anything is built."""
    if args.epochs < 1:
        raise BadInputError(f"--epochs: must be at least 1, not {args.epochs}")
    if args.images < 2:
        raise BadInputError(f"--images: must be at least 2 (some to label, some to complete), "
                            f"not {args.images}")
    if not 1 <= args.labelled < args.images:
        raise BadInputError(f"--labelled: must be from 1 to {args.images - 1} (--images minus "
                            f"one, to leave images to complete), not {args.labelled}")
    if not 0 <= args.min_score <= 1:
        raise BadInputError(f"--min-score: must be from 0 to 1, not {args.min_score}")


def run_demo(args: argparse.Namespace) -> int:
    """The demo in ``--out``, kept; without it in a temporary folder, removed at the end (each run
    writes tens of MB of weight versions)."""
    check_demo_arguments(args)
    if args.out is not None:
        return demo_in(args.out, args)
    with tempfile.TemporaryDirectory(prefix="napari-learn-complete-demo-") as folder:
        return demo_in(Path(folder) / "index", args)


def demo_in(out: Path, args: argparse.Namespace) -> int:
    """The demo with its sample index made at ``out``."""
    started = time.perf_counter()
    kept = args.out is not None
    with make_sample_index(out, n_images=args.images, labelled=args.labelled) as index:
        facts = summary(index)
        print_summary(facts)
        if not kept:
            print("the sample index is removed at the end: --out DIR keeps it", file=sys.stderr)
        labelled = index.images(ids={o.image_id for o in index.observations()})
        rest = [i for i in index.images() if i not in labelled]
        # The sample cannot download COCO weights offline: start from random weights and let
        # Learn adapt the whole network ("Full model"); with pretrained weights "Heads only" is
        # the better first step.
        handle = create_model(index, weights="none", seed=args.seed)
        print(f"model {handle.name!r} v{handle.active_version}: {handle.config.backbone}, "
              f"input {handle.config.min_size} px", file=sys.stderr)
        print(f"Learn on {len(labelled)} labelled images ({args.epochs} epochs, Full model)",
              file=sys.stderr)
        with ProgressBar() as progress:
            learned = learn(index, images=labelled, settings=LearnSettings(
                epochs=args.epochs, mode="full", seed=args.seed), progress=progress)
        completed: dict[str, Any] = {}
        settings = CompleteSettings(min_score=args.min_score, max_detections=3)
        # One model pass per image serves every category, as in the engine process.
        predictor, cache = Predictor.from_index(index), PredictionCache()
        for category in index.categories():
            with ProgressBar() as progress:
                result = complete(index, rest, category.name, settings=settings,
                                  progress=progress, predictor=predictor, cache=cache)
            completed[category.name] = result.written
            print(f"Complete {category.name}: {result.written} boxes on {result.images} images "
                  f"in {result.seconds:.1f} s", file=sys.stderr)
        scores = {k: round(v, 4) for k, v in completed_box_ap(index, [i.id for i in rest]).items()}
        print("Completed boxes against the ground truth: "
              + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), file=sys.stderr)
        emit_json({
            "index": str(index.path) if kept else None, "labelled": len(labelled),
            "completed_images": len(rest), "seed": args.seed,
            "learn": {"version": learned.version, "seconds": round(learned.seconds, 1),
                      "losses": [round(v, 4) for v in learned.losses]},
            "written": completed, **scores,
            "seconds": round(time.perf_counter() - started, 1),
        })
    return EXIT_OK
