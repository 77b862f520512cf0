"""The model panel on the real viewer: create the active model from the index, list its versions
and runs, roll back, and run a short full training in a worker while the UI keeps working."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from qtpy.QtCore import Qt

from napari_learn_complete._napari.layers import open_index
from napari_learn_complete._qt.model_panel import ModelPanel
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import (
    CONFIG_FILE,
    active_model,
    create_model,
    set_active_model,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, sample_index: Index, qtbot) -> ModelPanel:
    viewer = make_napari_viewer()
    widget = ModelPanel(viewer)
    viewer.window.add_dock_widget(widget)
    open_index(viewer, sample_index)
    qtbot.waitUntil(lambda: widget.index is not None)
    return widget


def _click_and_wait(qtbot, panel: ModelPanel, button) -> None:
    """Click a button that starts a job (create, roll back) and wait until the job has ended."""
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """The error notifications the panel shows."""
    shown: list[str] = []
    monkeypatch.setattr("napari_learn_complete._qt.model_panel.show_error", shown.append)
    return shown


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
    assert not panel.create_button.isEnabled()  # the engine builds it: the form waits
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    handle = active_model(sample_index)
    assert handle.config.architecture == "keypointrcnn"
    assert handle.config.keypoint_names == ["apex", "left", "right"]
    assert handle.config.categories == ["disc", "square", "triangle"]
    assert handle.config.min_size == 256
    assert _column(panel.versions, 0) == ["1"] and _column(panel.versions, 4) == ["yes"]
    assert "keypointrcnn" in panel.model_label.text()
    assert panel.train_button.isEnabled()


def test_create_refusal_is_shown_and_changes_nothing(panel: ModelPanel, sample_index: Index,
                                                     qtbot, db_dump, tmp_path, errors) -> None:
    before = db_dump(sample_index)
    panel.weights.setCurrentIndex(panel.weights.findData("file"))
    assert panel.create() is None  # no file chosen yet
    panel.weights_file.setText(str(tmp_path / "missing.pt"))
    _click_and_wait(qtbot, panel, panel.create_button)  # refused by the engine
    panel.weights.setCurrentIndex(panel.weights.findData("none"))
    panel.model_name.setText("")
    assert panel.create() is None
    panel.model_name.setText("../elsewhere")
    _click_and_wait(qtbot, panel, panel.create_button)
    assert errors[0] == "Create model: choose the initial weights file first"
    assert errors[1].startswith("Create model 'default': ")
    assert errors[1].endswith("missing.pt: weight file not found")
    assert errors[2] == "Create model: give the model a name"
    assert errors[3].startswith("Create model '../elsewhere': ") and len(errors) == 4
    assert db_dump(sample_index) == before
    assert not (sample_index.path.parent / "elsewhere").exists()
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
    _click_and_wait(qtbot, panel, panel.rollback_button)
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
    assert not panel.model_select.isEnabled()  # the run keeps to the model it started with
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    assert panel.model_select.isEnabled()
    assert panel.progress_label.text() == "Full training cancelled: the model is as it was"
    assert active_model(sample_index).active_version == 1
    assert _column(panel.versions, 0) == ["1"]
    assert _column(panel.runs, 8) == ["cancelled"]  # the cancelled run is on record, shown


def test_create_a_second_model_under_a_free_name(panel: ModelPanel, sample_index: Index,
                                                 qtbot, db_dump) -> None:
    assert panel.model_name.text() == "default"  # the index has no model yet
    _click_and_wait(qtbot, panel, panel.create_button)
    assert active_model(sample_index).name == "default"
    assert panel.model_name.text() == "boxes-2"
    panel.architecture.setCurrentIndex(1)  # boxes + keypoints
    assert panel.model_name.text() == "keypoints-2"
    _click_and_wait(qtbot, panel, panel.create_button)
    handle = active_model(sample_index)
    assert (handle.name, handle.config.architecture) == ("keypoints-2", "keypointrcnn")
    assert panel.model_label.text().startswith("keypoints-2: keypointrcnn")
    assert _column(panel.versions, 0) == ["1"]
    assert panel.model_name.text() == "keypoints-3"
    before = db_dump(sample_index)
    panel.model_name.setText("default")  # taken: refused, the active model stays
    _click_and_wait(qtbot, panel, panel.create_button)
    assert db_dump(sample_index) == before


def _record_run(index: Index, model_id: int, **values) -> None:
    """A finished run as the engine records it (see engine/train.py)."""
    with index.transaction() as conn:
        conn.execute(
            "INSERT INTO runs(model_id, operation, kind, scope, settings, losses, metrics, "
            "version, status, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'done', ?)",
            (model_id, values["operation"], values["kind"], json.dumps(values["scope"]),
             json.dumps(values["settings"]), json.dumps(values["losses"]),
             json.dumps(values["metrics"]), values["version"], values["seconds"]),
        )


def test_runs_table_is_compact_with_the_full_record_below(panel: ModelPanel,
                                                          sample_index: Index) -> None:
    images = [{"id": r.id, "name": r.name} for r in sample_index.images()]
    earlier = create_model(sample_index, name="earlier")
    _record_run(sample_index, earlier.id, operation="train", kind=None, version=2, seconds=1.0,
                scope={"category": None, "images": images, "test": [], "mix_in": []},
                settings={"mode": "full", "training": {"epochs": 5, "test_percent": 10}},
                losses=[1.0], metrics={"box_AP": 0.25})
    handle = create_model(sample_index, keypoints=True)  # the active model from now on
    _record_run(sample_index, handle.id, operation="learn", kind="roi", version=2, seconds=3.0,
                scope={"category": None, "images": images[:6], "test": [], "mix_in": []},
                settings={"epochs": 2, "mode": "heads", "test_percent": 0, "mix_in": 0,
                          "training": {"lr": 0.01}},
                losses=[2.0, 1.5], metrics={})
    _record_run(sample_index, handle.id, operation="learn", kind="keypoints", version=3,
                seconds=12.34,
                scope={"category": "triangle", "images": images[:4], "test": images[3:4],
                       "mix_in": images[4:6]},
                settings={"epochs": 2, "mode": "full", "test_percent": 25, "mix_in": 2,
                          "training": {"lr": 0.005}},
                losses=[0.9, 0.5], metrics={"box_AP": 0.3, "keypoint_AP": 0.42})
    panel.refresh()
    rows = [[panel.runs.item(r, c).text() for c in range(panel.runs.columnCount())]
            for r in range(panel.runs.rowCount())]
    assert rows == [  # the active model's runs only, newest first
        ["3", "learn", "keypoints", "category triangle, 4 images, 25% held out, +2 mixed in",
         "2 × full", "0.5000", "keypoint_AP 0.420", "12.3", "done"],
        ["2", "learn", "roi", "6 images", "2 × heads", "1.5000", "", "3.0", "done"],
    ]
    assert panel.run_details.toPlainText() == "Select a run to see its full record."
    panel.runs.selectRow(0)
    details = panel.run_details.toPlainText()
    assert f"Held out: {images[3]['name']}" in details
    assert f"Mixed in: {images[4]['name']}, {images[5]['name']}" in details
    assert "Training: lr=0.005" in details and "Losses: 0.9000, 0.5000" in details
    assert "keypoint_AP 0.420" in details
    assert panel.runs.item(0, 0).toolTip() == details


def _items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_switch_back_to_an_earlier_model(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    first = create_model(sample_index)
    first.commit_version(first.load(), first.config, note="learned")
    _record_run(sample_index, first.id, operation="train", kind=None, version=2, seconds=1.0,
                scope={"category": None, "images": [], "test": [], "mix_in": []},
                settings={"mode": "full"}, losses=[1.0], metrics={})
    panel.refresh()
    panel.architecture.setCurrentIndex(1)  # boxes + keypoints
    _click_and_wait(qtbot, panel, panel.create_button)
    assert _items(panel.model_select) == ["default", "keypoints-2"]
    assert panel.model_select.currentText() == "keypoints-2"
    assert _column(panel.versions, 0) == ["1"] and panel.runs.rowCount() == 0
    panel.model_select.setCurrentIndex(0)  # as a choice in the drop-down does
    handle = active_model(sample_index)
    assert (handle.name, handle.active_version) == ("default", 2)
    assert _column(panel.versions, 2)[1] == "learned"
    assert _column(panel.versions, 0) == ["1", "2"] and _column(panel.versions, 4) == ["", "yes"]
    assert _column(panel.runs, 1) == ["train"]
    assert panel.model_label.text().startswith("default: fasterrcnn")
    assert panel.model_select.currentText() == "default"


def test_model_selector_follows_the_index(panel: ModelPanel, sample_index: Index, qtbot,
                                          db_dump) -> None:
    assert panel.model_select.count() == 0 and not panel.model_select.isEnabled()
    create_model(sample_index)
    worker = threading.Thread(target=create_model, args=(sample_index,),
                              kwargs={"name": "other"})
    worker.start()  # a model created off the main thread, as a CLI or worker would
    worker.join()
    qtbot.waitUntil(lambda: _items(panel.model_select) == ["default", "other"])
    assert panel.model_select.currentText() == "other" and panel.model_select.isEnabled()
    set_active_model(sample_index, "default")  # through the API: the combo box follows
    qtbot.waitUntil(lambda: panel.model_select.currentText() == "default")
    assert panel.model_label.text().startswith("default:")
    before = db_dump(sample_index)
    assert panel.choose_model("missing") is None  # refused and shown; nothing changes
    assert db_dump(sample_index) == before
    assert panel.model_select.currentText() == "default"


def test_a_learn_cancelled_elsewhere_shows_in_the_runs_table(panel: ModelPanel,
                                                             sample_index: Index, qtbot) -> None:
    from napari_learn_complete.engine.train import learn
    from napari_learn_complete.errors import Cancelled

    create_model(sample_index, min_size=128)
    qtbot.waitUntil(lambda: panel.versions.rowCount() == 1)
    with pytest.raises(Cancelled):  # e.g. from the Index panel: the Model panel is not told
        learn(sample_index, images=[1, 2], cancel=lambda: True)
    qtbot.waitUntil(lambda: _column(panel.runs, 8) == ["cancelled"])  # the run's change is
