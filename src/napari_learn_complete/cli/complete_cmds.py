"""``complete | propose | accept | undo``: the model annotates images, from the command line.

Each prints progress on stderr and, last on stdout, a one-line JSON summary
(``images``, ``written``, ``removed``, ``seconds``, ``run_id`` for the writing commands;
``proposals``, ``images``, ``out`` and ``skipped``, image name -> reason, for propose).
``complete`` and ``propose`` take ``--engine ray`` to run the model on Ray workers (a local Ray,
or the cluster at ``--address``/``RAY_ADDRESS``); this process still writes the results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.complete import Source, complete
from ..engine.proposals import accept, load_proposals, propose, save_proposals
from ..engine.results import CompleteResult
from ..engine.settings import CompleteSettings
from ..errors import BadInputError
from ..index import KINDS, Index
from . import EXIT_OK, ProgressBar, command, emit_json

ENGINES = ("local", "ray")


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = CompleteSettings()
    run = command(subparsers, "complete", run_complete,
                  "run the active model over images and save boxes or keypoints")
    run.add_argument("--images", nargs="+", required=True, metavar="NAME",
                     help="image names (shell patterns such as 'frame_*' allowed)")
    _target(run, defaults)
    run.add_argument("--remove-existing", action="store_true", default=defaults.remove_existing,
                     help="clear that kind of the category on the images first")
    run.add_argument("--batch-size", type=int, default=defaults.batch_size,
                     help="images per device batch and per saved transaction")

    prop = command(subparsers, "propose", run_propose,
                   "find a category on images that do not have it yet (nothing is saved)")
    _target(prop, defaults)
    prop.add_argument("--out", type=Path, required=True, metavar="PROPOSALS_JSON",
                      help="where to write the proposals")

    acc = command(subparsers, "accept", run_accept, "save proposals from a proposals file")
    acc.add_argument("proposals", type=Path, metavar="PROPOSALS_JSON")
    which = acc.add_mutually_exclusive_group()
    which.add_argument("--min-score", type=float, default=None,
                       help="accept all proposals scoring at least this")
    which.add_argument("--ids", type=int, nargs="+", metavar="ID",
                       help="accept only these proposal ids")

    back = command(subparsers, "undo", run_undo, "undo a complete or accept run")
    back.add_argument("run_id", type=int, metavar="RUN_ID")


def _target(parser: argparse.ArgumentParser, defaults: CompleteSettings) -> None:
    """What complete and propose share: the category, the kind and the limits on results."""
    parser.add_argument("--category", required=True, metavar="NAME", help="target category")
    parser.add_argument("--kind", choices=KINDS, default="roi",
                        help="roi writes boxes, keypoints writes keypoints (default roi)")
    parser.add_argument("--min-score", type=float, default=defaults.min_score,
                        help="minimum confidence of a detection to be kept "
                             f"(default {defaults.min_score:g})")
    parser.add_argument("--max-detections", type=int, default=defaults.max_detections,
                        help=f"maximum results per image (default {defaults.max_detections})")
    engine = parser.add_argument_group("engine", "where the model runs (results are written "
                                       "here either way)")
    engine.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: this process; ray: a pool of Ray workers, each holding "
                             'the model (needs pip install "napari-learn-complete[ray]")')
    engine.add_argument("--address", default=None, metavar="ADDR",
                        help="the Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    engine.add_argument("--workers", type=int, default=2, metavar="N",
                        help="Ray workers, each holding the model (default 2)")
    engine.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                        help="GPUs each Ray worker takes (default: 1 when the cluster has GPUs, "
                             "else CPU workers; 0: CPU workers)")


def _source(index: Index, args: argparse.Namespace) -> Source | None:
    """The Ray workers when ``--engine ray`` (the model is pinned now), else None: here."""
    if args.engine == "local":
        return None
    from ..engine.ray_runner import RayEngine, RaySource

    return RaySource(index, RayEngine(address=args.address, workers=args.workers,
                                      gpus_per_worker=args.gpus_per_worker))


def _summary(result: CompleteResult) -> dict:
    return {"images": result.images, "written": result.written, "removed": result.removed,
            "seconds": round(result.seconds, 3), "run_id": result.run_id}


def run_complete(args: argparse.Namespace) -> int:
    settings = CompleteSettings(min_score=args.min_score, max_detections=args.max_detections,
                                remove_existing=args.remove_existing, batch_size=args.batch_size)
    with Index(args.index) as index, ProgressBar() as progress:
        images = index.match_images(args.images)
        result = complete(index, images, args.category, kind=args.kind, settings=settings,
                          progress=progress, source=_source(index, args))
    emit_json(_summary(result))
    return EXIT_OK


def run_propose(args: argparse.Namespace) -> int:
    settings = CompleteSettings(min_score=args.min_score, max_detections=args.max_detections)
    with Index(args.index) as index, ProgressBar() as progress:
        proposals = propose(index, args.category, kind=args.kind, settings=settings,
                            progress=progress, source=_source(index, args))
        save_proposals(args.out, proposals, index=index, category=args.category, kind=args.kind)
    for name, reason in proposals.skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    print(f"{len(proposals)} proposal(s) written to {args.out}", file=sys.stderr)
    emit_json({"proposals": len(proposals), "images": len({p.image_id for p in proposals}),
               "out": str(args.out), "skipped": proposals.skipped})
    return EXIT_OK


def run_accept(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        proposals = load_proposals(args.proposals, index=index)
        if args.ids:
            known = {p.id for p in proposals}
            unknown = sorted(set(args.ids) - known)
            if unknown:
                raise BadInputError(
                    f"{args.proposals}: no proposal with id {', '.join(map(str, unknown))}"
                )
            proposals = [p for p in proposals if p.id in set(args.ids)]
        result = accept(index, proposals, min_score=args.min_score)
    emit_json(_summary(result))
    return EXIT_OK


def run_undo(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        restored = index.runs.undo(args.run_id)
    emit_json({"run_id": args.run_id, "restored": restored})
    return EXIT_OK
