"""The reader on the real viewer: an index folder opens as three synced layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari.utils.colormaps.standardize_color import transform_color
from PIL import Image

from napari_learn_complete._napari import MARKER, index_layers, layers_for, open_index
from napari_learn_complete._napari.reader import get_reader
from napari_learn_complete.index import Index

PLUGIN = "napari-learn-complete"


def test_get_reader_only_takes_index_folders(sample_index: Index, tmp_path: Path) -> None:
    assert callable(get_reader(str(sample_index.path)))
    assert callable(get_reader([str(sample_index.path)]))
    assert get_reader(str(tmp_path)) is None  # a folder without index.sqlite
    assert get_reader(str(sample_index.path / "images" / "sample_000.png")) is None
    assert get_reader([str(sample_index.path), str(sample_index.path)]) is None


def test_open_gives_image_boxes_and_keypoints(make_napari_viewer, sample_index: Index) -> None:
    viewer = make_napari_viewer()
    added = viewer.open(str(sample_index.path), plugin=PLUGIN)

    image, boxes, skeleton, points = added  # the skeleton under the points it joins
    assert [layer._type_string for layer in added] == ["image", "shapes", "vectors", "points"]
    assert [layer.metadata[MARKER]["role"] for layer in added] == [
        "image", "boxes", "skeleton", "keypoints"]
    assert {layer.metadata[MARKER]["index"] for layer in added} == {str(sample_index.path)}
    (synced,) = index_layers(viewer)
    assert synced.layers == (image, boxes, points, skeleton)
    assert all(layers_for(layer) is synced for layer in added)

    records = sample_index.images()
    assert synced.image_ids() == [r.id for r in records]
    assert image.data.shape == (len(records), max(r.height for r in records),
                                max(r.width for r in records), 3)
    assert image.rgb
    assert synced.current_image_id() == records[0].id  # opens on the first image

    cats = {c.id: c for c in sample_index.categories()}
    # the layers hold the page of the image shown (test_layers_page.py follows the slider)
    with_box = sample_index.observations(kind="roi", images=[records[0].id])
    assert list(boxes.features["observation_id"]) == [o.id for o in with_box]
    assert list(boxes.features["category"]) == [cats[o.category_id].name for o in with_box]
    assert list(boxes.features["source"]) == ["human"] * len(with_box)
    assert boxes.features["score"].isna().all()
    assert set(boxes.shape_type) == {"rectangle"}
    plane = {r.id: z for z, r in enumerate(records)}
    for vertices, obs in zip(boxes.data, with_box, strict=True):
        x0, y0, x1, y1 = obs.box
        assert vertices[:, 0].tolist() == [plane[obs.image_id]] * 4
        assert (vertices[:, 1].min(), vertices[:, 2].min()) == (y0, x0)
        assert (vertices[:, 1].max(), vertices[:, 2].max()) == (y1, x1)
    for colour, obs in zip(boxes.edge_color, with_box, strict=True):
        np.testing.assert_allclose(colour, transform_color(cats[obs.category_id].colour)[0])
    assert boxes.text.values[0] == cats[with_box[0].category_id].name

    expected = [(o, name, kp) for o in sample_index.observations(kind="keypoints",
                                                                 images=[records[0].id])
                for name, kp in zip(cats[o.category_id].keypoint_names, o.keypoints, strict=True)
                if kp[2] > 0]
    assert expected, "the sample index has keypoints"
    assert len(points.data) == len(expected)
    for row, (obs, name, (x, y, _)) in enumerate(expected):
        assert points.data[row].tolist() == [plane[obs.image_id], y, x]
        assert points.features["observation_id"][row] == obs.id
        assert points.features["keypoint"][row] == name
        assert points.features["category"][row] == cats[obs.category_id].name
        np.testing.assert_allclose(points.face_color[row],
                                   transform_color(cats[obs.category_id].colour)[0])
    # index coordinates are pixel corners: the overlays sit half a pixel up-left of the pixels
    assert tuple(boxes.translate) == tuple(points.translate) == (0.0, -0.5, -0.5)


def test_image_stack_is_lazy(make_napari_viewer, sample_index: Index, monkeypatch) -> None:
    reads: list[int] = []
    original = Index.read_image

    def counting(self: Index, image):
        reads.append(image.id)
        return original(self, image)

    monkeypatch.setattr(Index, "read_image", counting)
    viewer = make_napari_viewer()
    viewer.open(str(sample_index.path), plugin=PLUGIN)
    (synced,) = index_layers(viewer)
    ids = synced.image_ids()
    # napari first slices the middle plane, then the index moves it to the first image
    assert set(reads) <= {ids[0], ids[(len(ids) - 1) // 2]}
    reads.clear()
    synced.show_image(ids[-1])
    assert synced.current_image_id() == ids[-1]
    assert reads and set(reads) == {ids[-1]}


def test_different_sizes_are_padded_not_resized(make_napari_viewer, tmp_path: Path) -> None:
    index = Index.create(tmp_path / "sizes")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)
    large = rng.integers(0, 255, (90, 60), dtype=np.uint8)  # grey, taller, narrower
    for name, pixels in (("small.png", small), ("large.png", large)):
        Image.fromarray(pixels).save(tmp_path / name)
    index.add_images([tmp_path / "small.png", tmp_path / "large.png"])
    synced = open_index(make_napari_viewer(), index.path)

    stack = synced.image_layer.data
    assert stack.shape == (2, 90, 70, 3)
    plane0 = np.asarray(stack[0])
    np.testing.assert_array_equal(plane0[:40, :70], small)  # same pixel coordinates
    assert not plane0[40:].any()
    plane1 = np.asarray(stack[1])
    np.testing.assert_array_equal(plane1[:, :60], np.repeat(large[..., None], 3, axis=2))
    assert not plane1[:, 60:].any()


def test_open_index_accepts_an_index_and_refuses_a_plain_folder(
    make_napari_viewer, empty_index: Index, tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    synced = open_index(viewer, empty_index)
    assert synced.index is empty_index
    assert synced.image_ids() == [] and synced.current_image_id() is None
    assert len(synced.boxes_layer.data) == len(synced.keypoints_layer.data) == 0
    assert index_layers(viewer) == [synced]
    with pytest.raises(Exception, match="not an index"):
        open_index(viewer, tmp_path / "nothing")
