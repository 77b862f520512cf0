"""The loops benchmarks/run.py measures the product against, written as a user would write them.

Learn's baseline is torchvision's object-detection fine-tuning tutorial (TorchVision Object
Detection Finetuning Tutorial): a Dataset that reads each image with PIL and converts it to a
tensor, a DataLoader with batch 2 and the tutorial's collate, SGD (lr 0.005, momentum 0.9, weight
decay 0.0005) with its StepLR (every 3 epochs x0.1), and the plain loop ``loss =
sum(model(images, targets).values())``, backward, step; heads-only freezes the backbone with
``requires_grad`` as the tutorial does. Complete's baseline is the per-image loop: PIL read, to
tensor, ``model([image])`` under ``torch.no_grad()``. Both run the model as torchvision builds
it: :func:`as_torchvision` puts torchvision's own RoIAlign pooler, region proposal network and
RoI heads back in place of the product's (same outputs: torchvision's kernel, proposals filtered
one image after another, the keypoint head trained on every positive region).

Nothing here is tuned: the point is the code a newcomer writes, not a slow straw man.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign
from torchvision.transforms.v2 import functional as F

Target = dict[str, torch.Tensor]


def read_tensor(path: str | os.PathLike) -> torch.Tensor:
    """The tutorial's image transform: PIL image to a float tensor in [0, 1]."""
    with Image.open(path) as image:
        pixels = F.pil_to_tensor(image.convert("RGB"))
    return F.to_dtype(pixels, torch.float32, scale=True)


class TutorialDataset(Dataset):
    """Images on disk with their boxes and labels, read per item like the tutorial's dataset."""

    def __init__(self, paths: Sequence[os.PathLike], targets: Sequence[Target]) -> None:
        self.paths, self.targets = list(paths), list(targets)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        return read_tensor(self.paths[i]), self.targets[i]


def collate_fn(batch: Sequence[tuple]) -> tuple:
    """The tutorial's ``utils.collate_fn``."""
    return tuple(zip(*batch, strict=True))


def as_torchvision(model: nn.Module) -> nn.Module:
    """``model`` with torchvision's ``MultiScaleRoIAlign`` poolers, region proposal network and
    RoI heads, as a user's own code has them (the product's versions hold no state of their own:
    the weights and settings stay)."""
    model.rpn.__class__ = RegionProposalNetwork
    model.roi_heads.__class__ = RoIHeads
    heads = model.roi_heads
    for name in ("box_roi_pool", "keypoint_roi_pool"):
        pool = getattr(heads, name, None)
        if pool is not None:
            setattr(heads, name, MultiScaleRoIAlign(
                pool.featmap_names, pool.output_size, pool.sampling_ratio,
                canonical_scale=pool.canonical_scale, canonical_level=pool.canonical_level))
    return model


def tutorial_learn(
    model: nn.Module, dataset: TutorialDataset, *, epochs: int, heads_only: bool, seed: int,
    device: torch.device,
) -> nn.Module:
    """Fine-tune ``model`` in place the tutorial's way and return it."""
    torch.manual_seed(seed)
    if heads_only:
        for param in model.backbone.parameters():
            param.requires_grad = False
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=0,
                        collate_fn=collate_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    model.to(device).train()
    for _ in range(epochs):
        for images, targets in loader:
            images = [image.to(device) for image in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lr_scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return model


def per_image_predict(
    model: nn.Module, paths: Sequence[os.PathLike], device: torch.device
) -> list[Target]:
    """Raw detections of every image, one image at a time, on the CPU."""
    model.to(device).eval()
    found = []
    with torch.no_grad():
        for path in paths:
            output = model([read_tensor(path).to(device)])[0]
            found.append({k: v.cpu() for k, v in output.items()})
    return found
