"""The napari edge: reader, live layer sync, sample data and writer (Qt widgets live in ``_qt``)."""

from .layer_data import MARKER
from .layers import IndexLayers, index_layers, layers_for, open_index

__all__ = ["MARKER", "IndexLayers", "index_layers", "layers_for", "open_index"]
