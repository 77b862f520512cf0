"""The console/scripting API: the same operations on an index path, an Index or a napari viewer.

Complete and propose run a scripted detector (patched in for the active model) so the wiring is
checked against known detections; Learn and train run the real model briefly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from doubles import ScriptedDetector
from napari_learn_complete import api
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.errors import BadInputError, Cancelled, RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import active_model, create_model

DISCS = {  # what the scripted model finds, per unlabelled image
    "sample_006.png": [Detection("disc", (10.0, 10.0, 40.0, 40.0), 0.9, None)],
    "sample_007.png": [Detection("disc", (20.0, 15.0, 50.0, 45.0), 0.3, None)],
    "sample_008.png": [Detection("disc", (5.0, 30.0, 35.0, 60.0), 0.7, None)],
}


@pytest.fixture
def scripted(sample_index: Index, monkeypatch) -> Index:
    """The sample index with a model, whose predictions are the scripted ``DISCS``."""
    create_model(sample_index, weights="none")
    detector = ScriptedDetector(sample_index, DISCS)
    monkeypatch.setattr(Predictor, "from_index", classmethod(lambda cls, *a, **k: detector))
    return sample_index


def _model_discs(index: Index) -> list[tuple]:
    return sorted(o.box for o in index.observations(category="disc", source="model"))


def test_importing_the_api_loads_neither_qt_nor_napari() -> None:
    code = ("import sys, napari_learn_complete.api; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_complete_on_a_path_with_patterns_and_overrides(scripted: Index) -> None:
    result = api.complete(scripted.path, "sample_00[6-8].png", "disc", min_score=0.5)
    assert (result.images, result.written) == (3, 2)
    assert _model_discs(scripted) == [(5.0, 30.0, 35.0, 60.0), (10.0, 10.0, 40.0, 40.0)]


def test_propose_accept_and_undo_on_an_index(scripted: Index, db_dump) -> None:
    proposals = api.propose(scripted, "disc")
    assert proposals == []  # it looks only at images of other categories: these have none
    for name in DISCS:
        scripted.add_observation(name, "square", box=(0, 0, 4, 4))
    before = db_dump(scripted)
    proposals = api.propose(scripted, "disc")
    assert sorted(p.score for p in proposals) == [0.3, 0.7, 0.9]
    assert db_dump(scripted) == before  # proposing saves nothing
    result = api.accept(scripted, proposals, min_score=0.5)
    assert result.written == 2 and len(_model_discs(scripted)) == 2
    assert api.undo(scripted) == 2  # the latest run: the accept
    assert _model_discs(scripted) == []
    with pytest.raises(RefusedError, match="no Complete run to undo"):
        api.undo(str(scripted.path))


@pytest.mark.slow
def test_learn_on_a_category_with_overrides(sample_index: Index) -> None:
    torch.manual_seed(0)
    create_model(sample_index, weights="none")
    result = api.learn(str(sample_index.path), category="square", epochs=1)
    assert result.version == 2 and active_model(sample_index).active_version == 2
    assert len(result.losses) >= 1
    settings = sample_index.query("SELECT settings FROM runs WHERE id = ?", (result.run_id,))
    assert '"epochs": 1' in settings[0]["settings"]


def test_train_passes_cancel_through(sample_index: Index, db_dump) -> None:
    create_model(sample_index, weights="none")
    with pytest.raises(Cancelled):
        api.train(sample_index, cancel=lambda: True)
    assert active_model(sample_index).active_version == 1


def test_bad_input_is_named_and_changes_nothing(scripted: Index, db_dump) -> None:
    before = db_dump(scripted)
    with pytest.raises(BadInputError, match=r"unknown setting\(s\) \['epoch'\]"):
        api.learn(scripted, category="disc", epoch=3)
    missing = re.escape("no image in the index matches 'nope_*.png'")
    with pytest.raises(BadInputError, match=missing):
        api.complete(scripted, ["sample_006.png", "nope_*.png"], "disc")
    with pytest.raises(BadInputError, match="no images given"):
        api.complete(scripted, [], "disc")
    with pytest.raises(BadInputError, match="expected a napari Viewer, an Index or an index "
                                            "path, not int"):
        api.propose(42, "disc")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="not an index"):
        api.open_index(scripted.path / "images")
    assert db_dump(scripted) == before


@pytest.mark.gui
def test_console_on_a_viewer(make_napari_viewer, scripted: Index, qtbot) -> None:
    viewer = make_napari_viewer()
    with pytest.raises(RefusedError, match="no index is open in this viewer"):
        api.propose(viewer, "disc")
    opened = api.open_index(scripted.path, viewer=viewer)
    assert api.open_index(scripted, viewer=viewer).path == opened.path  # not opened twice
    from napari_learn_complete._napari.layers import index_layers

    layers = index_layers(viewer)
    assert len(layers) == 1
    layers[0].show_image(scripted.image("sample_006.png").id)
    boxes = len(layers[0].boxes_layer.data)
    result = api.complete(viewer, "sample_006.png", "disc")
    assert result.written == 1
    qtbot.waitUntil(lambda: len(layers[0].boxes_layer.data) == boxes + 1)  # the layer follows
    assert api.open_index(viewer, index="sample").path == scripted.path
    with pytest.raises(BadInputError, match="no index named 'other' is open in this viewer "
                                            r"\(open: 'sample'\)"):
        api.undo(viewer, index="other")
    assert api.undo(viewer) == 1
    assert Path(scripted.path).is_dir() and _model_discs(scripted) == []
