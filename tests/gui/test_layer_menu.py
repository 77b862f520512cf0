"""ROI / Keypoints > Learn / Complete in napari's layer-list context menu (app-model), and the
command palette commands: they exist, are enabled for our layers only, and run through the panel.
"""

from __future__ import annotations

import pytest
from napari._app_model import get_app_model
from napari._app_model.constants import MenuId
from napari._app_model.context import get_context
from napari._qt._qapp_model import build_qmodel_menu

from napari_learn_complete._napari.menus import action_id, register_menus
from napari_learn_complete._qt import commands, index_panel
from napari_learn_complete.model.registry import create_model

pytestmark = pytest.mark.gui


_MENUS: list = []  # keep the built menus alive while a test looks at their actions


def _layer_menu(viewer) -> dict[str, tuple[object, dict[str, object]]]:
    """Our submenus of the layer-list context menu, as napari builds it, updated like napari
    does before showing it: submenu title -> (submenu, {item title: QAction})."""
    menu = build_qmodel_menu(MenuId.LAYERLIST_CONTEXT)
    _MENUS[:] = [menu]
    menu.update_from_context(get_context(viewer.layers))
    found = {}
    for action in menu.actions():
        if action.menu() is not None and action.text() in ("ROI", "Keypoints"):
            sub = action.menu()
            found[action.text()] = (sub, {a.text(): a for a in sub.actions()})
    return found


def test_entries_exist_and_follow_the_selection(opened) -> None:
    viewer, layers = opened.viewer, opened.layers
    viewer.layers.selection.active = layers.boxes_layer
    entries = _layer_menu(viewer)
    assert set(entries) == {"ROI", "Keypoints"}
    for submenu, items in entries.values():
        assert submenu.isEnabled()
        assert set(items) == {"Learn", "Complete"}
        assert all(a.isEnabled() for a in items.values())
    other = viewer.add_points([[0, 1, 1]], name="not ours")
    viewer.layers.selection.active = other
    for submenu, items in _layer_menu(viewer).values():
        assert not submenu.isEnabled()
        assert not any(a.isEnabled() for a in items.values())


def test_registering_twice_adds_nothing(opened) -> None:
    before = len(get_app_model().menus.get_menu(MenuId.LAYERLIST_CONTEXT))
    register_menus(opened.viewer)
    assert len(get_app_model().menus.get_menu(MenuId.LAYERLIST_CONTEXT)) == before


def test_running_learn_opens_the_dialog_for_the_shown_image(opened, answers, monkeypatch) -> None:
    create_model(opened.index, weights="none")
    monkeypatch.setattr(commands, "index_panel", lambda viewer: opened.panel)
    opened.layers.show_image(3)
    opened.viewer.layers.selection.active = opened.layers.image_layer
    answers.next(accept=False)
    get_app_model().commands.execute_command(action_id("learn", "roi"))
    assert answers.seen == ["Learn"]
    assert opened.panel.selected_image_ids() == [3]  # no selection: the image shown
    assert not opened.panel.workers  # cancelled: nothing runs


def test_running_complete_starts_it(opened, answers, monkeypatch, qtbot) -> None:
    create_model(opened.index, weights="none", min_size=128)
    monkeypatch.setattr(commands, "index_panel", lambda viewer: opened.panel)
    opened.panel.select_images([8])
    opened.panel.set_active_category("square")
    opened.viewer.layers.selection.active = opened.layers.boxes_layer
    answers.next()
    get_app_model().commands.execute_command(action_id("complete", "roi"))
    assert answers.seen == ["Complete"]
    assert opened.panel.workers
    qtbot.waitUntil(lambda: not opened.panel.workers, timeout=240_000)
    assert opened.panel.session.last_run is not None
    assert opened.panel.undo_button.isEnabled()


def test_disabled_reason_is_shown_when_run_anyway(opened, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(commands, "show_info", shown.append)
    monkeypatch.setattr(index_panel, "show_info", shown.append)
    monkeypatch.setattr(commands, "index_panel", lambda viewer: opened.panel)
    opened.viewer.layers.selection.active = opened.layers.image_layer
    get_app_model().commands.execute_command(action_id("complete", "keypoints"))
    assert shown == ["No active model: create one in the Model panel"]


def test_command_palette_commands_act_on_the_panel_selection(opened, answers,
                                                            monkeypatch) -> None:
    create_model(opened.index, weights="none")
    monkeypatch.setattr(commands, "index_panel", lambda viewer: opened.panel)
    opened.panel.select_images([1, 2])
    answers.next(accept=False)
    commands.learn_selected_roi(opened.viewer)
    answers.next(accept=False)
    commands.complete_selected_roi(opened.viewer)
    assert answers.seen == ["Learn", "Complete"]
