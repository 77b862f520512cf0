"""ROI / Keypoints > Learn / Complete in napari's layer-list context menu.

npe2 manifests cannot reach that menu, so this module registers on napari's app-model: actions
whose menu rule targets a submenu of ours, and two ``SubmenuItem`` entries appended to
``MenuId.LAYERLIST_CONTEXT``. It is the only module that imports napari's private ``_app_model``.
The entries are enabled when every selected layer belongs to a Learn & Complete index: a context
key of ours, kept up to date from the layer selection of each viewer we were told about
(:func:`register_menus`). The work itself goes through the Index panel, so the specification's
rules, dialogs, workers and captured target are the same as from the panel.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from app_model.expressions import ContextKey
from app_model.types import Action, SubmenuItem
from napari._app_model import get_app_model
from napari._app_model.constants import MenuId
from napari._app_model.context._context_keys import ContextNamespace
from napari.components import LayerList
from napari.utils.notifications import show_info

METADATA_KEY = "napari_learn_complete"
SUBMENUS = {
    "roi": ("napari_learn_complete/layer_context/roi", "ROI"),
    "keypoints": ("napari_learn_complete/layer_context/keypoints", "Keypoints"),
}
GROUP = "9_learn_complete"
ACTIONS = ("learn", "complete")


def is_index_layer(layer: Any) -> bool:
    """True for the image, boxes and keypoints layers that show an index."""
    return METADATA_KEY in getattr(layer, "metadata", {})


def _all_ours(selection: Iterable[Any]) -> bool:
    layers = list(selection)
    return bool(layers) and all(is_index_layer(layer) for layer in layers)


class _SelectionKeys(ContextNamespace):
    """Context keys about the layer-list selection that napari's own keys do not cover."""

    learn_complete_layers_selected = ContextKey(
        False, "True when every selected layer shows a Learn & Complete index.", _all_ours
    )


KEY = _SelectionKeys.learn_complete_layers_selected
_tracked: weakref.WeakKeyDictionary[LayerList, _SelectionKeys] = weakref.WeakKeyDictionary()


def action_id(action: str, kind: str) -> str:
    return f"napari_learn_complete.layer.{kind}.{action}"


def _callback(action: str, kind: str) -> Callable[[LayerList], None]:
    def run(layers: LayerList) -> None:  # napari injects the viewer's layer list
        run_on_layers(layers, action, kind)

    run.__name__ = f"{action}_{kind}"
    return run


def run_on_layers(layer_list: LayerList, action: str, kind: str) -> Any:
    """Learn / Complete (``kind``) from the active layer's index, through the Index panel.

    It acts on the images selected in the panel or, when none is, on the image the layers show.
    """
    from .._qt.index_panel import index_panel
    from .layers import layers_for

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
    start = panel.learn_images if action == "learn" else panel.complete_images
    return start(kind)


def register_menus(viewer: Any) -> None:
    """Add our entries to the layer-list context menu (once) and track ``viewer``'s selection.

    Safe to call many times: from each Index panel and whenever an index is opened. The key's
    default goes into the root context all layer lists share, since a menu whose enablement names
    a missing key cannot be shown.
    """
    context = viewer.layers._ctx
    context.maps[-1].setdefault(KEY.id, False)
    app = get_app_model()
    if action_id("learn", "roi") not in app.commands:
        app.register_actions([
            Action(
                id=action_id(action, kind),
                title=action.capitalize(),
                callback=_callback(action, kind),
                menus=[{"id": submenu, "group": "1_work"}],
                enablement=KEY,
            )
            for kind, (submenu, _) in SUBMENUS.items()
            for action in ACTIONS
        ])
        app.menus.append_menu_items([
            (MenuId.LAYERLIST_CONTEXT, SubmenuItem(
                submenu=submenu, title=title, group=GROUP, enablement=KEY,
            ))
            for submenu, title in SUBMENUS.values()
        ])
    if viewer.layers not in _tracked:
        keys = _SelectionKeys(context)
        _tracked[viewer.layers] = keys
        viewer.layers.selection.events.changed.connect(keys.update)
        keys.update(SimpleNamespace(source=viewer.layers.selection))
