"""The panels as the Plugins menu opens them: napari hands them a proxy of the viewer (not the
viewer), and they must still find the index open in it, whatever layer is active."""

from __future__ import annotations

import pytest

from napari_learn_complete._napari.layers import open_index
from napari_learn_complete._qt.index_panel import IndexPanel
from napari_learn_complete._qt.model_panel import ModelPanel
from napari_learn_complete.index import Index

pytestmark = pytest.mark.gui

PLUGIN = "napari-learn-complete"


def test_panels_docked_from_the_plugins_menu_find_the_index(
    make_napari_viewer, sample_index: Index, qtbot, monkeypatch
) -> None:
    viewer = make_napari_viewer()
    layers = open_index(viewer, sample_index)
    _, index_panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Index panel")
    _, model_panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Model panel")
    assert isinstance(index_panel, IndexPanel) and isinstance(model_panel, ModelPanel)
    qtbot.waitUntil(lambda: model_panel.index is sample_index)
    assert index_panel.layers is layers
    assert index_panel.table.model().rowCount() == len(sample_index.images())
    assert "No index open" not in model_panel.index_label.text()

    looked: list[bool] = []  # the model panel looks again once napari's insert is done
    follow = model_panel._follow_open_index
    with monkeypatch.context() as watch:
        watch.setattr(model_panel, "_follow_open_index", lambda: (follow(), looked.append(True)))
        viewer.add_points([[0, 10, 10]], name="unrelated")  # inserted and made active
        viewer.layers.selection.active = viewer.layers["unrelated"]
        qtbot.waitUntil(lambda: bool(looked))
    assert index_panel.layers is layers
    assert index_panel.index_label.text() == f"Index: <b>{sample_index.path.name}</b>"
    assert model_panel.index is sample_index


def test_the_plugins_menu_shows_the_plugin_name_as_written(make_napari_viewer) -> None:
    """napari 0.9 titles the plugin's submenu with the manifest's display name unescaped: an
    "&" in it would be taken as a mnemonic ("Learn _Complete")."""
    viewer = make_napari_viewer()
    bar = viewer.window._qt_window.menuBar()
    plugins = next(a.menu() for a in bar.actions() if a.text().replace("&", "") == "Plugins")
    submenus = {a.text(): a.menu() for a in plugins.actions() if a.menu() is not None}
    assert [t for t in submenus if "Complete" in t] == ["Learn and Complete"], list(submenus)
    entries = {a.text() for a in submenus["Learn and Complete"].actions()}
    assert {"Index panel", "Model panel"} <= entries
