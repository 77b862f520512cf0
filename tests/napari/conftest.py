"""Fixtures of the layer tests: the sample index opened through the reader."""

from __future__ import annotations

import pytest

from napari_learn_complete._napari import IndexLayers, index_layers
from napari_learn_complete.index import Change, Index


@pytest.fixture
def opened(make_napari_viewer, sample_index: Index) -> tuple[IndexLayers, list[Change]]:
    """The sample index opened through the reader, with a record of every committed change."""
    viewer = make_napari_viewer()
    viewer.open(str(sample_index.path), plugin="napari-learn-complete")
    (synced,) = index_layers(viewer)
    changes: list[Change] = []
    synced.index.subscribe(changes.append)
    return synced, changes
