"""Bounded work for small files: huge images are read reduced (and their detections scaled back to
full-size pixels), conversion to uint8 needs no float copy of the image, and a zarr header cannot
declare a million frames."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from napari_learn_complete.engine.data import DetectionDataset
from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import media
from napari_learn_complete.model.config import ModelConfig

# Complete over two 10,000 x 10,000 one-colour PNGs (120 KB each) with a stand-in model of input
# size 320 that finds one box at (32, 64, 160, 320) of what it is given; prints how far the peak
# memory of the process grew during Complete, and the boxes written.
_COMPLETE_BIG_IMAGES = """
import json, resource, sys
from pathlib import Path
import torch
from PIL import Image
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.index import Index
from napari_learn_complete.model.config import InferenceSettings, ModelConfig

class OneBox(torch.nn.Module):
    def forward(self, images):
        return [{"boxes": torch.tensor([[32.0, 64.0, 160.0, 320.0]]),
                 "labels": torch.tensor([1]), "scores": torch.tensor([0.9])} for _ in images]

folder = Path(sys.argv[1])
index = Index.create(folder / "index")
index.add_category("disc")
paths = [folder / f"big{i}.png" for i in range(2)]
for i, path in enumerate(paths):
    Image.new("L", (10_000, 10_000), 40 + i).save(path)
index.add_images(paths)  # decodes each once, so the peak below already holds one full image
config = ModelConfig(categories=["disc"], min_size=320, max_size=320,
                     inference=InferenceSettings(scales=(1.0,)))  # a stand-in: one input size
predictor = Predictor(OneBox(), config, index.categories(), device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
complete(index, [p.name for p in paths], "disc", predictor=predictor,
         settings=CompleteSettings(batch_size=2, min_score=0.0))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_mb": grown / 1024, "boxes": [o.box for o in index.observations()]}))
"""


def test_complete_on_huge_images_stays_in_budget_and_writes_full_size_boxes(tmp_path):
    """Two full-size RGB float32 frames of these images are 2.4 GB; the budget is a quarter."""
    run = subprocess.run([sys.executable, "-c", _COMPLETE_BIG_IMAGES, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["grown_mb"] < 600, result
    # the model saw 320 x 320 pixels of each 10,000 x 10,000 image
    scale = 10_000 / 320
    expected = [32 * scale, 64 * scale, 160 * scale, 320 * scale]
    assert result["boxes"] == [pytest.approx(expected)] * 2


def test_to_rgb_uint8_needs_no_float_copy_of_the_image():
    grey = np.full((2000, 2000), 1000, np.uint16)
    grey[-1, -1] = 60_000
    tracemalloc.start()
    try:
        rgb = media.to_rgb_uint8(grey)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rgb.shape == (2000, 2000, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[-1, -1].tolist() == [255, 255, 255]
    assert peak < 2 * rgb.nbytes, f"{peak / 2**20:.0f} MiB at peak for {rgb.nbytes / 2**20:.0f} MiB"


def test_training_reads_a_large_image_reduced_with_its_targets(empty_index, tmp_path):
    pixels = np.zeros((1000, 2000, 3), np.uint8)
    pixels[600:900, 400:1000] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    empty_index.add_category("disc")
    empty_index.add_image(tmp_path / "wide.png")
    empty_index.add_observation("wide.png", "disc", box=(400.0, 600.0, 1000.0, 900.0))
    config = ModelConfig(categories=["disc"], min_size=320, max_size=320)
    image, target = DetectionDataset(empty_index, empty_index.images(), config)[0]
    assert tuple(image.shape) == (3, 167, 334)  # a sixth, still no smaller than the model uses
    [box] = target["boxes"].tolist()
    assert box == pytest.approx([400 * 334 / 2000, 600 * 167 / 1000, 1000 * 334 / 2000,
                                 900 * 167 / 1000])
    x0, y0, x1, y1 = (round(v) for v in box)
    assert image[:, y0 + 1:y1 - 1, x0 + 1:x1 - 1].min() == 1.0  # the box is on the object
    assert image.dtype == torch.float32


def _zarr(path, shape, chunks):
    """A zarr array with only its header written: a few hundred bytes on disk."""
    zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype="uint8")
    return path


def test_a_zarr_header_declaring_a_million_frames_is_refused(empty_index, tmp_path, db_dump):
    path = _zarr(tmp_path / "many.zarr", (1_000_000, 8, 8), (1, 8, 8))
    before = db_dump(empty_index)
    with pytest.raises(BadInputError, match=r"many.zarr: zarr array has 1,000,000 frames, above "
                                            r"the limit of 100,000 per array"):
        empty_index.add_zarr(path)
    assert db_dump(empty_index) == before


def test_a_zarr_whose_one_chunk_is_larger_than_an_image_may_be_is_refused(empty_index, tmp_path):
    path = _zarr(tmp_path / "chunky.zarr", (10_000, 200, 200), (10_000, 200, 200))
    with pytest.raises(BadInputError, match=r"zarr chunks of shape \(10000, 200, 200\) are "
                                            "larger than the largest image allowed"):
        empty_index.add_zarr(path)
