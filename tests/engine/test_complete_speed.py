"""Complete keeps the device busy and reuses predictions: decoding threads, images read at the
model's own input size, vectorised conversions (same detections as a plain per-image loop), the
prediction cache, and the precision inference runs at."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as F

from doubles import ScriptedDetector
from napari_learn_complete.engine import device as device_module
from napari_learn_complete.engine import predict as predict_module
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import (
    READER,
    Detection,
    PredictionCache,
    predictions,
    stream_images,
)
from napari_learn_complete.engine.device import precision
from napari_learn_complete.engine.jobs import Job, PredictorCache, run_job
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.proposals import propose
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.index import Index
from napari_learn_complete.model.config import InferenceSettings, ModelConfig
from napari_learn_complete.model.registry import CONFIG_FILE, active_model
from untrained import untrained_model

NAMES = [f"sample_{i:03d}.png" for i in range(6, 12)]


@pytest.fixture
def wide_index(tmp_path: Path) -> Index:
    """8 images of one size, 120 x 90 (a batch of them travels as one tensor; x and y scale
    differently): noise and a few shapes."""
    index = Index.create(tmp_path / "wide")
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 80, (90, 120, 3), dtype=np.uint8)
        pixels[10 + 5 * i:40 + 5 * i, 20:60] = (200, 40, 40)
        pixels[50:80, 70 + i:110] = (40, 200, 40)
        Image.fromarray(pixels).save(index.images_dir / f"wide_{i}.png")
    index.add_images(sorted(index.images_dir.iterdir()))
    index.add_category("disc")
    index.add_category("square")
    yield index
    index.close()


def plain_detections(predictor: Predictor, index: Index, name: str) -> list[Detection]:
    """The detections of one image as a plain loop computes them: the whole file read, scaled
    down to the model's size, one image per model call, every number read on its own."""
    config = predictor.config
    pixels = F.to_image(np.array(index.read_image(name)))
    height, width = pixels.shape[-2:]
    scale = min(config.min_size / min(height, width), config.max_size / max(height, width))
    if scale < 1:
        pixels = F.resize(pixels, [round(height * scale), round(width * scale)], antialias=True)
    with torch.no_grad():
        [out] = predictor.model([F.to_dtype(pixels, torch.float32, scale=True)])
    sx, sy = width / pixels.shape[-1], height / pixels.shape[-2]
    found = []
    for i in range(len(out["labels"])):
        box = out["boxes"][i]
        found.append(Detection(
            config.categories[int(out["labels"][i]) - 1],
            (min(max(float(box[0] * sx), 0.0), width), min(max(float(box[1] * sy), 0.0), height),
             min(max(float(box[2] * sx), 0.0), width), min(max(float(box[3] * sy), 0.0), height)),
            float(out["scores"][i])))
    return found


def test_batched_threaded_and_vectorised_detections_match_a_plain_per_image_loop(wide_index):
    untrained_model(wide_index, min_size=64, max_detections=20)
    predictor = Predictor.from_index(wide_index, "cpu")
    predictor.views = None  # one pass, as the plain loop runs (views: test_views.py)
    images = wide_index.images()
    batches = list(predictions(wide_index, images, predictor, 4))
    assert predictor.fit == (64, 96)  # the images are scaled by 64 / 90 as they are read
    assert [[r.name for r in records] for records, _ in batches] == [
        [i.name for i in images[:4]], [i.name for i in images[4:]]]
    for records, found in batches:
        for record, detections in zip(records, found, strict=True):
            expected = plain_detections(predictor, wide_index, record.name)
            assert len(detections) == len(expected) == 20
            assert [d.category for d in detections] == [d.category for d in expected]
            assert [d.score for d in detections] == pytest.approx([d.score for d in expected],
                                                                  abs=1e-5)
            assert [v for d in detections for v in d.box] == pytest.approx(
                [v for d in expected for v in d.box], abs=1e-3)


class FixedOutput(nn.Module):
    """Stands in for a torchvision detector: a box at (8, 8, 16, 16) of whatever it is given."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.tensor([[8.0, 8.0, 16.0, 16.0]]), "labels": torch.tensor([1]),
                 "scores": torch.tensor([0.9])} for _ in images]


def test_images_are_read_at_the_models_input_size_and_boxes_come_back_in_full_pixels(
        sample_index):
    config = ModelConfig(categories=["disc"], min_size=32, max_size=32,
                         inference=InferenceSettings(scales=(1.0,)))  # a stand-in: one size
    predictor = Predictor(FixedOutput(), config, sample_index.categories(), device="cpu")
    seen: list[tuple[int, ...]] = []
    predict = predictor.predict
    predictor.predict = lambda arrays: seen.extend(a.shape for a in arrays) or predict(arrays)
    image = sample_index.image(NAMES[0])
    result = complete(sample_index, [image.name], "disc", predictor=predictor)
    factor = max(min(image.width, image.height) // 32, max(image.width, image.height) // 32)
    assert factor >= 3
    reduced = (math.ceil(image.height / factor), math.ceil(image.width / factor))
    assert seen == [(*reduced, 3)]  # decoded reduced, not the whole file
    # the model then scales that to 32 px on its long side and finds (8, 8, 16, 16) there
    scale = 32 / max(reduced)
    sx, sy = image.width / round(reduced[1] * scale), image.height / round(reduced[0] * scale)
    [obs] = sample_index.observations(ids=result.observation_ids)
    assert obs.box == pytest.approx((8 * sx, 8 * sy, 16 * sx, 16 * sy))


def test_the_images_of_a_batch_are_decoded_side_by_side(sample_index, monkeypatch):
    both_reading = threading.Barrier(2, timeout=10)  # broken unless two reads run at once
    read = sample_index.read_image

    def reading(image, **kwargs):
        both_reading.wait()
        return read(image, **kwargs)

    monkeypatch.setattr(sample_index, "read_image", reading)
    batches = list(stream_images(sample_index, sample_index.images()[:4], 2))
    assert [len(records) for records, _ in batches] == [2, 2]
    assert not any(t.name.startswith(READER) for t in threading.enumerate())


def _scripted(index: Index, version: str = "scripted:v1") -> ScriptedDetector:
    per_image = {n: [Detection("square", (2.0, 2.0, 20.0, 20.0), 0.9),
                     Detection("disc", (30.0, 30.0, 50.0, 50.0), 0.8),
                     Detection("triangle", (50.0, 10.0, 80.0, 40.0), 0.7)] for n in NAMES}
    return ScriptedDetector(index, per_image, model_version=version)


class Counted:
    """Counts the images a detector is asked to predict."""

    def __init__(self, detector) -> None:
        self.detector, self.images = detector, 0
        self.model_id, self.model_version = detector.model_id, detector.model_version

    def check(self, kind, category) -> None:
        self.detector.check(kind, category)

    def predict(self, images):
        self.images += len(images)
        return self.detector.predict(images)


def test_a_second_complete_or_a_propose_reuses_the_predictions(sample_index):
    cache = PredictionCache()
    detector = Counted(_scripted(sample_index))
    settings = CompleteSettings(batch_size=4)
    first = complete(sample_index, NAMES, "square", predictor=detector, cache=cache,
                     settings=settings)
    assert (first.written, detector.images) == (6, 6)
    second = complete(sample_index, NAMES, "disc", predictor=detector, cache=cache,
                      settings=settings)
    assert (second.written, detector.images) == (6, 6)  # the model did not run again
    assert [o.box for o in sample_index.observations(ids=second.observation_ids)] == [
        (30.0, 30.0, 50.0, 50.0)] * 6
    triangle = sample_index.category("triangle")
    labelled = sample_index.observation_counts()
    others = [i for i in sample_index.images(exclude_category=triangle.id)
              if i.id in labelled and i.name not in NAMES]
    proposals = propose(sample_index, "triangle", predictor=detector, cache=cache)
    assert {p.image_name for p in proposals} == set(NAMES)  # from the cache
    assert others and detector.images == 6 + len(others)  # only the images not seen yet


def test_a_changed_image_file_or_another_detector_is_predicted_again(sample_index):
    cache = PredictionCache()
    detector = Counted(_scripted(sample_index))
    complete(sample_index, NAMES, "square", predictor=detector, cache=cache)
    changed = sample_index.resolve(sample_index.image(NAMES[2]))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    complete(sample_index, NAMES, "disc", predictor=detector, cache=cache)
    assert detector.images == 6 + 1  # only the rewritten file
    new_version = Counted(_scripted(sample_index, "scripted:v2"))
    complete(sample_index, NAMES, "disc", predictor=new_version, cache=cache)
    assert new_version.images == 6


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = PredictionCache(max_detections=4)
    two = [Detection("disc", (0.0, 0.0, 1.0, 1.0), 0.5)] * 2
    keys = [("index", i, f"{i}.png", 1, 1) for i in range(3)]
    cache.put(keys[0], two)
    cache.put(keys[1], [])  # counts as one
    assert cache.get(keys[0]) == tuple(two)  # now the most recently used
    cache.put(keys[2], two)
    assert (cache.get(keys[1]), len(cache)) == (None, 2)
    assert cache.get(keys[0]) == cache.get(keys[2]) == tuple(two)


def test_the_engine_reuses_predictions_until_the_model_changes(sample_index, monkeypatch):
    handle = untrained_model(sample_index, min_size=32, max_detections=5)
    calls: list[int] = []
    predict = Predictor.predict
    monkeypatch.setattr(Predictor, "predict",
                        lambda self, images: calls.append(len(images)) or predict(self, images))
    predictors = PredictorCache()

    def run(operation: str, **args):
        calls.clear()
        run_job(Job(str(sample_index.path), operation, args), predictors=predictors)
        return sum(calls)

    assert run("complete", images=NAMES, category="square") == 6
    assert run("complete", images=NAMES, category="disc") == 0
    assert run("complete", images=NAMES[:3], category="triangle") == 0
    model, config = handle.load("cpu")
    handle.commit_version(model, config)  # a new version: its own predictions
    assert run("complete", images=NAMES, category="disc") == 6
    handle = active_model(sample_index)
    handle.config.inference.nms_iou = 0.3  # an edited configuration changes the output
    handle.config.save(handle.folder / CONFIG_FILE)
    assert run("complete", images=NAMES, category="disc") == 6
    assert run("complete", images=NAMES, category="square") == 0


def test_inference_runs_in_full_precision_with_tf32_on_cuda(sample_index, monkeypatch):
    assert device_module.PRECISION["infer"] == "tf32"
    entered = []

    def spy(device, operation):
        entered.append((device.type, operation))
        return precision(device, operation)

    monkeypatch.setattr(predict_module, "precision", spy)
    config = ModelConfig(categories=["disc"], inference=InferenceSettings(scales=(1.0,)))
    Predictor(FixedOutput(), config, sample_index.categories(),
              device="cpu").predict([np.zeros((40, 40, 3), np.uint8)])
    assert entered == [("cpu", "infer")]
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision(torch.device("cpu"), "infer"):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
        assert not torch.is_autocast_enabled("cpu")
    with precision(torch.device("cuda"), "infer"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.is_autocast_enabled("cuda")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_predictor_runs_fp32_on_cuda(sample_index):
    untrained_model(sample_index, min_size=32, max_detections=5)
    predictor = Predictor.from_index(sample_index, "cuda")
    seen = []
    predictor.model.backbone.register_forward_hook(
        lambda module, args, out: seen.append((torch.is_autocast_enabled("cuda"),
                                               next(iter(out.values())).dtype)))
    predictor.predict([np.zeros((64, 64, 3), np.uint8)])
    assert seen == [(False, torch.float32)]
