"""The labeller's edits in the Index panel, on the real viewer: the keypoint to place, attributes
of the selected observations, reviewed images, human/model counts, the table following the
slider, video rows, and counts in words."""

from __future__ import annotations

import threading

import pytest
from qtpy.QtCore import Qt
from test_index_panel import cell, commit_in_thread, shown

from napari_learn_complete._qt.index_panel import VIDEO_NOT_SHOWN, ImageTableModel

pytestmark = pytest.mark.gui


def _changed_cells(model) -> list[tuple[int, int, int, int]]:
    """Records (first row, last row, first column, last column) of each dataChanged."""
    changed: list[tuple[int, int, int, int]] = []
    model.dataChanged.connect(lambda first, last, _roles: changed.append(
        (first.row(), last.row(), first.column(), last.column())))
    return changed


def select_observation(layers, obs_id: int) -> None:
    """Select the box of observation ``obs_id`` in the boxes layer, as a click does."""
    column = layers.boxes_layer.features["observation_id"].to_numpy()
    layers.boxes_layer.selected_data = {int(column.tolist().index(obs_id))}


def test_keypoint_to_place_follows_the_category_and_the_layers(opened, qtbot) -> None:
    panel, layers, index = opened.panel, opened.layers, opened.index
    combo = panel.keypoint_choice
    names = list(index.category("triangle").keypoint_names)
    assert len(names) == 3

    panel.set_active_category("triangle")
    assert [combo.itemText(i) for i in range(combo.count())] == names
    assert combo.isEnabled() and combo.currentText() == layers.active_keypoint == names[0]

    combo.setCurrentIndex(2)  # the user chooses: the next click places it
    assert layers.active_keypoint == names[2]
    layers.active_keypoint = names[1]  # the layers move on (after a click): the choice follows
    assert combo.currentText() == names[1]

    panel.set_active_category("disc")
    assert not combo.isEnabled()
    assert [combo.itemText(i) for i in range(combo.count())] == ["disc has no keypoints"]
    assert layers.active_keypoint is None


def test_attributes_are_set_on_the_selected_observations_and_filter(opened, qtbot) -> None:
    panel, layers, index = opened.panel, opened.layers, opened.index
    layers.show_image(1)
    obs_id = next(o.id for o in index.observations(images=[1]) if o.box is not None)
    select_observation(layers, obs_id)
    assert layers.selected_observation_ids() == [obs_id]
    source = index.observation(obs_id).source
    assert panel.selection_attributes.text() == "1 observation selected: no attributes"

    panel.attribute_key.setText("quality")
    panel.attribute_value.setText("blurry")
    qtbot.mouseClick(panel.set_attribute_button, Qt.MouseButton.LeftButton)
    assert index.observation(obs_id).attributes == {"quality": "blurry"}
    assert index.observation(obs_id).source == source  # tagging does not make it a person's
    select_observation(layers, obs_id)  # (the layers re-add an updated box, unselected)
    assert panel.selection_attributes.text() == "1 observation selected: quality = blurry"
    qtbot.waitUntil(lambda: panel.attribute_filter.findText("quality = blurry") > 0)
    panel.attribute_filter.setCurrentIndex(panel.attribute_filter.findText("quality = blurry"))
    qtbot.waitUntil(lambda: shown(panel) == [1])

    qtbot.mouseClick(panel.remove_attribute_button, Qt.MouseButton.LeftButton)
    assert index.observation(obs_id).attributes == {}
    select_observation(layers, obs_id)
    assert panel.selection_attributes.text() == "1 observation selected: no attributes"
    qtbot.waitUntil(lambda: panel.attribute_filter.findText("quality = blurry") < 0)
    qtbot.waitUntil(lambda: len(shown(panel)) == 12)  # the filter's choice is gone: all again


def test_mark_reviewed_shows_a_check_and_filters(opened, qtbot) -> None:
    panel, layers, index = opened.panel, opened.layers, opened.index
    changed = _changed_cells(panel.image_model)

    panel.select_images([2, 3])
    qtbot.mouseClick(panel.reviewed_button, Qt.MouseButton.LeftButton)
    assert [im.id for im in index.images(reviewed=True)] == [2, 3]
    qtbot.waitUntil(lambda: cell(panel, 3, ImageTableModel.REVIEWED) == "✓")
    assert cell(panel, 2, ImageTableModel.REVIEWED) == "✓"
    assert cell(panel, 4, ImageTableModel.REVIEWED) == ""
    row = panel.image_model.row_of(2)
    assert changed == [(row, row + 1, ImageTableModel.REVIEWED, ImageTableModel.REVIEWED)]

    panel.table.clearSelection()  # nothing selected: the image shown is meant
    layers.show_image(5)
    qtbot.mouseClick(panel.reviewed_button, Qt.MouseButton.LeftButton)
    panel.select_images([2])
    qtbot.mouseClick(panel.not_reviewed_button, Qt.MouseButton.LeftButton)
    assert [im.id for im in index.images(reviewed=True)] == [3, 5]
    qtbot.waitUntil(lambda: cell(panel, 2, ImageTableModel.REVIEWED) == "")

    filter_ = panel.review_filter
    filter_.setCurrentIndex(filter_.findText("Reviewed"))
    qtbot.waitUntil(lambda: shown(panel) == [3, 5])
    filter_.setCurrentIndex(filter_.findText("Not reviewed"))
    qtbot.waitUntil(lambda: shown(panel) == [i for i in range(1, 13) if i not in (3, 5)])


def test_human_and_model_observations_are_counted_apart(opened, qtbot) -> None:
    panel, index = opened.panel, opened.index
    human = cell(panel, 9, ImageTableModel.HUMAN)
    assert cell(panel, 9, ImageTableModel.MODEL) == "0"
    changed = _changed_cells(panel.image_model)
    commit_in_thread(index.add_observations, [
        {"image": 9, "category": "square", "box": (1, 1, 9, 9), "source": "model",
         "score": 0.9},
        {"image": 9, "category": "disc", "box": (2, 2, 8, 8), "source": "model", "score": 0.8},
    ])
    qtbot.waitUntil(lambda: cell(panel, 9, ImageTableModel.MODEL) == "2")
    assert cell(panel, 9, ImageTableModel.HUMAN) == human
    row = panel.image_model.row_of(9)
    assert changed == [(row, row, ImageTableModel.MODEL, ImageTableModel.MODEL)]


def test_the_category_filter_reads_in_the_reader_thread(opened, qtbot, monkeypatch) -> None:
    """The images a filter passes grow with the index (0.4 s at 20k images): the main thread
    only shows them."""
    panel, index = opened.panel, opened.index
    readers: list[threading.Thread] = []
    images = index.images

    def recorded(**kwargs):
        if kwargs.get("category") is not None:
            readers.append(threading.current_thread())
        return images(**kwargs)

    monkeypatch.setattr(index, "images", recorded)
    panel.category_filter.setCurrentIndex(panel.category_filter.findData("square"))
    squares = [im.id for im in images(category="square")]
    qtbot.waitUntil(lambda: shown(panel) == squares)
    assert readers and threading.main_thread() not in readers


def test_the_current_row_follows_the_slider(opened, qtbot, monkeypatch) -> None:
    panel, layers, index = opened.panel, opened.layers, opened.index
    first = index.images()[0]
    assert panel.current_label.text() == f"Image 1 / 12 · {first.name}"
    panel.select_images([2, 3])
    moves: list[int] = []
    monkeypatch.setattr(layers, "show_image", moves.append)  # the panel must not move it back

    seventh = index.images()[6]
    dims = opened.viewer.dims
    dims.set_point(dims.ndim - 3, layers.image_ids().index(seventh.id))
    assert panel._image_id(panel.table.currentIndex().row()) == seventh.id
    assert panel.current_label.text() == f"Image 7 / 12 · {seventh.name}"
    assert moves == []
    assert panel.selected_image_ids() == [2, 3]  # the selection is the user's scope: kept


def test_a_video_row_says_it_is_not_shown(opened, qtbot, tmp_path) -> None:
    panel, layers, index = opened.panel, opened.layers, opened.index
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    video = index.add_video(clip, width=64, height=48)
    qtbot.waitUntil(lambda: panel.image_model.rowCount() == 13)
    shown_before = layers.current_image_id()

    panel.table.selectRow(shown(panel).index(video.id))
    assert panel.current_label.text() == f"{video.name}: {VIDEO_NOT_SHOWN}"
    assert layers.current_image_id() == shown_before
    panel.table.selectRow(3)  # and the panel keeps working
    assert layers.current_image_id() == shown(panel)[3]


def test_counts_are_in_words_with_plurals(opened, qtbot) -> None:
    panel, index = opened.panel, opened.index
    index.add_category("lone")
    index.add_observation(1, "lone", box=(1, 1, 9, 9))
    qtbot.waitUntil(lambda: "lone" in panel._cards
                    and panel._cards["lone"].counts.text() == "1 image · 1 box · 0 keypoints")
    index.add_observation(2, "lone", box=(1, 1, 9, 9))
    index.add_observation(2, "lone", box=(2, 2, 9, 9))
    qtbot.waitUntil(
        lambda: panel._cards["lone"].counts.text() == "2 images · 3 boxes · 0 keypoints")
