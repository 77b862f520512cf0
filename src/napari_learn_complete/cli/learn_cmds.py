"""``learn`` and ``train``: fine-tune the active model on a scope, or train it on everything.

Both print progress on stderr, then the run's notes there (``note: ...``, e.g. a test share that
held out nothing) and, last on stdout, a one-line JSON summary (``run_id``, ``version``,
``seconds``, ``losses``, ``metrics``, ``images``, ``notes``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..engine.progress import ProgressFn
from ..engine.settings import MODES, LearnSettings
from ..engine.train import TrainResult, learn, train
from ..errors import LearnCompleteError, storage_error
from ..index import KINDS, Index
from . import EXIT_FAILURE, EXIT_OK, ProgressBar, command, emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = LearnSettings()
    lrn = command(subparsers, "learn", run_learn,
                  "fine-tune the active model on selected images or on a category")
    scope = lrn.add_mutually_exclusive_group(required=True)
    scope.add_argument("--images", nargs="+", metavar="NAME",
                       help="image names as stored in the index (shell patterns allowed)")
    scope.add_argument("--category", metavar="NAME",
                       help="every image with an observation of this category")
    lrn.add_argument("--kind", choices=KINDS, default="roi",
                     help="learn boxes (roi) or keypoints (default roi)")
    lrn.add_argument("--epochs", type=int, default=defaults.epochs,
                     help=f"passes over the scope (default {defaults.epochs})")
    lrn.add_argument("--mode", choices=MODES, default=defaults.mode,
                     help="heads: backbone frozen; full: the whole model trains "
                          f"(default {defaults.mode})")
    lrn.add_argument("--test-percent", type=float, default=defaults.test_percent,
                     help="share of the scope held back and evaluated after training "
                          f"(default {defaults.test_percent:g})")
    lrn.add_argument("--mix-in", type=int, default=defaults.mix_in, metavar="N",
                     help="also train on N earlier labelled images from outside the scope")
    lrn.add_argument("--seed", type=int, default=defaults.seed,
                     help="seed of the test split, mix-in and augmentations "
                          f"(default {defaults.seed})")
    lrn.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best present)")

    trn = command(subparsers, "train", run_train,
                  "full training run on every labelled image with the model's own settings")
    trn.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best present)")


def _summary(result: TrainResult) -> dict:
    return {"run_id": result.run_id, "version": result.version,
            "seconds": round(result.seconds, 3), "losses": result.losses,
            "metrics": result.metrics, "images": result.images, "notes": result.notes}


def _finish(args: argparse.Namespace, work: Callable[[Index, ProgressFn], TrainResult]) -> int:
    """Run ``work`` with a progress bar; refusals and a full disk go up to the CLI (exit 2), a
    failure of training itself (diverged, out of memory) is reported here with exit 1."""
    with Index(args.index) as index:
        try:
            with ProgressBar() as progress:
                result = work(index, progress)
        except Exception as exc:
            if isinstance(exc, LearnCompleteError) or storage_error(exc) is not None:
                raise
            print(f"napari-learn-complete {args.command} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILURE
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    emit_json(_summary(result))
    return EXIT_OK


def run_learn(args: argparse.Namespace) -> int:
    settings = LearnSettings(epochs=args.epochs, mode=args.mode, test_percent=args.test_percent,
                             mix_in=args.mix_in, seed=args.seed)

    def work(index: Index, progress: ProgressFn) -> TrainResult:
        images = index.match_images(args.images) if args.images else None
        return learn(index, images=images, category=args.category, kind=args.kind,
                     settings=settings, progress=progress, device=args.device)

    return _finish(args, work)


def run_train(args: argparse.Namespace) -> int:
    return _finish(args, lambda index, progress: train(index, progress=progress,
                                                       device=args.device))
