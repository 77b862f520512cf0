"""Training data: index images and observations as torchvision detection samples.

Targets follow torchvision's detection models: ``boxes`` (N, 4) pixel corners, ``labels`` (N,)
class ids (``config.categories[i]`` is class ``i + 1``) and, for keypoint models, ``keypoints``
(N, K, 3) over the model's keypoint list; a category's missing keypoints are invisible (v = 0).
Augmentations use transforms v2 with ``tv_tensors``; the flips are our own so that mirrored
keypoint names (left/right) swap places and points stay in the boxes' pixel-corner coordinates.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import BadInputError
from ..index import Category, ImageRecord, Index, Observation, keypoint_extent
from ..index.media import full_size, to_rgb_uint8
from ..model.config import Augment, ModelConfig
from .scope import trainable

# Name patterns of mirror pairs: (left, right) swap under a horizontal flip, (top, bottom) under a
# vertical one. Prefixes and suffixes with "_" catch COCO-style short names (l_eye, wrist_r).
HFLIP_PATTERNS = (("left", "right"), ("l_", "r_"), ("_l", "_r"))
VFLIP_PATTERNS = (("top", "bottom"), ("upper", "lower"), ("t_", "b_"), ("_t", "_b"))
# A box made from keypoints alone is padded by this share of its extent, and at least MIN_PAD px.
KEYPOINT_BOX_PAD, MIN_PAD = 0.1, 4.0
MIN_BOX_SIDE = 1.0  # boxes thinner than this after augmentation are dropped
# Decoded training images kept in memory for the run (per process), up to this many bytes:
# decoding a JPEG or PNG costs as much as a small model's step on it, every epoch.
DECODED_CACHE_BYTES = 2 << 30


def mirror_permutation(names: Sequence[str], patterns: Sequence[tuple[str, str]]) -> list[int]:
    """For each keypoint, the index of its mirror partner (itself when it has none)."""
    lower = [n.lower() for n in names]
    where = {n: i for i, n in enumerate(lower)}
    perm = list(range(len(names)))
    for i, name in enumerate(lower):
        for a, b in patterns:
            for this, that in ((a, b), (b, a)):
                if this.endswith("_") and name.startswith(this):
                    partner = that + name[len(this):]
                elif this.startswith("_") and name.endswith(this):
                    partner = name[: -len(this)] + that
                elif "_" not in (this[0], this[-1]) and this in name:
                    partner = name.replace(this, that)
                else:
                    continue
                if partner in where and perm[i] == i:
                    perm[i] = where[partner]
    return perm


def keypoint_box(keypoints: Sequence[tuple[float, float, int]], width: int, height: int):
    """A box around the labelled keypoints, padded, inside the image: for keypoint-only
    observations, since the detector needs a box for every object."""
    x0, y0, x1, y1 = keypoint_extent(keypoints)
    pad_x = max(MIN_PAD, KEYPOINT_BOX_PAD * (x1 - x0))
    pad_y = max(MIN_PAD, KEYPOINT_BOX_PAD * (y1 - y0))
    return (max(0.0, x0 - pad_x), max(0.0, y0 - pad_y),
            min(float(width), x1 + pad_x), min(float(height), y1 + pad_y))


@dataclass(frozen=True)
class Targets:
    """Ground truth of one image as arrays, before any augmentation."""

    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64
    keypoints: np.ndarray | None  # (N, K, 3) float32, or None for box-only models


def class_ids(config: ModelConfig) -> dict[str, int]:
    return {name: i + 1 for i, name in enumerate(config.categories)}


def build_targets(
    image: ImageRecord,
    observations: Sequence[Observation],
    categories: dict[int, Category],
    config: ModelConfig,
) -> Targets:
    """Targets of one image from its observations (crowd regions left out)."""
    ids = class_ids(config)
    n_kp = len(config.keypoint_names)
    boxes, labels, kps = [], [], []
    for obs in observations:
        cat = categories[obs.category_id]
        if not trainable(obs, cat, "roi"):
            continue
        if cat.name not in ids:
            raise BadInputError(
                f"the model does not know category {cat.name!r} (observation {obs.id} on "
                f"{image.name}); load the model so its heads are extended first"
            )
        box = obs.box if obs.box is not None else keypoint_box(obs.keypoints, image.width,
                                                               image.height)
        row = np.zeros((n_kp, 3), np.float32)
        if n_kp and cat.keypoints_enabled and obs.keypoints is not None:
            for slot, kp in zip(config.keypoint_slots(cat), obs.keypoints, strict=True):
                row[slot] = kp if kp[2] > 0 else (0.0, 0.0, 0.0)
        boxes.append(box)
        labels.append(ids[cat.name])
        kps.append(row)
    return Targets(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        keypoints=np.asarray(kps, np.float32).reshape(-1, n_kp, 3) if n_kp else None,
    )


class RandomFlip:
    """Flip image, boxes and keypoints with probability 1/2, swapping mirrored keypoint names.

    Keypoints share the boxes' pixel-corner coordinates, so x becomes ``width - x`` (torchvision's
    KeyPoints kernel uses ``width - 1 - x``, one pixel off from the boxes).
    """

    def __init__(self, vertical: bool, permutation: Sequence[int]) -> None:
        self.vertical = vertical
        self.permutation = list(permutation)

    def __call__(self, image: tv_tensors.Image, target: dict) -> tuple[tv_tensors.Image, dict]:
        if torch.rand(1).item() >= 0.5:
            return image, target
        flip = F.vertical_flip if self.vertical else F.horizontal_flip
        target = dict(target, boxes=flip(target["boxes"]))
        if "keypoints" in target:
            points = target["keypoints"].as_subclass(torch.Tensor).clone()
            axis, extent = (1, image.shape[-2]) if self.vertical else (0, image.shape[-1])
            points[..., axis] = extent - points[..., axis]
            target["keypoints"] = tv_tensors.wrap(points[:, self.permutation],
                                                  like=target["keypoints"])
            target["visibility"] = target["visibility"][:, self.permutation]
        return flip(image), target


def _sanitize(image: tv_tensors.Image, target: dict) -> tuple[tv_tensors.Image, dict]:
    """Clamp boxes to the image, hide keypoints pushed off it, drop boxes that became slivers."""
    height, width = image.shape[-2:]
    boxes = F.clamp_bounding_boxes(target["boxes"])
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1])
                                                           >= MIN_BOX_SIDE)
    out = dict(target, boxes=boxes[keep], labels=target["labels"][keep])
    if "keypoints" in target:
        points = target["keypoints"].as_subclass(torch.Tensor)
        inside = ((points[..., 0] >= 0) & (points[..., 0] <= width)
                  & (points[..., 1] >= 0) & (points[..., 1] <= height))
        visible = torch.where(inside, target["visibility"], 0)
        out["keypoints"] = (points * (visible > 0)[..., None])[keep]  # hidden points at (0, 0)
        out["visibility"] = visible[keep]
    return image, out


def build_augmentation(augment: Augment, keypoint_names: Sequence[str]) -> Callable:
    """The training transform of a model configuration; every step can be switched off."""
    steps: list[Callable] = []
    if augment.hflip:
        steps.append(RandomFlip(False, mirror_permutation(keypoint_names, HFLIP_PATTERNS)))
    if augment.vflip:
        steps.append(RandomFlip(True, mirror_permutation(keypoint_names, VFLIP_PATTERNS)))
    if tuple(augment.scale_jitter) != (1.0, 1.0):
        # Zoom the content inside a fixed canvas: resizing the whole image would be undone by the
        # detector, which scales every input to its own min_size.
        steps.append(v2.RandomAffine(degrees=0.0, scale=tuple(augment.scale_jitter)))
    if augment.color_jitter > 0:
        c = augment.color_jitter  # no hue jitter: colour often tells categories apart
        steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))
    steps.append(_sanitize)
    return v2.Compose(steps)


class DetectionDataset(Dataset):
    """Images of the index with their targets; ``augment`` makes it a training set.

    Observations are read once, here; pixels are read through the index, which each
    DataLoader worker process reopens for itself (SQLite connections do not survive a fork), and
    kept decoded for the next epochs (up to :data:`DECODED_CACHE_BYTES`). A large image is read
    reduced, no smaller than the model will scale it to, and its targets scaled with it.
    """

    def __init__(
        self,
        index: Index,
        images: Sequence[ImageRecord],
        config: ModelConfig,
        *,
        augment: Augment | None = None,
    ) -> None:
        self.images = list(images)
        categories = {c.id: c for c in index.categories()}
        by_image: dict[int, list[Observation]] = {image.id: [] for image in self.images}
        for obs in index.observations(images=self.images):
            by_image[obs.image_id].append(obs)
        self.targets = [build_targets(image, by_image[image.id], categories, config)
                        for image in self.images]
        self.has_keypoints = bool(config.keypoint_names)
        self.fit = (config.min_size, config.max_size)
        self.transform = (build_augmentation(augment, config.keypoint_names)
                          if augment is not None else None)
        self._index, self._path, self._pid = index, index.path, os.getpid()
        self._decoded: dict[int, np.ndarray] = {}
        self._decoded_bytes = 0

    def unaugmented(self) -> DetectionDataset:
        """The same images and targets without augmentation, sharing the pixels decoded so far:
        to judge a model on what it trained on."""
        plain = copy.copy(self)
        plain.transform = None
        return plain

    def __len__(self) -> int:
        return len(self.images)

    def _pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as RGB uint8 (read-only: augmentations work on a copy)."""
        if i in self._decoded:
            return self._decoded[i]
        if self._pid != os.getpid():  # a DataLoader worker: its own connection and cache
            self._index, self._pid = Index(self._path), os.getpid()
            self._decoded, self._decoded_bytes = {}, 0
        pixels = to_rgb_uint8(self._index.read_image(self.images[i], fit=self.fit))
        if self._decoded_bytes + pixels.nbytes <= DECODED_CACHE_BYTES:
            self._decoded[i] = pixels
            self._decoded_bytes += pixels.nbytes
        return pixels

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record, targets = self.images[i], self.targets[i]
        pixels = self._pixels(i)
        image = tv_tensors.Image(torch.tensor(pixels).permute(2, 0, 1))  # copy: read-only array
        canvas = tuple(image.shape[-2:])
        width, height = full_size(pixels)
        scale = torch.tensor([canvas[1] / width, canvas[0] / height])  # 1 unless read reduced
        target: dict = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(targets.boxes) * scale.repeat(2),
                                              format="XYXY", canvas_size=canvas),
            "labels": torch.from_numpy(targets.labels),
        }
        if targets.keypoints is not None:
            kps = torch.from_numpy(targets.keypoints)
            target["keypoints"] = tv_tensors.KeyPoints(kps[..., :2] * scale, canvas_size=canvas)
            target["visibility"] = kps[..., 2]
        if self.transform is not None:
            image, target = self.transform(image, target)
        out = {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"],
            "image_id": torch.tensor(record.id),
        }
        if "keypoints" in target:
            points = target["keypoints"].as_subclass(torch.Tensor).float()
            out["keypoints"] = torch.cat([points, target["visibility"][..., None].float()], -1)
        return F.to_dtype(image, torch.float32, scale=True).as_subclass(torch.Tensor), out


def collate_lists(batch: Sequence[tuple]) -> tuple[list, ...]:
    """Detection batches are lists: images differ in size and so do the target counts."""
    return tuple(list(items) for items in zip(*batch, strict=True))


def make_loader(
    dataset: DetectionDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over ``dataset``; ``seed`` fixes the shuffling order."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        collate_fn=collate_lists, generator=generator,
    )
