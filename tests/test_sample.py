"""The synthetic sample: deterministic, with exact ground truth, stored as the spec asks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from napari_learn_complete import sample
from napari_learn_complete.index import Index


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b = sample.generate(4, seed=3), sample.generate(4, seed=3)
    c = sample.generate(4, seed=4)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.array, y.array) and x.objects == y.objects
    assert not np.array_equal(a[0].array, c[0].array)


def test_images_sizes_and_objects_within_spec():
    images = sample.generate(24, seed=0, size_range=(96, 160))
    shapes = {im.array.shape for im in images}
    assert len(shapes) > 5  # images of different sizes
    seen = set()
    for im in images:
        height, width = im.array.shape[:2]
        assert 96 <= height <= 160 and 96 <= width <= 160 and im.array.dtype == np.uint8
        assert 1 <= len(im.objects) <= 3
        for obj in im.objects:
            seen.add(obj.category)
            x0, y0, x1, y1 = obj.box
            assert 16 <= x1 - x0 <= 48 and 16 <= y1 - y0 <= 48
            assert min(x0, y0) >= 0 and x1 <= width and y1 <= height
            assert (obj.keypoints is not None) == (obj.category == "triangle")
    assert seen == {"disc", "square", "triangle"}


def test_shapes_are_painted_where_the_ground_truth_says():
    for im in sample.generate(12, seed=1):
        for obj in im.objects:
            x0, y0, x1, y1 = (int(v) for v in obj.box)
            crop = im.array[y0:y1, x0:x1].astype(int)
            colour = np.array(sample._COLOURS[obj.category])
            filled = (np.abs(crop - colour).sum(-1) < 90).mean()
            expected = {"disc": np.pi / 4, "square": 1.0, "triangle": 0.5}[obj.category]
            assert filled == pytest.approx(expected, abs=0.15), obj
            if obj.keypoints:
                apex, left, right = obj.keypoints
                assert apex[1] == y0 and left[0] == x0 and right[0] == x1
                assert left[1] == right[1] == y1


def test_make_sample_index_stores_labelled_images_and_full_ground_truth(tmp_path):
    index = sample.make_sample_index(tmp_path / "ix", n_images=10, labelled=4, seed=2)
    truth = sample.generate(10, seed=2)
    assert isinstance(index, Index)
    assert [im.name for im in index.images()] == [t.name for t in truth]
    assert all((index.images_dir / t.name).is_file() for t in truth)
    assert np.array_equal(index.read_image(truth[5].name), truth[5].array)
    tri = index.category("triangle")
    assert tri.keypoint_names == ("apex", "left", "right") and tri.keypoints_enabled
    assert not index.category("disc").keypoints_enabled
    stored = index.observations()
    assert len(stored) == sum(len(t.objects) for t in truth[:4])
    assert {o.source for o in stored} == {"human"}
    assert {index.image(o.image_id).name for o in stored} == {t.name for t in truth[:4]}
    gt_file = index.path / sample.GROUND_TRUTH_FILE
    coco = COCO(str(gt_file))
    assert len(coco.getAnnIds()) == sum(len(t.objects) for t in truth)
    gt = json.loads(gt_file.read_text())
    tri_anns = [a for a in gt["annotations"] if a["category_id"] == tri.id]
    assert tri_anns and all(len(a["keypoints"]) == 9 for a in tri_anns)
    first = index.image(truth[0].name)
    assert {tuple(a["bbox"]) for a in gt["annotations"] if a["image_id"] == first.id} == {
        (o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]) for o in truth[0].objects
    }


def test_bad_size_range_is_refused():
    with pytest.raises(ValueError, match="size_range"):
        sample.generate(2, size_range=(40, 60))
