"""Live sync on the real viewer: layer edits write the index at once, API edits reach the layers."""

from __future__ import annotations

import threading

import numpy as np
from napari.utils._proxies import PublicOnlyProxy
from napari.utils._test_utils import read_only_mouse_event
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)

from napari_learn_complete._napari import IndexLayers, index_layers, open_index
from napari_learn_complete.index import Index


def on_disk(synced: IndexLayers) -> Index:
    """A second Index on the folder: it sees only what was committed."""
    return Index(synced.index.path)


def drag(layer, start, end) -> None:
    """Press at ``start``, drag to ``end`` and release (world coordinates (plane, y, x))."""
    kw = {"dims_displayed": [1, 2]}
    mouse_press_callbacks(layer, read_only_mouse_event(type="mouse_press", position=start, **kw))
    for pos in (start, end):
        mouse_move_callbacks(layer, read_only_mouse_event(
            type="mouse_move", is_dragging=True, position=pos, **kw))
    mouse_release_callbacks(layer, read_only_mouse_event(type="mouse_release", position=end,
                                                         **kw))


def world(point) -> tuple[float, float, float]:
    """Index (pixel corner) coordinates -> world coordinates of the overlay layers."""
    z, y, x = point
    return (z, y - 0.5, x - 0.5)


def test_drawn_box_is_saved_with_the_active_category_and_clipped(opened) -> None:
    synced, changes = opened
    layer = synced.boxes_layer
    synced.active_category = "square"
    image = synced.index.image(synced.image_ids()[0])
    before = len(layer.data)
    layer.mode = "add_rectangle"
    drag(layer, world((0, 5, 8)), world((0, 30, image.width + 20)))  # past the right edge

    assert len(layer.data) == before + 1
    assert len(changes) == 1 and changes[0].action == "added"  # one edit, one write
    (obs,) = on_disk(synced).observations(ids=changes[0].ids)
    assert synced.index.category(obs.category_id).name == "square"
    assert obs.image_id == image.id and obs.source == "human"
    np.testing.assert_allclose(obs.box, (8, 5, image.width, 30))
    assert layer.features["observation_id"].iloc[-1] == obs.id
    assert layer.features["category"].iloc[-1] == "square"
    assert layer.data[-1][:, 2].max() == image.width  # the row shows the clipped box


def test_box_without_active_category_is_refused(opened, db_dump) -> None:
    synced, changes = opened
    synced.active_category = None
    before, rows = db_dump(synced.index), len(synced.boxes_layer.data)
    synced.boxes_layer.add([np.array([[0, 5, 5], [0, 5, 20], [0, 20, 20], [0, 20, 5]])])
    assert len(synced.boxes_layer.data) == rows  # removed again
    assert changes == [] and db_dump(synced.index) == before


def _first_box_row(synced: IndexLayers) -> tuple[int, int]:
    ids = synced.boxes_layer.features["observation_id"]
    first_image = synced.image_ids()[0]
    for row, obs_id in enumerate(ids):
        if synced.index.observation(int(obs_id)).image_id == first_image:
            return row, int(obs_id)
    raise AssertionError("the first sample image has a box")


def test_moving_and_resizing_a_box_writes_it(opened) -> None:
    synced, changes = opened
    layer = synced.boxes_layer
    row, obs_id = _first_box_row(synced)
    x0, y0, x1, y1 = synced.index.observation(obs_id).box
    layer.mode = "select"
    centre = world((0, (y0 + y1) / 2, (x0 + x1) / 2))
    drag(layer, centre, centre)  # select it
    drag(layer, centre, (0, centre[1] + 3, centre[2] - 2))  # move by (dy, dx) = (3, -2)

    assert len(changes) == 1
    moved = on_disk(synced).observation(obs_id).box
    np.testing.assert_allclose(moved, (x0 - 2, y0 + 3, x1 - 2, y1 + 3))

    # drag the bottom-right corner (vertex 2 of a napari rectangle) outwards by 4 px
    drag(layer, world((0, y1 + 3, x1 - 2)), world((0, y1 + 7, x1 + 2)))
    assert len(changes) == 2
    np.testing.assert_allclose(on_disk(synced).observation(obs_id).box,
                               (x0 - 2, y0 + 3, x1 + 2, y1 + 7))
    assert layer.features["observation_id"].iloc[row] == obs_id  # mapping kept


def test_deleting_boxes_deletes_or_keeps_keypoints(opened) -> None:
    synced, _ = opened
    layer = synced.boxes_layer
    synced.index.add_observation(1, "disc", box=(60, 60, 80, 80))  # beside its triangle
    ids = [int(i) for i in layer.features["observation_id"]]
    with_kp = next(i for i in ids if synced.index.observation(i).has_keypoints)
    plain = next(i for i in ids if not synced.index.observation(i).has_keypoints)
    layer.selected_data = {ids.index(with_kp), ids.index(plain)}
    layer.remove_selected()

    disk = on_disk(synced)
    assert disk.observations(ids=[plain]) == []
    kept = disk.observation(with_kp)
    assert kept.box is None and kept.has_keypoints  # only the box went
    assert with_kp in set(synced.keypoints_layer.features["observation_id"])
    assert not {with_kp, plain} & set(layer.features["observation_id"])


def test_keypoints_attach_move_and_delete(opened) -> None:
    synced, changes = opened
    index, points = synced.index, synced.keypoints_layer
    synced.active_category = "triangle"
    synced.active_keypoint = "apex"
    triangle = index.category("triangle")
    # an image without triangles: a new point makes a keypoints-only observation
    bare = next(i for i in synced.image_ids()
                if not index.observations(images=[i], category="triangle"))
    synced.show_image(bare)
    z = synced.image_ids().index(bare)
    points.add([z, 10, 12])
    (added,) = on_disk(synced).observations(ids=changes[-1].ids)
    assert added.box is None and added.category_id == triangle.id
    assert added.keypoints[0] == (12.0, 10.0, 2) and added.keypoints[1][2] == 0
    assert points.features["observation_id"].iloc[-1] == added.id

    # a second apex on that image has no observation lacking an apex: a new observation
    assert synced.active_keypoint == "left"  # advanced after the click
    synced.active_keypoint = "apex"
    points.add([z, 40, 40])
    assert on_disk(synced).observation(int(points.features["observation_id"].iloc[-1])).id \
        != added.id
    # a "left" point attaches to the observation that lacks its "left"
    synced.active_keypoint = "left"
    points.add([z, 20, 20])
    assert len(changes) == 3
    assert points.features["observation_id"].iloc[-1] in {added.id, added.id + 1}

    # move the first apex: drag it in select mode
    row = int(np.flatnonzero((points.features["observation_id"] == added.id)
                             & (points.features["keypoint"] == "apex"))[0])
    points.mode = "select"
    points.selected_data = {row}
    drag(points, world((z, 10, 12)), world((z, 14, 15)))
    assert on_disk(synced).observation(added.id).keypoints[0] == (15.0, 14.0, 2)

    # delete it: visibility 0 (and the observation goes once nothing is left of it)
    points.selected_data = {row}
    points.remove_selected()
    left = on_disk(synced).observations(ids=[added.id])
    assert left == [] or left[0].keypoints[0][2] == 0


def test_new_keypoint_prefers_the_box_that_holds_it(opened) -> None:
    synced, _ = opened
    index, points = synced.index, synced.keypoints_layer
    synced.active_category = "triangle"
    synced.active_keypoint = "apex"
    image = index.image(synced.image_ids()[0])
    far = index.add_observation(image.id, "triangle", box=(0, 0, 10, 10))
    near = index.add_observation(image.id, "triangle", box=(50, 50, 80, 80))
    points.add([0, 60, 60])
    assert int(points.features["observation_id"].iloc[-1]) == near.id
    assert on_disk(synced).observation(near.id).keypoints[0] == (60.0, 60.0, 2)
    assert on_disk(synced).observation(far.id).keypoints is None


def test_a_keypoint_far_from_every_box_starts_its_own_observation(opened) -> None:
    """The layer and keypoint Complete share one rule (index.geometry.attach_target): a point
    near a box (within its diagonal) joins it, one far from every box does not."""
    synced, _ = opened
    index, points = synced.index, synced.keypoints_layer
    synced.active_category = "triangle"
    synced.active_keypoint = "apex"
    image = index.image(synced.image_ids()[0])
    index.delete_observations(o.id for o in index.observations(images=[image.id]))
    box = index.add_observation(image.id, "triangle", box=(10, 10, 20, 20))
    points.add([0, 25, 25])  # outside the box, within one diagonal of its centre
    assert int(points.features["observation_id"].iloc[-1]) == box.id
    synced.active_keypoint = "left"
    points.add([0, 110, 110])  # far from the only box
    loose = int(points.features["observation_id"].iloc[-1])
    assert loose != box.id
    assert on_disk(synced).observation(loose).box is None
    assert on_disk(synced).observation(box.id).keypoints[1][2] == 0


def test_api_edits_from_a_thread_reach_the_layers(opened, qtbot) -> None:
    synced, _ = opened
    index, boxes = synced.index, synced.boxes_layer
    image = synced.image_ids()[1]
    made: list[int] = []

    def worker() -> None:
        obs = index.add_observation(image, "disc", box=(1, 2, 11, 12), source="model",
                                    score=0.75)
        made.append(obs.id)
        index.update_observation(obs.id, box=(3, 4, 13, 14), source="model")

    synced.show_image(image)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: made and made[0] in set(boxes.features["observation_id"])
                    and boxes.data[-1][:, 2].min() == 3, timeout=5000)
    row = int(np.flatnonzero(boxes.features["observation_id"] == made[0])[0])
    assert boxes.features["source"].iloc[row] == "model"
    assert boxes.features["score"].iloc[row] == 0.75
    np.testing.assert_allclose(boxes.data[row][:, 1:].min(axis=0), (4, 3))
    assert boxes.data[row][0, 0] == 1  # plane of image_ids()[1]

    thread = threading.Thread(target=index.delete_observations, args=([made[0]],))
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: made[0] not in set(boxes.features["observation_id"]), timeout=5000)


def test_api_edit_on_the_main_thread_does_not_echo(opened) -> None:
    synced, changes = opened
    rows = len(synced.boxes_layer.data)
    obs = synced.index.add_observation(synced.image_ids()[0], "disc", box=(1, 1, 9, 9))
    assert len(changes) == 1  # the layer update wrote nothing back
    assert len(synced.boxes_layer.data) == rows + 1
    assert int(synced.boxes_layer.features["observation_id"].iloc[-1]) == obs.id


def test_refused_write_leaves_layer_as_the_index(opened, db_dump) -> None:
    synced, changes = opened
    layer = synced.boxes_layer
    row, obs_id = _first_box_row(synced)
    before = db_dump(synced.index)
    shifted = layer.data[row].copy()
    shifted[:, 1:] = -50  # entirely outside the image: refused, shown back where it was
    layer._data_view.edit(row, shifted)
    layer.events.data(value=layer.data, action="changed", data_indices=(row,),
                      vertex_indices=((),))
    assert changes == [] and db_dump(synced.index) == before
    box = synced.index.observation(obs_id).box
    assert layer.data[row][:, 2].min() == box[0] and layer.data[row][:, 1].max() == box[3]


def test_closing_the_viewer_stops_sync(make_napari_viewer, sample_index: Index) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(sample_index.path), plugin="napari-learn-complete")
    (synced,) = index_layers(viewer)
    shown = len(synced.boxes_layer.data)
    viewer.layers.clear()
    assert index_layers(viewer) == []
    sample_index.add_observation(1, "disc", box=(0, 0, 5, 5))  # no layer to update: no error
    assert len(synced.boxes_layer.data) == shown


def test_a_proxy_of_the_viewer_finds_and_opens_the_same_indexes(
    make_napari_viewer, sample_index: Index
) -> None:
    """Plugin widgets get a PublicOnlyProxy of the viewer; it must mean the viewer itself."""
    viewer = make_napari_viewer()
    proxy = PublicOnlyProxy(viewer)
    first = open_index(viewer, sample_index)
    assert index_layers(proxy) == [first]
    second = open_index(proxy, Index(sample_index.path))
    assert second.viewer is viewer
    assert index_layers(viewer) == index_layers(proxy) == [first, second]
