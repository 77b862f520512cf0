"""ROI / Keypoints > Learn / Complete in napari's layer-list context menu.

npe2 manifests cannot reach that menu, so this module registers on napari's app-model: actions
whose menu rule targets a submenu of ours, and two ``SubmenuItem`` entries appended to
``MenuId.LAYERLIST_CONTEXT``. It is the only module that imports napari's private ``_app_model``.
The entries are enabled when every selected layer belongs to a Learn & Complete index: a context
key of ours, kept up to date from the layer selection of each viewer we were told about
(:func:`register_menus`). The callbacks live in ``_qt/commands.py`` and go through the Index panel,
so the specification's rules, dialogs, workers and captured target are the same as from the panel.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from app_model.expressions import ContextKey
from app_model.types import Action, SubmenuItem
from napari._app_model import get_app_model
from napari._app_model.constants import MenuId
from napari._app_model.context._context_keys import ContextNamespace
from napari.components import LayerList

from ..actions import ACTIONS

METADATA_KEY = "napari_learn_complete"
SUBMENUS = {
    "roi": ("napari_learn_complete/layer_context/roi", "ROI"),
    "keypoints": ("napari_learn_complete/layer_context/keypoints", "Keypoints"),
}
GROUP = "9_learn_complete"


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


def callback_name(action: str, kind: str) -> str:
    """The entry point an action runs, named as a string: app-model imports it on first use, so
    this module never imports the widgets (``_qt``)."""
    return f"napari_learn_complete._qt.commands:layer_{action}_{kind}"


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
                callback=callback_name(action, kind),
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
