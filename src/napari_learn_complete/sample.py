"""A deterministic synthetic dataset: discs, squares and triangles on textured backgrounds.

It gives tests, the demo and napari's sample-data menu a small index whose ground truth is known,
so Learn and Complete can be checked end to end without downloading anything. The shapes differ in
outline and in colour family, so a tiny detector tells them apart after a few epochs; the
backgrounds (gradients, noise, low-contrast clutter) keep the task from being trivial.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .index import Index

# (name, keypoint names, skeleton). The triangle's "left" and "right" are a mirror pair: under a
# horizontal flip the left base corner becomes the right one.
CATEGORIES: tuple[tuple[str, tuple[str, ...], tuple[tuple[int, int], ...]], ...] = (
    ("disc", (), ()),
    ("square", (), ()),
    ("triangle", ("apex", "left", "right"), ((0, 1), (1, 2), (2, 0))),
)
GROUND_TRUTH_FILE = "ground_truth.json"

# Base colour (RGB) per category; each object jitters it a little.
_COLOURS = {"disc": (225, 70, 60), "square": (60, 110, 230), "triangle": (240, 215, 60)}
_OBJECT_SIZE = (16, 48)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SampleObject:
    """One ground-truth object: pixel-corner box (x0, y0, x1, y1) and keypoints (x, y, v)."""

    category: str
    box: Box
    keypoints: tuple[tuple[float, float, int], ...] | None = None


@dataclass(frozen=True)
class SampleImage:
    """One synthetic image (H, W, 3) uint8 with its ground truth."""

    name: str
    array: np.ndarray
    objects: tuple[SampleObject, ...]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A gradient plus noise plus clutter (lines and specks) at lower contrast than the shapes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) * rng.uniform(20, 60)
    base = rng.uniform(50, 110, size=3).astype(np.float32)
    image = base + ramp[..., None] + rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    for _ in range(int(rng.integers(4, 10))):  # thin lines
        x0, x1 = rng.uniform(0, width, 2)
        y0, y1 = rng.uniform(0, height, 2)
        t = np.linspace(0, 1, int(max(width, height) * 1.5))
        xs = np.clip((x0 + (x1 - x0) * t).astype(int), 0, width - 1)
        ys = np.clip((y0 + (y1 - y0) * t).astype(int), 0, height - 1)
        image[ys, xs] += rng.uniform(-40, 40, size=3)
    for _ in range(int(rng.integers(5, 15))):  # specks, smaller than any object
        r = rng.uniform(1.5, 4)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        mask = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
        image[mask] += rng.uniform(-50, 50, size=3)
    return image


def _place(
    rng: np.random.Generator, width: int, height: int, size: int, taken: list[Box]
) -> Box | None:
    """A free square slot for an object of ``size`` px, apart from the others by 4 px."""
    for _ in range(50):
        x0 = float(rng.integers(2, width - size - 2))
        y0 = float(rng.integers(2, height - size - 2))
        box = (x0, y0, x0 + size, y0 + size)
        if all(box[2] + 4 <= t[0] or t[2] + 4 <= box[0] or box[3] + 4 <= t[1]
               or t[3] + 4 <= box[1] for t in taken):
            return box
    return None


def _draw(
    rng: np.random.Generator, image: np.ndarray, category: str, slot: Box
) -> SampleObject:
    """Paint one shape into ``image`` inside ``slot``; return its exact ground truth."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    px, py = xx + 0.5, yy + 0.5  # pixel centres, in the pixel-corner coordinates of boxes
    x0, y0, x1, y1 = slot  # every shape fills its square slot: the slot is its box
    size = x1 - x0
    keypoints = None
    if category == "disc":
        r = size / 2
        cx, cy = x0 + r, y0 + r
        mask = (px - cx) ** 2 + (py - cy) ** 2 <= r * r
    elif category == "square":
        mask = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
    else:
        apex = (x0 + size * rng.uniform(0.3, 0.7), y0)
        left, right = (x0, y1), (x1, y1)
        mask = np.ones_like(px, dtype=bool)
        for (ax, ay), (bx, by) in ((apex, right), (right, left), (left, apex)):
            # inside = on the same side of every edge (vertices listed clockwise on screen)
            mask &= (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0
        keypoints = tuple((float(x), float(y), 2) for x, y in (apex, left, right))
    colour = np.array(_COLOURS[category], np.float32) + rng.uniform(-20, 20, size=3)
    image[mask] = colour + rng.normal(0, 6, size=(int(mask.sum()), 3))
    return SampleObject(category, slot, keypoints)


def generate(
    n_images: int = 24, seed: int = 0, size_range: tuple[int, int] = (96, 160)
) -> list[SampleImage]:
    """Make ``n_images`` synthetic images (same seed, same pixels) with 1-3 objects each."""
    lo, hi = size_range
    if lo < _OBJECT_SIZE[1] + 8 or hi < lo:
        raise ValueError(f"size_range {size_range} must be ordered and at least 56 px")
    rng = np.random.default_rng(seed)
    names = [c[0] for c in CATEGORIES]
    samples = []
    for i in range(n_images):
        height, width = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        image = _background(rng, height, width)
        objects: list[SampleObject] = []
        taken: list[Box] = []
        for _ in range(int(rng.integers(1, 4))):
            size = int(rng.integers(_OBJECT_SIZE[0], _OBJECT_SIZE[1] + 1))
            slot = _place(rng, width, height, size, taken)
            if slot is None:
                continue
            taken.append(slot)
            objects.append(_draw(rng, image, names[int(rng.integers(len(names)))], slot))
        array = np.clip(image, 0, 255).astype(np.uint8)
        samples.append(SampleImage(f"sample_{i:03d}.png", array, tuple(objects)))
    return samples


def ground_truth_coco(index: Index, samples: list[SampleImage]) -> dict:
    """COCO dict of the full ground truth, with the index's image and category ids."""
    cats = {c.name: c for c in index.categories()}
    images, annotations = [], []
    for sample in samples:
        record = index.image(sample.name)
        images.append({"id": record.id, "file_name": record.name,
                       "width": record.width, "height": record.height})
        for obj in sample.objects:
            x0, y0, x1, y1 = obj.box
            ann = {"id": len(annotations) + 1, "image_id": record.id,
                   "category_id": cats[obj.category].id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            if obj.keypoints is not None:
                ann["keypoints"] = [v for kp in obj.keypoints for v in kp]
                ann["num_keypoints"] = sum(1 for kp in obj.keypoints if kp[2] > 0)
            annotations.append(ann)
    categories = [
        {"id": c.id, "name": c.name, "supercategory": "shape",
         "keypoints": list(c.keypoint_names),
         "skeleton": [[a + 1, b + 1] for a, b in c.skeleton]}
        for c in cats.values()
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_sample_index(
    path: str | os.PathLike,
    *,
    n_images: int = 24,
    labelled: int = 8,
    seed: int = 0,
    size_range: tuple[int, int] = (96, 160),
) -> Index:
    """Create an index at ``path`` with synthetic images; the first ``labelled`` carry their
    ground truth as human observations, and ``ground_truth.json`` (COCO) holds all of it."""
    return sample_index(path, generate(n_images, seed=seed, size_range=size_range),
                        labelled=labelled)


def sample_index(
    path: str | os.PathLike, samples: list[SampleImage], *, labelled: int,
    ground_truth_file: bool = True,
) -> Index:
    """Create an index at ``path`` holding ``samples``, the first ``labelled`` with their ground
    truth as human observations; ``ground_truth.json`` holds all of it unless
    ``ground_truth_file`` is False (benchmarks that keep the truth away from the index)."""
    index = Index.create(path)
    paths = []
    for sample in samples:
        target = index.images_dir / sample.name
        Image.fromarray(sample.array).save(target)
        paths.append(target)
    index.add_images(paths)
    for name, keypoints, skeleton in CATEGORIES:
        index.add_category(name, keypoints=keypoints or None, skeleton=skeleton)
    index.add_observations([
        {"image": sample.name, "category": obj.category, "box": obj.box,
         "keypoints": obj.keypoints, "source": "human"}
        for sample in samples[:labelled] for obj in sample.objects
    ])
    if ground_truth_file:
        Path(index.path / GROUND_TRUTH_FILE).write_text(
            json.dumps(ground_truth_coco(index, samples), indent=1)
        )
    return index
