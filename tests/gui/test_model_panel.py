"""The model panel on the real viewer: create the active model from the index, list its versions
and runs, roll back, and run a short full training in a worker while the UI keeps working."""

from __future__ import annotations

import pytest
import torch
from qtpy.QtCore import Qt

from napari_learn_complete._napari.layers import open_index
from napari_learn_complete._qt.model_panel import ModelPanel
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import CONFIG_FILE, active_model, create_model

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, sample_index: Index, qtbot) -> ModelPanel:
    viewer = make_napari_viewer()
    widget = ModelPanel(viewer)
    viewer.window.add_dock_widget(widget)
    open_index(viewer, sample_index)
    qtbot.waitUntil(lambda: widget.index is not None)
    return widget


def _column(table, column: int) -> list[str]:
    return [table.item(r, column).text() for r in range(table.rowCount())]


def test_follows_the_index_opened_in_the_viewer(panel: ModelPanel, sample_index: Index) -> None:
    assert panel.index is not None and panel.index.path == sample_index.path
    assert panel.categories_label.text() == "disc, square, triangle"
    assert panel.keypoints_label.text() == "apex, left, right"
    assert panel.input_size.value() == 320  # from the images (96-160 px: the 320 floor)
    assert "no model yet" in panel.model_label.text()
    assert panel.create_button.isEnabled() and not panel.train_button.isEnabled()


def test_create_model_from_the_form(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    panel.architecture.setCurrentIndex(1)  # boxes + keypoints
    panel.input_size.setValue(256)
    qtbot.mouseClick(panel.create_button, Qt.MouseButton.LeftButton)
    handle = active_model(sample_index)
    assert handle.config.architecture == "keypointrcnn"
    assert handle.config.keypoint_names == ["apex", "left", "right"]
    assert handle.config.categories == ["disc", "square", "triangle"]
    assert handle.config.min_size == 256
    assert _column(panel.versions, 0) == ["1"] and _column(panel.versions, 4) == ["yes"]
    assert "keypointrcnn" in panel.model_label.text()
    assert panel.train_button.isEnabled()


def test_create_refusal_is_shown_and_changes_nothing(panel: ModelPanel, sample_index: Index,
                                                     qtbot, db_dump, tmp_path) -> None:
    before = db_dump(sample_index)
    panel.weights.setCurrentIndex(panel.weights.findData("file"))
    assert panel.create() is None  # no file chosen yet
    panel.weights_file.setText(str(tmp_path / "missing.pt"))
    assert panel.create() is None
    assert db_dump(sample_index) == before
    assert "no model yet" in panel.model_label.text()


def test_versions_listed_and_rollback(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    handle = create_model(sample_index)  # the panel hears about it through the index
    qtbot.waitUntil(lambda: panel.versions.rowCount() == 1)
    model = handle.load()
    handle.commit_version(model, handle.config, note="second")
    qtbot.waitUntil(lambda: panel.versions.rowCount() == 2)
    assert _column(panel.versions, 2)[1] == "second"
    assert _column(panel.versions, 4) == ["", "yes"]
    assert not panel.rollback_button.isEnabled()  # nothing selected yet
    panel.versions.selectRow(0)
    qtbot.mouseClick(panel.rollback_button, Qt.MouseButton.LeftButton)
    assert active_model(sample_index).active_version == 1
    assert _column(panel.versions, 4) == ["yes", ""]


@pytest.mark.slow
def test_full_training_runs_in_a_worker(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    torch.manual_seed(0)
    handle = create_model(sample_index)
    handle.config.training.epochs = 1  # a short recipe: one pass, no test split
    handle.config.training.test_percent = 0.0
    handle.config.save(handle.folder / CONFIG_FILE)
    qtbot.waitUntil(panel.train_button.isEnabled)
    with qtbot.waitSignal(panel.trained, timeout=300_000) as done:
        qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
        assert not panel.train_button.isEnabled() and panel.cancel_button.isEnabled()
    result = done.args[0]
    assert result.version == 2 and active_model(sample_index).active_version == 2
    qtbot.waitUntil(lambda: panel.worker is None)
    assert _column(panel.versions, 0) == ["1", "2"]
    assert _column(panel.runs, 1) == ["train"]
    assert "Full training finished" in panel.progress_label.text()
    assert panel.train_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_cancel_a_full_training_run(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    create_model(sample_index)
    qtbot.waitUntil(panel.train_button.isEnabled)
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    assert panel.progress_label.text() == "Full training cancelled: the model is as it was"
    assert active_model(sample_index).active_version == 1
    assert _column(panel.versions, 0) == ["1"]
