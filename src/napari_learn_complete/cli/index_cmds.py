"""``create``, ``import-coco``, ``export-coco``, ``info``: make and inspect indexes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..index import Index
from ..index.coco import export_coco, import_coco
from . import EXIT_OK, command, emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    command(subparsers, "create", run_create,
            "create an empty index folder", index_help="index folder to create")

    imp = command(subparsers, "import-coco", run_import,
                  "add the images, categories and annotations of a COCO file")
    imp.add_argument("coco_json", type=Path, help="COCO JSON file (instances or keypoints)")
    imp.add_argument("--images", type=Path, required=True, metavar="DIR",
                     help="folder the file_name entries are relative to")
    imp.add_argument("--copy", action="store_true",
                     help="copy the image files into the index's images/ folder")
    imp.add_argument("--allow-duplicates", action="store_true",
                     help="add annotations the index already holds (same image, category, box "
                          "and keypoints) again, as a deliberate merge; by default they are "
                          "skipped, so importing a file twice adds nothing")

    exp = command(subparsers, "export-coco", run_export, "write the index as a COCO JSON file")
    exp.add_argument("out_json", type=Path, help="COCO JSON file to write")

    command(subparsers, "info", run_info,
            "counts per category: images, boxes and keypoint observations")


def summary(index: Index) -> dict[str, Any]:
    """What an index holds, as printed by ``info`` and ``demo``."""
    counts = index.counts()
    return {
        "index": str(index.path),
        "read_only": index.read_only,
        # folders outside the index whose images it reads: the only places it reads from
        "image_roots": [str(root) for root in index.image_roots()],
        "images": len(index.images()),
        "observations": index.count_observations(),
        "categories": {
            cat.name: {**counts[cat.name], "keypoint_names": list(cat.keypoint_names)}
            for cat in index.categories()
        },
    }


def print_summary(facts: dict[str, Any]) -> None:
    """A small table on stdout, then the JSON line scripts read."""
    print(f"{facts['index']}: {facts['images']} images"
          f"{' (read-only folder)' if facts['read_only'] else ''}")
    print(f"  image roots: {', '.join(facts['image_roots']) or 'none (all images inside)'}")
    print(f"  {'category':<20} {'images':>7} {'boxes':>7} {'keypoints':>9}")
    for name, c in facts["categories"].items():
        print(f"  {name:<20} {c['images']:>7} {c['boxes']:>7} {c['keypoints']:>9}")
    emit_json(facts)


def run_create(args: argparse.Namespace) -> int:
    with Index.create(args.index) as index:
        emit_json({"index": str(index.path), "created": True})
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        report = import_coco(index, args.coco_json, args.images, copy=args.copy,
                             allow_duplicates=args.allow_duplicates)
    print(f"imported {report.observations} new annotations ({report.already_present} already "
          f"in the index, skipped) on {report.images_added} new and {report.images_reused} known "
          "images", file=sys.stderr)
    emit_json({"index": str(index.path), "images_added": report.images_added,
               "images_reused": report.images_reused,
               "categories_added": list(report.categories_added),
               "categories_merged": list(report.categories_merged),
               "observations": report.observations,
               "already_present": report.already_present})
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        data = export_coco(index, args.out_json)
    emit_json({"out": str(args.out_json), "images": len(data["images"]),
               "categories": len(data["categories"]), "annotations": len(data["annotations"])})
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    with Index(args.index) as index:
        print_summary(summary(index))
    return EXIT_OK
