"""Mirror averaging (engine/mirror.py): each detection averaged with the model's detection of the
same object in the mirrored image, where the model learned mirrored images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_learn_complete.engine.mirror import Mirror, detect
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.model.config import (
    Augment,
    InferenceSettings,
    ModelConfig,
    TrainingSettings,
)

SHIFT = 2.0  # the stand-in detector's error, in its own image's pixels: to the right


class OffByShift(nn.Module):
    """Stands in for a detector: finds the bright pixels' box, SHIFT px too far right, and puts
    its keypoint channels "left" and "right" mid-height on the box's left and right edge.
    Mirroring the image mirrors the error, so averaging the two views cancels it."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
            x0, y0 = xs.min().float() + SHIFT, ys.min().float()
            x1, y1 = xs.max().float() + 1 + SHIFT, ys.max().float() + 1
            score = torch.tensor([0.8])
            outputs.append({
                "boxes": torch.stack([x0, y0, x1, y1])[None],
                "labels": torch.tensor([1]), "scores": score,
                "keypoints": torch.tensor([[[x0, (y0 + y1) / 2, 1.0], [x1, (y0 + y1) / 2, 1.0]]]),
            })
        return outputs


def config(mirror: bool = True, hflip: bool = True, vflip: bool = False) -> ModelConfig:
    return ModelConfig(architecture="keypointrcnn", categories=["disc"],
                       keypoint_names=["left", "right"],
                       training=TrainingSettings(augment=Augment(hflip=hflip, vflip=vflip)),
                       inference=InferenceSettings(mirror=mirror))


def picture() -> torch.Tensor:
    image = torch.zeros(3, 40, 60)
    image[:, 10:30, 5:25] = 1.0  # the object: x 5..25, y 10..30
    return image


def test_the_mirror_is_the_one_the_model_learned():
    assert Mirror.of(config()) == Mirror(-1, (1, 0))  # left and right swap
    assert Mirror.of(config(hflip=False, vflip=True)) == Mirror(-2, (0, 1))
    assert Mirror.of(config(hflip=False)) is None  # never saw a mirrored image
    assert Mirror.of(config(mirror=False)) is None
    assert ModelConfig().inference.mirror  # new models average


def test_an_error_that_mirrors_with_the_image_cancels():
    model = OffByShift()
    [plain] = detect(model, [picture()], None)
    assert plain["boxes"][0].tolist() == [5 + SHIFT, 10, 25 + SHIFT, 30]
    [fused] = detect(model, [picture()], Mirror.of(config()))
    assert fused["boxes"][0].tolist() == pytest.approx([5, 10, 25, 30])
    # the mirrored image's "left" point is the object's right edge: channels swap back
    assert fused["keypoints"][0, :, :2].flatten().tolist() == pytest.approx([5, 20, 25, 20])
    assert fused["keypoints"][0, :, 2].tolist() == [1.0, 1.0]
    assert fused["scores"].tolist() == plain["scores"].tolist()


def test_only_the_same_class_overlapping_enough_is_averaged():
    mirror = Mirror(-1, ())
    plain = {"boxes": torch.tensor([[10.0, 0, 30, 20], [60.0, 0, 80, 20]]),
             "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.3])}
    # in the mirrored image (100 px wide) of the first: [70, 0, 90, 20] -> back [10, 0, 30, 20]
    mirrored = {"boxes": torch.tensor([[68.0, 0, 88, 20], [22.0, 0, 42, 20]]),
                "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.3, 0.9])}
    fused = mirror.fuse(plain, mirrored, 100)
    # weighted by score: 0.9 on the plain box, 0.3 on the mirrored one ([12, 0, 32, 20] back)
    assert fused["boxes"][0].tolist() == pytest.approx([10.5, 0, 30.5, 20])
    # the second's only overlap is of another class: unchanged
    assert fused["boxes"][1].tolist() == [60.0, 0, 80, 20]


def test_complete_averages_unless_the_model_says_not_to(sample_index):
    image = (picture()[0].numpy() * 255).astype(np.uint8)
    found = {}
    for mirror in (True, False):
        predictor = Predictor(OffByShift(), config(mirror), sample_index.categories(),
                              device="cpu")
        [[found[mirror]]] = predictor.predict([image])
    assert found[True].box == pytest.approx((5, 10, 25, 30))
    assert found[False].box == pytest.approx((5 + SHIFT, 10, 25 + SHIFT, 30))


def test_models_saved_before_format_5_keep_one_pass():
    data = config().to_dict()
    data["format_version"] = 4
    del data["inference"]["mirror"]
    assert ModelConfig.from_dict(data).inference.mirror is False
    assert ModelConfig.from_dict(config().to_dict()).inference.mirror is True
