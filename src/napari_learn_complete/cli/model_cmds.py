"""``model create | versions | rollback | activate``: the index's models and weight versions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.jobs import create_model
from ..index import Index
from ..model import active_model, set_active_model
from ..model.config import BACKBONES, MODEL_CHOICES, PURPOSES
from . import EXIT_OK, ProgressBar, command, emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model", help="create the active model, list or roll back its versions"
    )
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    create = command(sub, "create", run_create,
                     "make the active model for the index's categories")
    create.add_argument(
        "--choice", choices=MODEL_CHOICES, default="fast",
        help="; ".join(f"{c.name}: {c.describe()}" for c in MODEL_CHOICES.values()))
    create.add_argument("--keypoints", action="store_true", default=None,
                        help="predict keypoints too (Keypoint R-CNN on the choice's backbone)")
    create.add_argument("--backbone", choices=BACKBONES, default=None,
                        help="another backbone than the choice's")
    create.add_argument("--weights", default="coco", metavar="coco|imagenet|none|PATH",
                        help="initial weights: torchvision's COCO detector (default; downloaded "
                             "once into torch's cache), its ImageNet backbone only, random, or "
                             "a weight file of ours")
    create.add_argument("--purpose", choices=PURPOSES, default="locate")
    create.add_argument("--input-size", type=int, default=None, metavar="N",
                        help="short side in pixels the images are scaled to "
                             "(default: chosen from the index's images)")
    create.add_argument("--name", default="default", help="model name (a folder under models/)")
    create.add_argument("--seed", type=int, default=0,
                        help="seed of what the weights leave random (all of it for none; new "
                             "categories' rows otherwise): the same seed, the same model")

    command(sub, "versions", run_versions, "list the active model's weight versions")

    rollback = command(sub, "rollback", run_rollback,
                       "make an earlier weight version active again")
    rollback.add_argument("version", type=int, help="version number (see `model versions`)")

    activate = command(sub, "activate", run_activate,
                       "make another model of the index the active one")
    activate.add_argument("name", help="model name (see `model create --name`)")


def run_create(args: argparse.Namespace) -> int:
    weights = args.weights if args.weights in ("coco", "imagenet", "none") else Path(args.weights)
    with Index(args.index) as index, ProgressBar() as progress:
        create_model(
            index, choice=args.choice, keypoints=args.keypoints, backbone=args.backbone,
            weights=weights, name=args.name, purpose=args.purpose, min_size=args.input_size,
            seed=args.seed, progress=progress,
        )
        handle = active_model(index)
    config = handle.config
    print(f"created model {handle.name!r}: {config.architecture} on {config.backbone}, "
          f"input {config.min_size}-{config.max_size} px, {len(config.categories)} categories",
          file=sys.stderr)
    emit_json({"model": handle.name, "version": handle.active_version,
               "architecture": config.architecture, "backbone": config.backbone,
               "min_size": config.min_size, "max_size": config.max_size,
               "categories": config.categories, "keypoint_names": config.keypoint_names})
    return EXIT_OK


def run_versions(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        handle = active_model(index)
        versions = handle.versions()
    print(f"model {handle.name!r} ({handle.config.architecture} on {handle.config.backbone})")
    print(f"{'':2}{'version':>7}  {'parent':>6}  {'created':<23}  note")
    for v in versions:
        parent = "-" if v.parent is None else str(v.parent)
        mark = "*" if v.active else ""
        print(f"{mark:2}{v.number:>7}  {parent:>6}  {v.created_at:<23}  {v.note}")
    emit_json({"model": handle.name, "active_version": handle.active_version,
               "versions": [{"number": v.number, "parent": v.parent, "note": v.note,
                             "created_at": v.created_at, "active": v.active} for v in versions]})
    return EXIT_OK


def run_rollback(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        handle = active_model(index)
        previous = handle.active_version
        handle.rollback(args.version)
    print(f"model {handle.name!r}: active version {previous} -> {args.version}", file=sys.stderr)
    emit_json({"model": handle.name, "active_version": handle.active_version,
               "previous_version": previous})
    return EXIT_OK


def run_activate(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        handle = set_active_model(index, args.name)
    print(f"model {handle.name!r} is now active (version {handle.active_version})",
          file=sys.stderr)
    emit_json({"model": handle.name, "active_version": handle.active_version})
    return EXIT_OK
