"""The inference wrapper: output mapping to index terms, and streaming one batch ahead."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from doubles import ScriptedDetector
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import READER, stream_images
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.errors import BadInputError, RefusedError
from napari_learn_complete.model import build_model
from napari_learn_complete.model.config import InferenceSettings, ModelConfig


class FixedOutput(nn.Module):
    """Stands in for a torchvision detector: one fixed output per image."""

    def __init__(self, output: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.output = output
        self.seen: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.seen += [(t.dtype, tuple(t.shape)) for t in images]
        return [self.output for _ in images]


def test_outputs_map_to_category_names_and_category_keypoint_order(sample_index):
    config = ModelConfig(architecture="keypointrcnn", categories=["disc", "square", "triangle"],
                         keypoint_names=["left", "tail", "right", "apex"],
                         # one pass: the views' averaging is tested in test_views.py
                         inference=InferenceSettings(mirror=False, scales=(1.0,)))
    keypoints = torch.tensor([[[float(10 * j), 5.0, 1.0] for j in range(4)]] * 3)
    keypoints[2, 0, 0] = -7.0  # outside the image: clamped
    model = FixedOutput({
        "boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0], [-5.0, 0.0, 500.0, 20.0],
                               [0.0, 0.0, 5.0, 5.0]]),
        "labels": torch.tensor([3, 2, 3]),
        "scores": torch.tensor([0.9, 0.8, 0.1]),
        "keypoints": keypoints,
    })
    predictor = Predictor(model, config, sample_index.categories(), device="cpu",
                          model_version="m:v2")
    image = np.zeros((50, 60), np.uint16)  # any dtype or channel count is converted
    [found] = predictor.predict([image])
    assert model.seen == [(torch.float32, (3, 50, 60))]
    assert [(d.category, d.score) for d in found] == [("triangle", pytest.approx(0.9)),
                                                      ("square", pytest.approx(0.8)),
                                                      ("triangle", pytest.approx(0.1))]
    # triangle keypoints are apex, left, right: model channels 3, 0, 2
    assert found[0].keypoints == ((30.0, 5.0, 2), (0.0, 5.0, 2), (20.0, 5.0, 2))
    assert found[2].keypoints[1] == (0.0, 5.0, 2)
    assert found[1].keypoints is None  # squares have no keypoints
    assert found[1].box == (0.0, 0.0, 60.0, 20.0)  # clamped to the image


def test_check_refuses_what_the_model_cannot_do(sample_index):
    boxes_only = Predictor(FixedOutput({}), ModelConfig(categories=["disc", "triangle"]),
                           sample_index.categories(), device="cpu")
    with pytest.raises(RefusedError, match="does not predict keypoints"):
        boxes_only.check("keypoints", sample_index.category("triangle"))
    with pytest.raises(RefusedError, match="not made for category 'square'"):
        boxes_only.check("roi", sample_index.category("square"))
    partial = Predictor(FixedOutput({}), ModelConfig(
        architecture="keypointrcnn", categories=["triangle"], keypoint_names=["apex"]),
        sample_index.categories(), device="cpu")
    with pytest.raises(RefusedError, match="does not know keypoint"):
        partial.check("keypoints", sample_index.category("triangle"))
    boxes_only.check("roi", sample_index.category("disc"))


def test_stream_yields_every_image_in_order_in_batches(sample_index):
    images = sample_index.images()
    batches = list(stream_images(sample_index, images, 5))
    assert [len(records) for records, _ in batches] == [5, 5, 2]
    assert [r.id for records, _ in batches for r in records] == [i.id for i in images]
    records, arrays = batches[0]
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == (records[0].height,
                                                               records[0].width, 3)


class Timeline:
    """What Complete's two threads did, in order: ("decoding", b) and ("decoded", b) around
    each image of batch b read by the reader thread, ("predict", b) and ("predicted", b) around
    each model call."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self._changed = threading.Condition()

    def add(self, event: tuple[str, int]) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, event: tuple[str, int], count: int, timeout: float) -> bool:
        """Wait until ``event`` happened ``count`` times; False after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self.events.count(event) >= count, timeout)

    def first(self, event: tuple[str, int]) -> int:
        return self.events.index(event)

    def last(self, event: tuple[str, int]) -> int:
        return len(self.events) - 1 - self.events[::-1].index(event)


class WatchedDetector(ScriptedDetector):
    """Finds nothing; while it predicts batch b it waits until the reader has decoded batch b + 1
    (up to 20 s), then gives the reader 0.3 s to start on batch b + 2 if it (wrongly) would."""

    def __init__(self, index, timeline: Timeline, batch_size: int, batches: int) -> None:
        super().__init__(index, {})
        self.timeline, self.batch_size, self.batches = timeline, batch_size, batches

    def predict(self, images):
        batch = self.calls
        self.timeline.add(("predict", batch))
        if batch + 1 < self.batches:
            self.timeline.wait_for(("decoded", batch + 1), self.batch_size, timeout=20)
        if batch + 2 < self.batches:
            self.timeline.wait_for(("decoding", batch + 2), 1, timeout=0.3)
        found = super().predict(images)
        self.timeline.add(("predicted", batch))
        return found


def test_complete_decodes_the_next_batch_while_the_model_predicts_and_no_further(
        sample_index, monkeypatch):
    names = [image.name for image in sample_index.images()[:8]]
    batch_size, batches = 2, 4
    batch_of = {name: i // batch_size for i, name in enumerate(names)}
    timeline = Timeline()
    detector = WatchedDetector(sample_index, timeline, batch_size, batches)
    read = sample_index.read_image

    def reading(image, **kwargs):  # the stream reads image records
        batch = batch_of[image.name]
        timeline.add(("decoding", batch))
        array = read(image, **kwargs)
        timeline.add(("decoded", batch))
        return array

    monkeypatch.setattr(sample_index, "read_image", reading)
    complete(sample_index, names, "disc", predictor=detector,
             settings=CompleteSettings(batch_size=batch_size))

    events = timeline.events
    assert [e for e in events if e[0] == "predict"] == [("predict", b) for b in range(batches)]
    for b in range(batches - 1):  # the next batch is ready before the model is done with this
        assert timeline.last(("decoded", b + 1)) < timeline.first(("predicted", b)), events
    for b in range(batches - 2):  # and the one after waits until the model is done with it
        assert timeline.first(("decoding", b + 2)) > timeline.first(("predicted", b)), events


class CountingIndex:
    """Counts decoded images."""

    def __init__(self, index) -> None:
        self.index = index
        self.reads = 0

    def read_image(self, record, **kwargs):
        self.reads += 1
        return self.index.read_image(record, **kwargs)


def test_closing_the_stream_stops_the_reader(sample_index):
    counting = CountingIndex(sample_index)
    stream = stream_images(counting, sample_index.images(), 2)
    next(stream)
    stream.close()  # returns once the reader thread has ended
    assert not any(t.name.startswith(READER) for t in threading.enumerate())
    assert counting.reads < len(sample_index.images())  # it stopped before the end


def test_stream_raises_a_read_error_in_the_consumer(sample_index):
    images = sample_index.images()
    sample_index.resolve(images[3]).unlink()
    stream = stream_images(sample_index, images, 2)
    next(stream)
    with pytest.raises(BadInputError, match=r"sample_003\.png: image file not found"):
        next(stream)


def test_complete_runs_a_copy_with_batchnorms_folded_and_keeps_the_model(sample_index):
    """The folded copy runs (docs/performance.md); the model keeps the weights a Ray pool pins."""
    config = ModelConfig(categories=["disc", "square", "triangle"], min_size=64, max_size=64,
                         inference=InferenceSettings(mirror=False, scales=(1.0,)))
    model = build_model(config)
    predictor = Predictor(model, config, sample_index.categories(), device="cpu")
    assert predictor.model is model
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in predictor.net.modules())
    ran = []
    predictor.net.register_forward_hook(lambda *_: ran.append("folded"))
    model.register_forward_hook(lambda *_: ran.append("model"))
    predictor.predict([np.zeros((64, 64, 3), np.uint8)])
    assert ran == ["folded"]
