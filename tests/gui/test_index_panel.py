"""The Index panel on the real viewer: cards, counts, filters, navigation and menu enablement."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMenu

from napari_learn_complete._qt.index_panel import ImageTableModel, IndexPanel
from napari_learn_complete.model.registry import create_model

pytestmark = pytest.mark.gui


def _actions(menu: QMenu) -> dict[str, object]:
    """'ROI/Learn' -> QAction for the image menu, 'Learn (ROI)' -> QAction for a flat menu."""
    found = {}
    for action in menu.actions():
        if action.menu() is not None:
            for sub in action.menu().actions():
                found[f"{action.text()}/{sub.text()}"] = sub
        elif not action.isSeparator():
            found[action.text()] = action
    return found


def _state(menu: QMenu) -> dict[str, tuple[bool, str]]:
    return {name: (a.isEnabled(), a.toolTip()) for name, a in _actions(menu).items()}


def commit_in_thread(write: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Write to the index from another thread, as a Complete in a worker does, and wait."""
    thread = threading.Thread(target=write, args=args, kwargs=kwargs)
    thread.start()
    thread.join()


def shown(panel: IndexPanel) -> list[int]:
    """Image ids of the rows the table shows, top to bottom (passing the filters, not hidden)."""
    rows = panel.image_filter
    return [panel.image_model.image_id(rows.mapToSource(rows.index(row, 0)).row())
            for row in range(rows.rowCount()) if not panel.table.isRowHidden(row)]


def cell(panel: IndexPanel, image_id: int, column: int) -> str:
    """The text the table shows for an image, read through the view's own model."""
    rows = panel.image_filter
    source = panel.image_model.index(panel.image_model.row_of(image_id), column)
    return rows.data(rows.mapFromSource(source))


def test_cards_table_and_counts(opened) -> None:
    panel, index = opened.panel, opened.index
    assert list(panel._cards) == ["disc", "square", "triangle"]
    counts = index.counts()
    disc = counts["disc"]
    assert panel._cards["disc"].counts.text() == (
        f"{disc['images']} images · {disc['boxes']} boxes · {disc['keypoints']} keypoints"
    )
    assert panel.table.model().rowCount() == 12
    assert shown(panel) == [image.id for image in index.images()]
    first = index.images()[0]
    observations = len(index.observations(images=[first.id]))
    assert [cell(panel, first.id, column) for column in range(5)] == [
        first.name, f"{first.width}×{first.height}", str(observations), "0", ""
    ]
    assert [panel.table.model().headerData(c, Qt.Orientation.Horizontal) for c in range(5)] == [
        "Name", "Size", "Human", "Model", "Reviewed"
    ]


def test_counts_follow_changes_made_in_another_thread(opened, qtbot) -> None:
    panel, index = opened.panel, opened.index
    before = index.counts()["square"]["boxes"]
    image = index.images()[-1]
    commit_in_thread(index.add_observation, image.id, "square", box=(1, 1, 9, 9))
    qtbot.waitUntil(lambda: f"{before + 1} boxes" in panel._cards["square"].counts.text())
    assert cell(panel, image.id, ImageTableModel.HUMAN) == str(
        len(index.observations(images=[image.id]))
    )


def test_counts_change_in_place_and_the_selection_stays(opened, qtbot) -> None:
    """A Complete batch (observations committed in a worker thread) changes only the count
    cells of its images: no reset, no layout change, no rebuilt filter choices; the user's
    selection and current row are kept."""
    panel, index, model = opened.panel, opened.index, opened.panel.image_model
    panel.select_images([2, 5, 9])
    current = panel.image_filter.mapFromSource(model.index(model.row_of(5), 0))
    panel.table.selectionModel().setCurrentIndex(
        current, panel.table.selectionModel().SelectionFlag.NoUpdate
    )
    changed, rebuilt = [], []
    model.dataChanged.connect(
        lambda first, last, roles: changed.append((first.row(), last.row(), first.column(),
                                                   last.column()))
    )
    for signal in (model.modelReset, model.layoutChanged, model.rowsInserted, model.rowsRemoved,
                   panel.attribute_filter.model().rowsRemoved):  # an open choice list stays
        signal.connect(lambda *_: rebuilt.append(True))
    before = {image.id: cell(panel, image.id, ImageTableModel.HUMAN) for image in index.images()}

    commit_in_thread(index.add_observations, [
        {"image": 9, "category": "square", "box": (1, 1, 9, 9)},
        {"image": 9, "category": "disc", "box": (2, 2, 8, 8)},
    ])
    qtbot.waitUntil(lambda: cell(panel, 9, ImageTableModel.HUMAN) == str(int(before[9]) + 2))

    row = model.row_of(9)
    assert changed == [(row, row, ImageTableModel.HUMAN, ImageTableModel.HUMAN)]
    assert not rebuilt
    after = {image.id: cell(panel, image.id, ImageTableModel.HUMAN) for image in index.images()}
    assert {i for i in after if after[i] != before[i]} == {9}
    assert panel.selected_image_ids() == [2, 5, 9]
    assert panel.table.currentIndex().row() == current.row()


def test_new_images_are_inserted_rows_and_the_selection_stays(opened, qtbot, tmp_path) -> None:
    panel, index, model = opened.panel, opened.index, opened.panel.image_model
    panel.select_images([3, 4])
    inserted, reset = [], []
    model.rowsInserted.connect(lambda _parent, first, last: inserted.append((first, last)))
    model.modelReset.connect(lambda: reset.append(True))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    commit_in_thread(index.add_video, clip, width=64, height=48)
    qtbot.waitUntil(lambda: model.rowCount() == 13)
    assert inserted == [(12, 12)] and not reset
    assert shown(panel)[-1] == index.images()[-1].id
    assert cell(panel, index.images()[-1].id, ImageTableModel.SIZE) == "64×48"
    assert panel.selected_image_ids() == [3, 4]


def test_filters(opened, qtbot) -> None:
    panel, index = opened.panel, opened.index
    obs = index.observations(category="square")[0]
    index.update_observation(obs.id, attributes={"quality": "blurry"})
    qtbot.waitUntil(lambda: panel.attribute_filter.findText("quality = blurry") > 0)
    panel.category_filter.setCurrentIndex(panel.category_filter.findData("square"))
    square_ids = [im.id for im in index.images(category="square")]
    assert len(square_ids) < 12
    qtbot.waitUntil(lambda: shown(panel) == square_ids)
    panel.category_filter.setCurrentIndex(0)
    qtbot.waitUntil(lambda: shown(panel) == list(range(1, 13)))
    panel.attribute_filter.setCurrentIndex(panel.attribute_filter.findText("quality = blurry"))
    qtbot.waitUntil(lambda: shown(panel) == [obs.image_id])
    panel.category_filter.setCurrentIndex(panel.category_filter.findData("disc"))
    qtbot.waitUntil(lambda: shown(panel) == [i for i in [obs.image_id] if i in
                                             {im.id for im in index.images(category="disc")}])

    panel.category_filter.setCurrentIndex(0)
    panel.attribute_filter.setCurrentIndex(0)
    qtbot.waitUntil(lambda: len(shown(panel)) == 12)
    panel.select_images([2, 5])
    panel.selection_filter.setCurrentText("Selected")
    assert shown(panel) == [2, 5]
    panel.selection_filter.setCurrentText("Unselected")
    assert shown(panel) == [i for i in range(1, 13) if i not in (2, 5)]
    assert panel.selected_image_ids() == [] and panel.selected_image_ids(visible_only=False) == [
        2, 5]
    panel.selection_filter.setCurrentText("All images")
    assert len(shown(panel)) == 12 and panel.selected_image_ids() == [2, 5]


def test_filters_follow_the_index_and_keep_the_selection(opened, qtbot) -> None:
    """With a category filter on, an image that gets an observation of that category (a
    Complete writing into it) joins the table; the rows already selected stay selected; and a
    new row under "Selected" stays hidden until it is selected."""
    panel, index = opened.panel, opened.index
    panel.category_filter.setCurrentIndex(panel.category_filter.findData("triangle"))
    triangles = [im.id for im in index.images(category="triangle")]
    assert 10 not in triangles
    qtbot.waitUntil(lambda: shown(panel) == triangles)
    panel.select_images(triangles[:2])
    panel.selection_filter.setCurrentText("Selected")
    assert shown(panel) == triangles[:2]

    commit_in_thread(index.add_observation, 10, "triangle", box=(1, 1, 9, 9))
    qtbot.waitUntil(lambda: panel.image_filter.rowCount() == len(triangles) + 1)
    assert shown(panel) == triangles[:2]  # 10 is in, but not selected: hidden
    panel.selection_filter.setCurrentText("All images")
    assert shown(panel) == sorted([*triangles, 10])
    assert panel.selected_image_ids() == triangles[:2]


def test_selecting_a_row_shows_the_image(opened) -> None:
    opened.panel.table.selectRow(4)
    assert opened.layers.current_image_id() == shown(opened.panel)[4]


def test_a_filter_does_not_move_the_viewer(opened, qtbot) -> None:
    """Rows the table moves itself (filtered out, inserted) move its current row, but only the
    user's moves show another image."""
    panel, layers = opened.panel, opened.layers
    panel.table.selectRow(10)  # image 11: no observation, so the category filter drops it
    assert layers.current_image_id() == 11
    panel.category_filter.setCurrentIndex(panel.category_filter.findData("disc"))
    qtbot.waitUntil(lambda: 11 not in shown(panel))
    assert layers.current_image_id() == 11


def test_clicking_a_card_sets_the_active_category(opened, qtbot) -> None:
    card = opened.panel._cards["triangle"]
    qtbot.mouseClick(card, Qt.MouseButton.LeftButton)
    assert opened.layers.active_category == "triangle"
    assert card.title.text().startswith("<b>▶")
    opened.layers.active_category = "square"  # set elsewhere: the cards follow
    assert opened.panel._cards["square"].title.text().startswith("<b>▶")
    assert not card.title.text().startswith("<b>▶")


def test_image_menu_without_selection(opened) -> None:
    create_model(opened.index, weights="none")
    state = _state(opened.panel.image_menu())
    assert set(state) == {"ROI/Learn", "ROI/Complete", "Keypoints/Learn", "Keypoints/Complete"}
    assert all(s == (False, "Select at least one image") for s in state.values())


NO_MODEL = "No model yet: run Learn (it offers to create one) or create one in the Model panel"


def test_without_model_learn_is_offered_and_complete_says_why(opened) -> None:
    """The sample index has no model: Learn stays available (it creates one), Complete is
    disabled with the way out, in the image menu and on the cards."""
    opened.panel.select_images([1])
    opened.panel.set_active_category("triangle")
    state = _state(opened.panel.image_menu())
    assert state["ROI/Learn"] == (True, "Learn (ROI) on the selected images")
    assert state["Keypoints/Learn"][0]
    assert state["ROI/Complete"] == state["Keypoints/Complete"] == (False, NO_MODEL)
    card = _state(opened.panel.category_menu("triangle"))
    assert card["Learn (ROI)"] == (True, "Learn (ROI) for category 'triangle'")
    assert card["Complete (ROI)"] == card["Complete (Keypoints)"] == (False, NO_MODEL)


def test_image_menu_box_model_roi_enabled_keypoints_not(opened) -> None:
    create_model(opened.index, weights="none")
    opened.panel.select_images([1, 2])
    opened.panel.set_active_category("triangle")
    state = _state(opened.panel.image_menu())
    assert state["ROI/Learn"][0] and state["ROI/Complete"][0]
    assert state["Keypoints/Learn"] == (False, "The active model does not support keypoints")
    assert state["Keypoints/Complete"] == (False, "The active model does not support keypoints")


def test_image_menu_roi_disabled_on_category(opened) -> None:
    create_model(opened.index, weights="none")
    opened.index.update_category("disc", roi_enabled=False)
    opened.panel.select_images([1])
    opened.panel.set_active_category("disc")
    state = _state(opened.panel.image_menu())
    assert state["ROI/Complete"] == (False, "ROI is not enabled for category 'disc'")


def test_image_menu_keypoints_not_enabled_for_category(opened) -> None:
    create_model(opened.index, keypoints=True, weights="none")
    opened.panel.select_images([1])
    opened.panel.set_active_category("square")
    state = _state(opened.panel.image_menu())
    assert state["Keypoints/Learn"] == (False, "Keypoints are not enabled for category 'square'")
    assert state["ROI/Learn"][0]
    opened.panel.set_active_category("triangle")
    assert all(enabled for enabled, _ in _state(opened.panel.image_menu()).values())


def test_category_menu_needs_an_observation(opened) -> None:
    opened.index.add_category("empty", keypoints=["tip"])
    opened.panel._apply_changes()
    no_observation = (False, "Category 'empty' has no observations yet")
    assert _state(opened.panel.category_menu("empty")) == {
        "Learn (ROI)": no_observation, "Complete (ROI)": no_observation,
        "Learn (Keypoints)": no_observation, "Complete (Keypoints)": no_observation,
    }


def test_category_menu_keypoints_need_keypoints_on_the_category(opened) -> None:
    """Learn and Complete of each kind, directly in the card's menu; the Keypoints ones are
    enabled only for a category with keypoints switched on, with the reason as tooltip."""
    create_model(opened.index, keypoints=True, weights="none")
    disc = _state(opened.panel.category_menu("disc"))
    assert list(disc) == ["Learn (ROI)", "Complete (ROI)", "Learn (Keypoints)",
                          "Complete (Keypoints)"]
    assert disc["Learn (ROI)"] == (True, "Learn (ROI) for category 'disc'")
    assert disc["Complete (ROI)"][0]
    assert disc["Learn (Keypoints)"] == disc["Complete (Keypoints)"] == (
        False, "Keypoints are not enabled for category 'disc'"
    )
    assert all(enabled for enabled, _ in _state(opened.panel.category_menu("triangle")).values())


def test_image_names_get_the_room_and_numbers_fit(opened, qtbot) -> None:
    panel = opened.panel
    opened.viewer.window._qt_window.resize(1400, 900)
    opened.viewer.show()
    qtbot.waitExposed(panel.table)
    table = panel.table
    metrics = table.fontMetrics()
    longest = max(metrics.horizontalAdvance(cell(panel, i, ImageTableModel.NAME))
                  for i in shown(panel))
    assert table.columnWidth(ImageTableModel.NAME) >= longest + 8  # whole names, not "sample_0…"
    header = table.horizontalHeader()
    for column in range(ImageTableModel.SIZE, len(ImageTableModel.COLUMNS)):  # as they need
        fitted = max(header.sectionSizeHint(column), table.sizeHintForColumn(column))
        assert table.columnWidth(column) == fitted
