"""Binding layer data to live sync: napari readers and sample data must return layer data tuples,
not layers, so the tuples carry a session token in their metadata marker, and the first viewer
that inserts every layer of a token starts syncing them with their index."""

from __future__ import annotations

import uuid
import weakref
from typing import Any

from ..index import Index
from .layer_data import MARKER, layer_data
from .layers import IndexLayers

# Layer data handed to napari by the reader or the sample, waiting to be inserted in a viewer.
_PENDING: dict[str, tuple[Index, int, dict[str, Any]]] = {}
_WATCHED: weakref.WeakSet = weakref.WeakSet()


def _viewers() -> list[Any]:
    """Every open napari viewer (the reader cannot know which one will insert its layers)."""
    import napari

    found = list(getattr(napari.Viewer, "_instances", ()))
    current = napari.current_viewer()
    if current is not None and current not in found:
        found.append(current)
    return found


def bindable_layer_data(index: Index) -> list[tuple[Any, dict, str]]:
    """Layer data tuples that start live sync once napari has inserted them into a viewer.

    Readers and sample data must return tuples, not layers; the tuples carry a session token in
    their metadata marker, and the first viewer that inserts all of them binds them.
    """
    session = uuid.uuid4().hex
    data = layer_data(index, session=session)
    _PENDING[session] = (index, len(data), {})
    for viewer in _viewers():
        if viewer not in _WATCHED:
            _WATCHED.add(viewer)
            viewer.layers.events.inserted.connect(_binder(weakref.ref(viewer)))
    return data


def _binder(viewer_ref: weakref.ref):
    def on_inserted(event: Any) -> None:
        layer = event.value
        marker = layer.metadata.get(MARKER) or {}
        pending = _PENDING.get(marker.get("session", ""))
        viewer = viewer_ref()
        if pending is None or viewer is None:
            return
        index, expected, layers = pending
        layers[marker["role"]] = layer
        if len(layers) == expected:
            del _PENDING[marker["session"]]
            IndexLayers(viewer, index, **{f"{role}_layer": lay for role, lay in layers.items()})

    return on_inserted
