"""The Index panel on the real viewer: cards, counts, filters, navigation and menu enablement."""

from __future__ import annotations

import threading

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QMenu

from napari_learn_complete.model.registry import create_model

pytestmark = pytest.mark.gui


def _actions(menu: QMenu) -> dict[str, object]:
    """'ROI/Learn' -> QAction for the image menu, 'Learn' -> QAction for a flat menu."""
    found = {}
    for action in menu.actions():
        if action.menu() is not None:
            for sub in action.menu().actions():
                found[f"{action.text()}/{sub.text()}"] = sub
        else:
            found[action.text()] = action
    return found


def _state(menu: QMenu) -> dict[str, tuple[bool, str]]:
    return {name: (a.isEnabled(), a.toolTip()) for name, a in _actions(menu).items()}


def test_cards_table_and_counts(opened) -> None:
    panel, index = opened.panel, opened.index
    assert list(panel._cards) == ["disc", "square", "triangle"]
    counts = index.counts()
    disc = counts["disc"]
    assert panel._cards["disc"].counts.text() == (
        f"{disc['images']} images · {disc['boxes']} boxes · {disc['keypoints']} keypoints"
    )
    assert panel.table.rowCount() == 12
    first = index.images()[0]
    observations = len(index.observations(images=[first.id]))
    assert [panel.table.item(0, c).text() for c in range(3)] == [
        first.name, f"{first.width}×{first.height}", str(observations)
    ]


def test_counts_follow_changes_made_in_another_thread(opened, qtbot) -> None:
    panel, index = opened.panel, opened.index
    before = index.counts()["square"]["boxes"]
    image = index.images()[-1]
    thread = threading.Thread(
        target=index.add_observation, args=(image.id, "square"), kwargs={"box": (1, 1, 9, 9)}
    )
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: f"{before + 1} boxes" in panel._cards["square"].counts.text())
    assert panel.table.item(11, 2).text() == str(len(index.observations(images=[image.id])))


def test_filters(opened) -> None:
    panel, index = opened.panel, opened.index
    obs = index.observations(category="square")[0]
    index.update_observation(obs.id, attributes={"quality": "blurry"})
    panel._apply_changes()  # what the change event schedules
    panel.category_filter.setCurrentIndex(panel.category_filter.findData("square"))
    square_ids = [im.id for im in index.images(category="square")]
    assert panel._ids == square_ids
    panel.category_filter.setCurrentIndex(0)
    assert panel.attribute_filter.findText("quality = blurry") > 0
    panel.attribute_filter.setCurrentIndex(panel.attribute_filter.findText("quality = blurry"))
    assert panel._ids == [obs.image_id]

    panel.attribute_filter.setCurrentIndex(0)
    panel.select_images([2, 5])
    visible = lambda: [i for r, i in enumerate(panel._ids) if not panel.table.isRowHidden(r)]  # noqa: E731
    panel.selection_filter.setCurrentText("Selected")
    assert visible() == [2, 5]
    panel.selection_filter.setCurrentText("Unselected")
    assert visible() == [i for i in range(1, 13) if i not in (2, 5)]
    panel.selection_filter.setCurrentText("All images")
    assert len(visible()) == 12 and panel.selected_image_ids() == [2, 5]


def test_selecting_a_row_shows_the_image(opened) -> None:
    opened.panel.table.selectRow(4)
    assert opened.layers.current_image_id() == opened.panel._ids[4]


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


def test_image_menu_without_model(opened) -> None:
    opened.panel.select_images([1])
    state = _state(opened.panel.image_menu())
    assert state["ROI/Learn"] == (False, "No active model: create one in the Model panel")


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
    opened.index.add_category("empty")
    opened.panel._apply_changes()
    assert _state(opened.panel.category_menu("empty")) == {
        "Learn": (False, "Category 'empty' has no observations yet"),
        "Complete": (False, "Category 'empty' has no observations yet"),
    }
    assert all(enabled for enabled, _ in _state(opened.panel.category_menu("disc")).values())


def test_image_names_get_the_room_and_numbers_fit(opened, qtbot) -> None:
    panel = opened.panel
    opened.viewer.window._qt_window.resize(1400, 900)
    opened.viewer.show()
    qtbot.waitExposed(panel.table)
    table = panel.table
    metrics = table.fontMetrics()
    longest = max(metrics.horizontalAdvance(table.item(r, 0).text())
                  for r in range(table.rowCount()))
    assert table.columnWidth(0) >= longest + 8  # whole names, not "sample_000...."
    header = table.horizontalHeader()
    for column in (1, 2):  # as wide as their header or values need, not stretched
        fitted = max(header.sectionSizeHint(column), table.sizeHintForColumn(column))
        assert table.columnWidth(column) == fitted
