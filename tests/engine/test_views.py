"""Test-time views (engine/views.py): each detection averaged with the model's detections of the
same object in the mirrored image, where the model learned mirrored images, and at other input
sizes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.views import Views, detect, fuse
from napari_learn_complete.errors import BadInputError
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


def config(mirror: bool = True, hflip: bool = True, vflip: bool = False,
           scales: tuple[float, ...] = (1.0,)) -> ModelConfig:
    return ModelConfig(architecture="keypointrcnn", categories=["disc"],
                       keypoint_names=["left", "right"],
                       training=TrainingSettings(augment=Augment(hflip=hflip, vflip=vflip)),
                       inference=InferenceSettings(mirror=mirror, scales=scales))


def picture() -> torch.Tensor:
    image = torch.zeros(3, 40, 60)
    image[:, 10:30, 5:25] = 1.0  # the object: x 5..25, y 10..30
    return image


def test_the_mirror_is_the_one_the_model_learned():
    assert Views.of(config()) == Views(-1, (1, 0))  # left and right swap
    assert Views.of(config(hflip=False, vflip=True)) == Views(-2, (0, 1))
    assert Views.of(config(hflip=False)) is None  # never saw a mirrored image
    assert Views.of(config(mirror=False)) is None
    assert Views.of(config(scales=(1.0, 1.2))) == Views(-1, (1, 0), (1.0, 1.2))
    assert Views.of(config(mirror=False, scales=(1.0, 0.8))) == Views(None, (), (1.0, 0.8))
    new = ModelConfig().inference
    assert new.mirror and new.scales == (1.0, 1.2)  # new models average over both


def test_an_error_that_mirrors_with_the_image_cancels():
    model = OffByShift()
    [plain] = detect(model, [picture()], None)
    assert plain["boxes"][0].tolist() == [5 + SHIFT, 10, 25 + SHIFT, 30]
    [fused] = detect(model, [picture()], Views.of(config()))
    assert fused["boxes"][0].tolist() == pytest.approx([5, 10, 25, 30])
    # the mirrored image's "left" point is the object's right edge: channels swap back
    assert fused["keypoints"][0, :, :2].flatten().tolist() == pytest.approx([5, 20, 25, 20])
    assert fused["keypoints"][0, :, 2].tolist() == [1.0, 1.0]
    assert fused["scores"].tolist() == plain["scores"].tolist()


def test_only_the_same_class_overlapping_enough_is_averaged():
    views = Views(-1, ())
    plain = {"boxes": torch.tensor([[10.0, 0, 30, 20], [60.0, 0, 80, 20]]),
             "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.3])}
    # in the mirrored image (100 px wide) of the first: [70, 0, 90, 20] -> back [10, 0, 30, 20]
    mirrored = {"boxes": torch.tensor([[68.0, 0, 88, 20], [22.0, 0, 42, 20]]),
                "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.3, 0.9])}
    fused = fuse(plain, [views.unmirror(mirrored, 100)])
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


class OffBySize(nn.Module):
    """Stands in for a detector whose error depends on its input size: SHIFT px right at its own
    size (``transform.min_size`` 100), SHIFT px left at any other; it records the sizes it ran at.
    Averaging the two sizes' detections (equal scores) cancels the error."""

    def __init__(self) -> None:
        super().__init__()
        self.transform = SimpleNamespace(min_size=(100,), max_size=200)
        self.sizes: list[tuple] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        size = (self.transform.min_size, self.transform.max_size)
        self.sizes.append(size)
        shift = SHIFT if size == ((100,), 200) else -SHIFT
        outputs = []
        for image in images:
            ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
            box = torch.stack([xs.min().float() + shift, ys.min().float(),
                               xs.max().float() + 1 + shift, ys.max().float() + 1])
            outputs.append({"boxes": box[None], "labels": torch.tensor([1]),
                            "scores": torch.tensor([0.8])})
        return outputs


def test_each_input_size_is_one_pass_and_their_detections_are_averaged(sample_index):
    model = OffBySize()
    [plain] = detect(model, [picture()], None)
    assert plain["boxes"][0].tolist() == [5 + SHIFT, 10, 25 + SHIFT, 30]
    model.sizes.clear()
    fused = detect(model, [picture(), picture()], Views(None, (), (1.0, 1.2)))
    assert [f["boxes"][0].tolist() for f in fused] == [pytest.approx([5, 10, 25, 30])] * 2
    assert model.sizes == [((100,), 200), ((120,), 240)]  # both images in each pass
    assert (model.transform.min_size, model.transform.max_size) == ((100,), 200)  # restored
    # Complete runs them: a model saved with two sizes and no mirror
    image = (picture()[0].numpy() * 255).astype(np.uint8)
    predictor = Predictor(model, config(mirror=False, scales=(1.0, 1.2)),
                          sample_index.categories(), device="cpu")
    [[found]] = predictor.predict([image])
    assert found.box == pytest.approx((5, 10, 25, 30))


def test_the_input_sizes_start_with_the_models_own():
    for scales, message in (((1.2, 1.0), "must start with 1.0"), ((), "must start with 1.0"),
                            ((1.0, 1.2, 1.2), "must be distinct"), ((1.0, 3.0), "0.5 to 2.0"),
                            (["1.0", "1.2"], "valid number")):  # strict, a JSON list or not
        with pytest.raises(BadInputError, match=message):
            InferenceSettings(scales=scales)
    assert ModelConfig.from_dict(config(scales=(1.0, 0.8)).to_dict()).inference.scales == (1.0, 0.8)


def test_models_saved_before_formats_5_and_6_keep_their_passes():
    data = config().to_dict()
    data["format_version"] = 4
    del data["inference"]["mirror"]
    del data["inference"]["scales"]
    old = ModelConfig.from_dict(data).inference
    assert old.mirror is False and old.scales == (1.0,)
    data["format_version"] = 5
    data["inference"]["mirror"] = True
    old = ModelConfig.from_dict(data).inference
    assert old.mirror is True and old.scales == (1.0,)
    new = ModelConfig.from_dict(config(scales=(1.0, 1.2)).to_dict()).inference
    assert new.mirror is True and new.scales == (1.0, 1.2)
