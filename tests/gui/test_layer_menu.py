"""ROI / Keypoints > Learn / Complete in napari's layer-list context menu (app-model), and the
command palette commands: they exist, are enabled for our layers only, and run through the Index
panel, which they dock the way the Plugins menu does when it is not open yet. Nothing is patched:
the entries napari builds are triggered and the panel napari docked is looked at.
"""

from __future__ import annotations

import pytest
from napari._app_model import get_app_model
from napari._app_model.constants import MenuId
from napari._app_model.context import get_context
from napari._qt._qapp_model import build_qmodel_menu

from napari_learn_complete._napari.layers import IndexLayers, open_index
from napari_learn_complete._napari.menus import action_id, register_menus
from napari_learn_complete._qt import commands, index_panel
from napari_learn_complete._qt.index_panel import IndexPanel
from napari_learn_complete.actions import NO_MODEL
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import create_model
from untrained import untrained_model

pytestmark = pytest.mark.gui
PLUGIN = "napari-learn-complete"

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


def _docked_panels(viewer) -> list[IndexPanel]:
    return [w for w in viewer.window.dock_widgets.values() if isinstance(w, IndexPanel)]


def _dock_from_the_plugins_menu(viewer) -> IndexPanel:
    return viewer.window.add_plugin_dock_widget(PLUGIN, "Index panel")[1]


@pytest.fixture
def shown(make_napari_viewer, sample_index: Index) -> IndexLayers:
    """The sample index open in a real viewer: its layers, no panel docked yet."""
    return open_index(make_napari_viewer(), sample_index)


class Asked:
    """What the dialogs the entries opened said: (scope line, the widget they belong to)."""

    def __init__(self) -> None:
        self.dialogs: list[tuple[str, object]] = []

    def __call__(self, dialog) -> None:
        self.dialogs.append((dialog._magic_widget[0].value, dialog.parentWidget()))


def test_entries_exist_and_follow_the_selection(shown: IndexLayers) -> None:
    viewer = shown.viewer
    viewer.layers.selection.active = shown.boxes_layer
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


def test_registering_twice_adds_nothing(shown: IndexLayers) -> None:
    before = len(get_app_model().menus.get_menu(MenuId.LAYERLIST_CONTEXT))
    register_menus(shown.viewer)
    assert len(get_app_model().menus.get_menu(MenuId.LAYERLIST_CONTEXT)) == before


def test_learn_docks_the_panel_and_asks_about_the_shown_image(shown: IndexLayers,
                                                              answers) -> None:
    viewer = shown.viewer
    create_model(shown.index, weights="none", min_size=128)
    shown.show_image(3)
    viewer.layers.selection.active = shown.image_layer
    assert _docked_panels(viewer) == []
    asked = Asked()
    answers.next(accept=False, edit=asked)
    _layer_menu(viewer)["ROI"][1]["Learn"].trigger()
    assert answers.seen == ["Learn"]
    [panel] = _docked_panels(viewer)  # docked by the entry, as the Plugins menu docks it
    assert asked.dialogs == [("Learn boxes on 1 selected image(s)", panel)]
    assert panel.layers is shown and panel.selected_image_ids() == [3]  # none selected: shown
    assert not panel.workers  # cancelled: nothing runs


def test_complete_runs_on_the_panel_already_docked(shown: IndexLayers, answers, qtbot) -> None:
    viewer, index = shown.viewer, shown.index
    untrained_model(index)  # keeps every detection: Complete writes its best box
    panel = _dock_from_the_plugins_menu(viewer)
    panel.select_images([8])
    panel.set_active_category("square")
    viewer.layers.selection.active = shown.boxes_layer
    answers.next()
    _layer_menu(viewer)["ROI"][1]["Complete"].trigger()
    assert answers.seen == ["Complete"]
    assert _docked_panels(viewer) == [panel] and panel.workers  # that panel runs it
    qtbot.waitUntil(lambda: not panel.workers, timeout=240_000)
    [written] = index.observations(source="model")
    assert (written.image_id, index.category(written.category_id).name) == (8, "square")
    assert panel.session.last_run == (index, written.run_id)
    assert panel.undo_button.isEnabled()


def test_disabled_reason_is_shown_when_run_anyway(shown: IndexLayers, monkeypatch) -> None:
    shown_infos: list[str] = []
    monkeypatch.setattr(commands, "show_info", shown_infos.append)
    monkeypatch.setattr(index_panel, "show_info", shown_infos.append)
    shown.viewer.layers.selection.active = shown.image_layer
    get_app_model().commands.execute_command(action_id("complete", "keypoints")).result()
    assert shown_infos == [NO_MODEL]
    [panel] = _docked_panels(shown.viewer)
    assert not panel.workers


def test_command_palette_commands_act_on_the_panel_selection(shown: IndexLayers,
                                                            answers) -> None:
    viewer = shown.viewer
    create_model(shown.index, weights="none", min_size=128)
    panel = _dock_from_the_plugins_menu(viewer)
    panel.select_images([1, 2])
    panel.set_active_category("square")
    asked = Asked()
    answers.next(accept=False, edit=asked)
    commands.learn_selected_roi(viewer)
    answers.next(accept=False, edit=asked)
    commands.complete_selected_roi(viewer)
    assert answers.seen == ["Learn", "Complete"]
    assert [scope for scope, _ in asked.dialogs] == [
        "Learn boxes on 2 selected image(s)",
        "Complete boxes on 2 selected image(s) into category 'square'"]
    assert {parent for _, parent in asked.dialogs} == {panel}
    assert _docked_panels(viewer) == [panel]
