"""A frozen backbone that computes the features of each distinct input once per Learn.

With "Heads only" the backbone and its FPN do not change during the run, so the features of an
image in a given view (flipped or not) are the same at every epoch. :class:`CachedBackbone` stands
in for the detector's backbone for the run: it keys each image of a batch by the exact bytes the
backbone receives (after the detector's resize, normalisation and padding), computes only the
images it has not seen, and serves the others from memory. Keying by content keeps it exact: an
image in a new view, with other padding or another augmentation is simply computed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import nn

from ..model.build import folded

# Features kept per run, in bytes; beyond it new views are computed every time.
FEATURE_CACHE_BYTES = 1 << 30


def _fingerprint(sample: torch.Tensor) -> tuple:
    data = sample.detach().to("cpu").contiguous()
    return tuple(data.shape), hashlib.blake2b(data.numpy(), digest_size=16).digest()


class CachedBackbone(nn.Module):
    """Wraps a frozen backbone (BatchNorm in eval mode, no gradients) for one run; ``inner`` is
    the real one, put back with :meth:`unwrap` before the weights are saved."""

    def __init__(self, backbone: nn.Module, max_bytes: int = FEATURE_CACHE_BYTES) -> None:
        super().__init__()
        self.inner = backbone
        # what computes the features: frozen, its BatchNorms are fixed and fold into the
        # convolutions, as in Complete (the same features within float rounding)
        self.folded = folded(backbone)
        self.out_channels = backbone.out_channels
        self.max_bytes = max_bytes
        self.computed = 0  # images the backbone ran on (the others came from the cache)
        self._features: dict[tuple, OrderedDict[str, torch.Tensor]] = {}
        self._bytes = 0

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        keys = [_fingerprint(sample) for sample in x]
        missing = [i for i, key in enumerate(keys) if key not in self._features]
        fresh: dict[int, OrderedDict[str, torch.Tensor]] = {}
        if missing:
            with torch.no_grad():
                out = self.folded(x[missing])
            self.computed += len(missing)
            for row, i in enumerate(missing):
                fresh[i] = OrderedDict((name, level[row].clone()) for name, level in out.items())
                self._keep(keys[i], fresh[i])
        images = [fresh[i] if i in fresh else self._features[key] for i, key in enumerate(keys)]
        return OrderedDict((name, torch.stack([image[name] for image in images]))
                           for name in images[0])

    def _keep(self, key: tuple, features: OrderedDict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in features.values())
        if self._bytes + size <= self.max_bytes:
            self._features[key] = features
            self._bytes += size


def cache_backbone(model: nn.Module) -> CachedBackbone:
    """Put a :class:`CachedBackbone` in place of ``model.backbone`` (frozen: "Heads only")."""
    model.backbone = CachedBackbone(model.backbone)
    return model.backbone


def uncache_backbone(model: nn.Module) -> None:
    """Put the real backbone back (its weights are the model's; the cache is dropped)."""
    if isinstance(model.backbone, CachedBackbone):
        model.backbone = model.backbone.inner
