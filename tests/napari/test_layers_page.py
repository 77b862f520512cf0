"""The layers as a labeller meets them: one page (the image shown) at a time, the keypoint to
place chosen and advanced, names and skeleton on the canvas, a box's category changed by clicking
a category, and the slider and canvas saying which image is shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari.utils.colormaps.standardize_color import transform_color
from PIL import Image

from napari_learn_complete._napari import IndexLayers, index_layers, open_index
from napari_learn_complete._napari import layers as layers_module
from napari_learn_complete.index import Index

TRIANGLE_IMAGE, OTHER_TRIANGLE, TWO_CATEGORIES, EMPTY_IMAGE = 1, 4, 2, 9  # sample index


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    said: list[str] = []
    monkeypatch.setattr(layers_module, "show_warning", said.append)
    return said


def page_ids(layer) -> list[int]:
    return sorted(int(i) for i in layer.features["observation_id"])


def test_the_layers_hold_the_image_shown_and_follow_the_slider(opened) -> None:
    synced, _ = opened
    index, viewer = synced.index, synced.viewer
    shown: list[int] = []
    synced.events.current_image.connect(lambda e: shown.append(e.value))
    overlay = viewer.canvas.overlays.text
    first = index.image(synced.current_image_id()).name
    assert overlay.visible and overlay.text == f"{first}  (1/12)"  # named from the start

    assert page_ids(synced.boxes_layer) == [o.id for o in index.observations(
        images=[TRIANGLE_IMAGE], kind="roi")]
    viewer.dims.set_point(0, synced.image_ids().index(OTHER_TRIANGLE))  # the slider moves

    assert shown == [OTHER_TRIANGLE]
    on_image = index.observations(images=[OTHER_TRIANGLE])
    assert page_ids(synced.boxes_layer) == [o.id for o in on_image if o.box is not None]
    assert set(synced.keypoints_layer.features["observation_id"]) == {
        o.id for o in on_image if o.has_keypoints} != set()
    assert {int(v[0, 0]) for v in synced.boxes_layer.data} == {OTHER_TRIANGLE - 1}
    assert overlay.visible and overlay.text == "sample_003.png  (4/12)"
    assert viewer.dims.axis_labels[0] == "image"


def test_an_edit_elsewhere_shows_when_its_image_does_and_drawing_there_saves_there(
    opened,
) -> None:
    synced, _ = opened
    boxes = synced.boxes_layer
    made = synced.index.add_observation(EMPTY_IMAGE, "disc", box=(2, 2, 12, 12))
    assert made.id not in page_ids(boxes)  # another image: not on this page

    synced.show_image(EMPTY_IMAGE)
    assert page_ids(boxes) == [made.id]
    synced.active_category = "square"
    plane = synced.image_ids().index(EMPTY_IMAGE)
    boxes.add([np.array([[plane, 20, 20], [plane, 20, 30], [plane, 30, 30], [plane, 30, 20]])])
    drawn = Index(synced.index.path).observations(images=[EMPTY_IMAGE], category="square")
    assert [o.box for o in drawn] == [(20.0, 20.0, 30.0, 30.0)]


def test_the_keypoint_to_place_advances_after_each_click(opened) -> None:
    synced, _ = opened
    points = synced.keypoints_layer
    synced.show_image(EMPTY_IMAGE)
    plane = synced.image_ids().index(EMPTY_IMAGE)
    synced.active_category = "triangle"
    chosen: list[str] = []
    synced.events.active_keypoint.connect(lambda e: chosen.append(e.value))

    for x in (10, 20, 30, 40):
        points.add([plane, 15, x])

    assert chosen == ["left", "right", "apex", "left"]
    first, second = Index(synced.index.path).observations(images=[EMPTY_IMAGE])
    assert [(x, v) for x, _, v in first.keypoints] == [(10, 2), (20, 2), (30, 2)]
    assert [v for _, _, v in second.keypoints] == [2, 0, 0]  # the 4th click: the next triangle
    assert list(points.text.values) == ["apex", "left", "right", "apex"]  # named on the canvas
    # the skeleton joins the complete triangle: apex-left, left-right, right-apex
    assert len(synced.skeleton_layer.data) == 3
    np.testing.assert_allclose(synced.skeleton_layer.data[0], [[plane, 15, 10], [0, 0, 10]])


def test_the_skeleton_follows_a_moved_keypoint(opened) -> None:
    synced, _ = opened
    points, skeleton = synced.keypoints_layer, synced.skeleton_layer
    assert len(skeleton.data) == 3  # the first image's triangle
    apex = list(points.features["keypoint"]).index("apex")
    moved = points.data[apex] + [0, 5, 5]
    points.data[apex] = moved
    points.events.data(value=points.data, action="changed", data_indices=(apex,),
                       vertex_indices=((),))
    assert any(np.allclose(vector[0], moved) for vector in skeleton.data)
    stored = Index(synced.index.path).observation(int(points.features["observation_id"][apex]))
    assert stored.keypoints[0][:2] == (moved[2], moved[1])


def test_clicking_a_category_moves_the_selected_box_to_it(opened, warnings) -> None:
    synced, _ = opened
    boxes = synced.boxes_layer
    synced.show_image(TWO_CATEGORIES)
    disc = next(o for o in synced.index.observations(images=[TWO_CATEGORIES], category="disc"))
    row = page_ids(boxes).index(disc.id)
    boxes.selected_data = {row}
    assert synced.selected_observation_ids() == [disc.id]

    synced.active_category = "square"

    stored = Index(synced.index.path).observation(disc.id)
    square = synced.index.category("square")
    assert stored.category_id == square.id and stored.box == disc.box
    row = list(boxes.features["observation_id"]).index(disc.id)
    assert boxes.features["category"][row] == "square"
    np.testing.assert_allclose(boxes.edge_color[row], transform_color(square.colour)[0])
    assert synced.selected_observation_ids() == [disc.id]  # still selected
    assert warnings == []


def test_a_box_with_keypoints_keeps_its_category_when_they_would_be_lost(
    opened, warnings, db_dump,
) -> None:
    synced, _ = opened
    boxes = synced.boxes_layer
    before = db_dump(synced.index)
    boxes.selected_data = {0}  # the first image's triangle, with keypoints

    synced.active_category = "disc"

    assert db_dump(synced.index) == before
    assert warnings and "keypoints that 'disc' does not have" in warnings[0]
    assert boxes.features["category"][0] == "triangle"
    triangle = synced.index.category("triangle")
    np.testing.assert_allclose(boxes.edge_color[0], transform_color(triangle.colour)[0])


def test_a_point_for_a_category_without_keypoints_names_one_that_has(opened, warnings,
                                                                     db_dump) -> None:
    synced, _ = opened
    before = db_dump(synced.index)
    synced.active_category = "disc"
    synced.keypoints_layer.add([0, 10, 10])
    assert db_dump(synced.index) == before
    assert warnings == ["keypoint not saved: category 'disc' has no keypoints: make 'triangle' "
                        "the active category"]


def test_the_layer_to_edit_is_active_never_the_skeleton(
    make_napari_viewer, tmp_path: Path, sample_index: Index, qtbot,
) -> None:
    """Opened from a folder (napari's reader makes its last layer active afterwards) or from
    Python: the keypoints when a category has keypoints to place, else the boxes."""
    index = Index.create(tmp_path / "boxes-only")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    index.add_image(image)
    index.add_category("cell")
    synced: IndexLayers = open_index(make_napari_viewer(), index)
    assert synced.skeleton_layer is None
    assert synced.viewer.layers.selection.active is synced.boxes_layer

    for folder, role in ((index.path, "boxes"), (sample_index.path, "keypoints")):
        viewer = make_napari_viewer()
        viewer.open(str(folder), plugin="napari-learn-complete")
        (synced,) = index_layers(viewer)
        layer = getattr(synced, f"{role}_layer")
        qtbot.waitUntil(lambda viewer=viewer, layer=layer: viewer.layers.selection.active
                        is layer, timeout=2000)


def test_a_change_from_elsewhere_keeps_the_selection(opened) -> None:
    """An attribute set from the panel (or any API write) re-reads the rows it changed: the
    boxes and points the labeller had selected stay selected, whatever their new rows."""
    synced, _ = opened
    boxes, points = synced.boxes_layer, synced.keypoints_layer
    synced.show_image(TWO_CATEGORIES)
    first, second = page_ids(boxes)
    boxes.selected_data = {list(boxes.features["observation_id"]).index(second)}
    synced.index.update_observation(first, attributes={"stain": "dark"})
    synced.index.update_observation(second, attributes={"stain": "pale"})
    assert synced.selected_observation_ids() == [second]

    synced.show_image(TRIANGLE_IMAGE)
    left = list(points.features["keypoint"]).index("left")
    points.selected_data = {left}
    (triangle,) = set(points.features["observation_id"])
    synced.index.update_observation(int(triangle), attributes={"stain": "dark"})
    assert [points.features["keypoint"][r] for r in points.selected_data] == ["left"]
