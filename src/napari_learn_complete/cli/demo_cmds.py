"""``demo``: one Learn & Complete cycle on the built-in sample index, headless.

It shows the whole workflow a person runs in napari, with numbers: build the sample index (a few
images labelled, the ground truth of all kept aside), create a model, Learn on the labelled images,
Complete every unlabelled image for each category, then score what Complete wrote against the
ground truth with pycocotools.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..engine.complete import CompleteSettings, complete
from ..engine.progress import Progress
from ..engine.train import LearnSettings, learn
from ..index import Index
from ..model.registry import create_model
from ..sample import GROUND_TRUTH_FILE
from . import EXIT_OK, emit_json
from .index_cmds import build_demo_index, print_summary, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="one Learn & Complete cycle on the built-in sample index, scored")
    demo.add_argument("--out", type=Path, default=None,
                      help="folder for the sample index (default: a new temporary folder)")
    demo.add_argument("--images", type=int, default=36, help="images in the sample index")
    demo.add_argument("--labelled", type=int, default=12, help="of which labelled by hand")
    demo.add_argument("--epochs", type=int, default=40,
                      help="Learn epochs (from random weights the sample needs ~120 steps)")
    demo.add_argument("--min-score", type=float, default=0.5, help="Complete's min score")
    demo.set_defaults(run=run_demo)


def _progress(event: Progress) -> None:
    """One line per finished epoch (steps divide evenly into epochs)."""
    if event.epochs and event.done % (event.total // event.epochs) == 0:
        print(f"  epoch {event.epoch}/{event.epochs} loss {event.loss:.3f} "
              f"(about {event.eta_s:.0f} s left)", file=sys.stderr)


def completed_box_ap(index: Index, image_ids: list[int]) -> dict[str, float]:
    """Box AP of the model-made boxes on ``image_ids`` against the sample's ground truth."""
    truth = json.loads((index.path / GROUND_TRUTH_FILE).read_text())
    wanted = set(image_ids)
    truth["images"] = [i for i in truth["images"] if i["id"] in wanted]
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in wanted]
    detections = [
        {"image_id": o.image_id, "category_id": o.category_id, "score": o.score,
         "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]]}
        for o in index.observations(images=image_ids, source="model", kind="roi")
    ]
    if not detections:
        return {"box_AP": 0.0, "box_AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"box_AP": round(float(evaluation.stats[0]), 4),
            "box_AP50": round(float(evaluation.stats[1]), 4)}


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with build_demo_index(args.out, n_images=args.images, labelled=args.labelled) as index:
        facts = summary(index)
        print_summary(facts)
        labelled = index.images(ids={o.image_id for o in index.observations()})
        rest = [i for i in index.images() if i not in labelled]
        # The sample cannot download COCO weights offline: start from random weights and let
        # Learn adapt the whole network ("Full model"); with pretrained weights "Heads only" is
        # the better first step.
        handle = create_model(index, weights="none")
        print(f"model {handle.name!r} v{handle.active_version}: {handle.config.backbone}, "
              f"input {handle.config.min_size} px", file=sys.stderr)
        print(f"Learn on {len(labelled)} labelled images ({args.epochs} epochs, Full model)",
              file=sys.stderr)
        learned = learn(index, images=labelled, settings=LearnSettings(
            epochs=args.epochs, mode="full"), progress=_progress)
        completed: dict[str, Any] = {}
        settings = CompleteSettings(min_score=args.min_score, max_detections=3)
        for category in index.categories():
            result = complete(index, rest, category.name, settings=settings)
            completed[category.name] = result.written
            print(f"Complete {category.name}: {result.written} boxes on {result.images} images "
                  f"in {result.seconds:.1f} s", file=sys.stderr)
        scores = completed_box_ap(index, [i.id for i in rest])
        print(f"Completed boxes against the ground truth: AP {scores['box_AP']:.3f}, "
              f"AP50 {scores['box_AP50']:.3f}", file=sys.stderr)
        emit_json({
            "index": str(index.path), "labelled": len(labelled), "completed_images": len(rest),
            "learn": {"version": learned.version, "seconds": round(learned.seconds, 1),
                      "losses": [round(v, 4) for v in learned.losses]},
            "written": completed, **scores,
            "seconds": round(time.perf_counter() - started, 1),
        })
    return EXIT_OK
