"""RoIAlign for the CPU as a sparse weighted sum, with a backward pass that is not serial.

torchvision's CPU ``roi_align`` walks the regions one by one, and its backward pass scatters each
sample into the feature gradient serially: in a Full model Learn on a 2-core CPU that backward
pass alone took 59% of a training step (docs/performance.md). Bilinear RoIAlign is a fixed sum of
at most 4 feature pixels per sample point, so here each output bin is an ``embedding_bag`` over
the channels-last features: the same sample points, weights and border rules as torchvision's
kernel (``aligned=False``, a fixed ``sampling_ratio``), equal to it within float rounding, and
its backward pass is torch's multi-threaded ``embedding_bag`` one. CUDA, quantized tensors and an
adaptive sampling ratio keep torchvision's kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _setup_scales


def roi_align(
    features: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    """torchvision's ``roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
    aligned=False)`` for ``rois`` (K, 5) = (batch index, x0, y0, x1, y1)."""
    levels = torch.zeros(len(rois), dtype=torch.long)
    return _pool([features], rois, levels, output_size, [spatial_scale], sampling_ratio)


def _pool(
    features: Sequence[Tensor], rois: Tensor, levels: Tensor, output_size: tuple[int, int],
    scales: Sequence[float], sampling_ratio: int,
) -> Tensor:
    """RoIAlign of each region on its level's map, ``features[levels[k]]`` at ``scales[levels[k]]``,
    as one ``embedding_bag`` over the rows of every level: pooling level by level and merging the
    results cost a Full training step three more copies of all the regions' features."""
    channels = features[0].shape[1]
    dtype = features[0].dtype
    pooled_h, pooled_w = output_size
    rois = rois.to(dtype)
    heights = torch.tensor([f.shape[2] for f in features])[levels]
    widths = torch.tensor([f.shape[3] for f in features])[levels]
    sizes = [f.shape[0] * f.shape[2] * f.shape[3] for f in features]
    first_row = torch.tensor([0, *sizes[:-1]]).cumsum(0)[levels]
    scale = torch.tensor(scales, dtype=dtype)[levels]
    start_x, start_y = rois[:, 1] * scale, rois[:, 2] * scale
    roi_w = (rois[:, 3] * scale - start_x).clamp(min=1.0)
    roi_h = (rois[:, 4] * scale - start_y).clamp(min=1.0)
    # sample positions along each axis: (K, bins, samples per bin), as torchvision computes them
    steps = (torch.arange(sampling_ratio, dtype=dtype) + 0.5) / sampling_ratio
    ys = start_y[:, None, None] + (torch.arange(pooled_h, dtype=dtype)[None, :, None]
                                   + steps) * (roi_h / pooled_h)[:, None, None]
    xs = start_x[:, None, None] + (torch.arange(pooled_w, dtype=dtype)[None, :, None]
                                   + steps) * (roi_w / pooled_w)[:, None, None]
    y_low, y_high, y_weights = _corners(ys, heights[:, None, None])  # (K, PH, S, 2) each
    x_low, x_high, x_weights = _corners(xs, widths[:, None, None])
    rows = torch.stack([y_low, y_high], -1) * widths[:, None, None, None]  # (K, PH, S, 2)
    cols = torch.stack([x_low, x_high], -1)  # (K, PW, S, 2)
    # every bin sums S x S sample points x 4 corners: (K, PH, PW, S*S*4) indices and weights
    offset = first_row + rois[:, 0].long() * (heights * widths)
    index = (offset[:, None, None, None, None, None, None]
             + rows[:, :, None, :, None, :, None] + cols[:, None, :, None, :, None, :])
    weight = (y_weights[:, :, None, :, None, :, None] * x_weights[:, None, :, None, :, None, :]
              / (sampling_ratio * sampling_ratio))
    bins, per_bin = len(rois) * pooled_h * pooled_w, 4 * sampling_ratio * sampling_ratio
    # rows of channels, contiguous: a (1, C, H, W) map's permute is a strided view, which
    # embedding_bag reads 5x slower (no copy for one map when the model runs channels-last)
    tables = [f.permute(0, 2, 3, 1).reshape(-1, channels) for f in features]
    table = tables[0].contiguous() if len(tables) == 1 else torch.cat(tables)
    pooled = F.embedding_bag(index.reshape(bins, per_bin), table, mode="sum",
                             per_sample_weights=weight.reshape(bins, per_bin))
    # contiguous (K, C, PH, PW), as torchvision returns it: the heads flatten or view it
    return pooled.reshape(len(rois), pooled_h, pooled_w, channels).permute(0, 3, 1, 2).contiguous()


def _corners(position: Tensor, size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Low and high pixel and the two bilinear weights of each position along a map ``size``
    pixels long, by torchvision's rules: a sample more than one pixel outside the map counts 0,
    one just outside reads the edge."""
    inside = (position >= -1.0) & (position <= size)
    position = position.clamp(min=0)
    low = position.floor().long()
    at_edge = low >= size - 1
    low = torch.minimum(low, size - 1)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(position), position - low)
    weights = torch.stack([1 - frac, frac], -1) * inside[..., None]
    return low, high, weights


class FastMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same levels, scales and outputs) pooling with
    :func:`roi_align` on the CPU; no parameters, so weight files are unchanged."""

    @classmethod
    def like(cls, pooler: MultiScaleRoIAlign) -> FastMultiScaleRoIAlign:
        return cls(pooler.featmap_names, pooler.output_size, pooler.sampling_ratio,
                   canonical_scale=pooler.canonical_scale,
                   canonical_level=pooler.canonical_level)

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        # torchvision's filter: the named maps the backbone has (MobileNet's FPN has 2 of 4)
        features = [v for k, v in x.items() if k in self.featmap_names]
        if features[0].device.type != "cpu" or features[0].is_quantized or self.sampling_ratio <= 0:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0],
                             self.sampling_ratio)
        return _pool(features, rois, self.map_levels(boxes), self.output_size, self.scales,
                     self.sampling_ratio)
