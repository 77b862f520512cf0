"""Entry points napari calls by name: the command palette (npe2 commands in ``napari.yaml``) and
the layer-list context menu (app-model actions registered by ``_napari/menus.py``, which names
these functions as strings, so ``_napari`` never imports ``_qt``). Each goes through the Index
panel, so the rules, dialogs, captured target and runner are the same as from the panel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
from napari.components import LayerList  # resolved at run time: napari injects it
from napari.utils.notifications import show_info

from .._napari.layers import layers_for
from .index_panel import IndexPanel, index_panel


# ----------------------------------------------------------------- command palette
def learn_selected_roi(viewer: napari.Viewer) -> None:
    """Learn boxes on the images selected in the Index panel."""
    index_panel(viewer).learn_images("roi")


def complete_selected_roi(viewer: napari.Viewer) -> None:
    """Complete boxes on the images selected in the Index panel."""
    index_panel(viewer).complete_images("roi")


def learn_selected_keypoints(viewer: napari.Viewer) -> None:
    """Learn keypoints on the images selected in the Index panel."""
    index_panel(viewer).learn_images("keypoints")


def complete_selected_keypoints(viewer: napari.Viewer) -> None:
    """Complete keypoints on the images selected in the Index panel."""
    index_panel(viewer).complete_images("keypoints")


def undo_last_complete(viewer: napari.Viewer) -> None:
    """Put back what the last Complete or accepted review of this viewer changed."""
    index_panel(viewer).undo_last_complete()


# ----------------------------------------------------------------- layer-list menu
def _panel_on_layers(layer_list: LayerList) -> IndexPanel | None:
    """The Index panel showing the active layer's index, with the image the layers show selected
    when no image is selected in the panel."""
    active = layer_list.selection.active
    shown = layers_for(active) if active is not None else None
    if shown is None:
        show_info("Select a layer of a Learn & Complete index first")
        return None
    panel = index_panel(shown.viewer)
    panel.show_index(shown)
    current = shown.current_image_id()
    if not panel.selected_image_ids() and current is not None:
        panel.select_images([current])
    return panel


def _layer_entry(action: str, kind: str) -> Callable[[LayerList], Any]:
    """The callback of the layer-list menu's ``kind`` > ``action`` entry."""

    def entry(layers: LayerList) -> Any:  # napari injects the viewer's layer list
        panel = _panel_on_layers(layers)
        if panel is None:
            return None
        return (panel.learn_images if action == "learn" else panel.complete_images)(kind)

    entry.__name__ = f"layer_{action}_{kind}"
    return entry


layer_learn_roi = _layer_entry("learn", "roi")
layer_complete_roi = _layer_entry("complete", "roi")
layer_learn_keypoints = _layer_entry("learn", "keypoints")
layer_complete_keypoints = _layer_entry("complete", "keypoints")
