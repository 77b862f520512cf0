"""The model panel on the real viewer: create the active model from the index, list its versions
and runs, roll back, and run a short full training in a worker while the UI keeps working."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch
from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel
from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_320_FPN_Weights

from napari_learn_complete._napari.layers import open_index
from napari_learn_complete._qt.model_panel import INPUT_SIZE_HINT, NO_MODEL, ModelPanel
from napari_learn_complete.engine.settings import LearnSettings
from napari_learn_complete.errors import BadInputError, Cancelled
from napari_learn_complete.index import Index
from napari_learn_complete.model import pretrained
from napari_learn_complete.model.config import MODEL_CHOICES
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
    assert INPUT_SIZE_HINT in panel.input_size.toolTip()  # the rule, where the size is chosen
    assert INPUT_SIZE_HINT in [label.text() for label in panel.findChildren(QLabel)]
    assert panel.model_label.text() == NO_MODEL  # where to start, in the GUI's words
    assert panel.create_button.isEnabled() and not panel.train_button.isEnabled()


def test_create_model_from_the_form(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    panel.keypoints.setChecked(True)  # keypoints on the fast model
    panel.weights.setCurrentIndex(panel.weights.findData("none"))
    panel.input_size.setValue(256)
    qtbot.mouseClick(panel.create_button, Qt.MouseButton.LeftButton)
    assert not panel.create_button.isEnabled()  # the engine builds it: the form waits
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    handle = active_model(sample_index)
    assert handle.config.architecture == "keypointrcnn"
    assert handle.config.backbone == "mobilenet_v3_large_320_fpn"
    assert handle.config.keypoint_names == ["apex", "left", "right"]
    assert handle.config.categories == ["disc", "square", "triangle"]
    assert handle.config.min_size == 256
    assert _column(panel.versions, 0) == ["1"] and _column(panel.versions, 4) == ["yes"]
    assert "keypointrcnn" in panel.model_label.text()
    assert panel.train_button.isEnabled()


def test_the_model_choices_say_what_they_are_good_for(panel: ModelPanel, sample_index: Index,
                                                      qtbot) -> None:
    """Four choices named for what a user picks, each with its purpose and size; fast and COCO
    weights by default."""
    combo = panel.choice
    assert _items(combo) == ["fast", "balanced", "accurate", "keypoints"]
    tips = [combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())]
    assert tips == [choice.describe() for choice in MODEL_CHOICES.values()]
    assert all(" M parameters, " in tip and " MB download" in tip for tip in tips)
    assert combo.currentText() == "fast" and panel.weights.currentData() == "coco"
    assert panel.choice_note.text() == MODEL_CHOICES["fast"].describe()
    assert _items(panel.weights) == ["COCO (torchvision, downloaded once)",
                                     "ImageNet backbone only (for images far from COCO)",
                                     "Random (offline, learns slowly)", "Weight file…"]
    combo.setCurrentIndex(combo.findData("keypoints"))  # implies keypoints
    assert panel.choice_note.text() == MODEL_CHOICES["keypoints"].describe()
    assert panel.keypoints.isChecked() and not panel.keypoints.isEnabled()
    assert panel.model_name.text() == "default"

    combo.setCurrentIndex(combo.findData("balanced"))
    panel.keypoints.setChecked(False)
    panel.weights.setCurrentIndex(panel.weights.findData("none"))
    _click_and_wait(qtbot, panel, panel.create_button)
    config = active_model(sample_index).config
    assert (config.architecture, config.backbone) == ("fasterrcnn", "mobilenet_v3_large_fpn")
    assert config.backbone_trained is False  # random: a heads-only Learn is warned about


def test_coco_weights_offline_say_what_to_do(panel: ModelPanel, sample_index: Index, qtbot,
                                             offline: Path, db_dump, errors) -> None:
    before = db_dump(sample_index)
    _click_and_wait(qtbot, panel, panel.create_button)  # the defaults: fast, COCO weights
    file = os.path.basename(FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1.url)
    [error] = errors
    assert error.startswith("Create model 'default': torchvision's pretrained weights are not")
    assert f"the file {file} is missing" in error and str(offline) in error
    assert "'Random' in the Model panel" in error
    assert db_dump(sample_index) == before and panel.model_label.text() == NO_MODEL
    assert list(offline.iterdir()) == []  # nothing half-downloaded either


class Download:
    """A weight file served 1 MiB at a time; the second MiB waits for ``release``."""

    def __init__(self, total: int) -> None:
        self.total, self.sent, self.release = total, 0, threading.Event()
        self.headers = {"Content-Length": str(total)}

    def __call__(self, *args, **kwargs) -> Download:  # as urlopen(request, timeout=...)
        return self

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def read(self, size: int) -> bytes:
        if self.sent:
            self.release.wait(30)
        size = min(size, self.total - self.sent)
        self.sent += size
        return b"\0" * size


def test_a_download_shows_its_progress_and_can_be_cancelled(
        panel: ModelPanel, sample_index: Index, qtbot, offline: Path, monkeypatch,
        db_dump) -> None:
    """COCO weights are fetched by the engine's create job: its progress is in the panel and in
    napari's activity dock, as a Learn's is; Cancel stops it and leaves nothing behind."""
    download = Download(total=4 * pretrained.CHUNK)
    monkeypatch.setattr(pretrained, "urlopen", download)
    before = db_dump(sample_index)
    qtbot.mouseClick(panel.create_button, Qt.MouseButton.LeftButton)
    file = os.path.basename(FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1.url)
    bars = panel.viewer.window._qt_window._activity_dialog.findChildren(QtLabeledProgressBar)
    try:
        qtbot.waitUntil(lambda: bars and "download" in bars[0].description_label.text())
        assert bars[0].description_label.text().startswith("Create model 'default': ")
        assert f"download · {file}" in bars[0].description_label.text()
        assert (bars[0].qt_progress_bar.value(), bars[0].qt_progress_bar.maximum()) == (
            pretrained.CHUNK, 4 * pretrained.CHUNK)
        assert (panel.progress.value(), panel.progress.maximum()) == (
            pretrained.CHUNK, 4 * pretrained.CHUNK)
        assert file in panel.progress_label.text()
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    finally:
        download.release.set()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=30_000)
    assert download.sent < download.total  # stopped midway
    assert db_dump(sample_index) == before and panel.model_label.text() == NO_MODEL
    assert list(offline.iterdir()) == []


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
    assert panel.model_label.text() == NO_MODEL


def test_versions_listed_and_rollback(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    handle = create_model(sample_index, weights="none")  # the panel hears of it through the index
    qtbot.waitUntil(lambda: panel.versions.rowCount() == 1)
    handle.commit_version(*handle.load(), note="second")
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
    handle = create_model(sample_index, weights="none")
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
    create_model(sample_index, weights="none")
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
    panel.weights.setCurrentIndex(panel.weights.findData("none"))
    _click_and_wait(qtbot, panel, panel.create_button)
    assert active_model(sample_index).name == "default"
    assert panel.model_name.text() == "boxes-2"
    panel.keypoints.setChecked(True)
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


ONE_EPOCH = LearnSettings(epochs=1)


def _rows(table) -> list[list[str]]:
    return [[table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())]


def test_learns_show_in_the_runs_table_as_they_end(panel: ModelPanel, sample_index: Index,
                                                   qtbot) -> None:
    """Real Learns started as the Index panel starts them (through the viewer's session), done,
    cancelled or failed: each shows as soon as it ends (the panel only hears the index), one
    compact row per run of the active model, newest first."""
    session, tasks = panel.session, []

    def learn(**run):
        tasks.append(session.learn_images(sample_index, [1, 2], "roi", ONE_EPOCH))
        return session.run(tasks[-1], **run)

    create_model(sample_index, weights="none", name="earlier", min_size=64)
    with pytest.raises(Cancelled):
        learn(cancel=lambda: True)
    qtbot.waitUntil(lambda: _column(panel.runs, 8) == ["cancelled"])
    create_model(sample_index, weights="none", min_size=64)  # the active model from now on
    qtbot.waitUntil(lambda: panel.runs.rowCount() == 0)  # the earlier model's run is not shown

    done = learn()
    qtbot.waitUntil(lambda: _column(panel.runs, 8) == ["done"])
    steps: list = []
    with pytest.raises(Cancelled):
        learn(progress=steps.append, cancel=lambda: bool(steps))  # after its first step
    qtbot.waitUntil(lambda: _column(panel.runs, 8) == ["cancelled", "done"])
    image = sample_index.resolve(sample_index.image(2))
    away = image.rename(image.with_suffix(".away"))
    try:
        with pytest.raises(BadInputError, match="image file not found"):
            learn()
    finally:
        away.rename(image)
    qtbot.waitUntil(lambda: _column(panel.runs, 8) == ["failed", "cancelled", "done"])

    assert tasks[1].runs == [done.run_id]
    failed, cancelled, finished = (sample_index.runs.get(t.runs[0]) for t in tasks[:0:-1])
    assert finished.losses == done.losses and not failed.losses  # it failed at its first step

    def last_loss(run) -> str:  # a cancelled run keeps the losses of the epochs it finished
        return f"{run.losses[-1]:.4f}" if run.losses else ""

    assert _rows(panel.runs) == [
        ["", "learn", "roi", "2 images", "1 × heads", "", "", f"{failed.seconds:.1f}", "failed"],
        ["", "learn", "roi", "2 images", "1 × heads", last_loss(cancelled), "",
         f"{cancelled.seconds:.1f}", "cancelled"],
        ["2", "learn", "roi", "2 images", "1 × heads", f"{done.losses[-1]:.4f}", "",
         f"{finished.seconds:.1f}", "done"],
    ]


@pytest.mark.slow
def test_the_full_record_of_a_run_is_shown_below(panel: ModelPanel, sample_index: Index,
                                                 qtbot) -> None:
    create_model(sample_index, weights="none", keypoints=True, min_size=64)
    session = panel.session
    task = session.learn_category(sample_index, "triangle", "keypoints", LearnSettings(
        epochs=1, mode="full", test_percent=50, mix_in=2))
    result = session.run(task)
    qtbot.waitUntil(lambda: _column(panel.runs, 8) == ["done"])
    run = sample_index.runs.get(result.run_id)
    triangles = sample_index.images(category="triangle")
    held_out, mixed_in = run.scope["test"], run.scope["mix_in"]
    assert (len(triangles), len(held_out), len(mixed_in)) == (2, 1, 2)
    assert _rows(panel.runs) == [[
        "2", "learn", "keypoints",
        "category triangle, 2 images, 50% held out, +2 mixed in", "1 × full",
        f"{result.losses[-1]:.4f}", f"keypoint_AP {result.metrics['keypoint_AP']:.3f}",
        f"{run.seconds:.1f}", "done"]]
    assert panel.run_details.toPlainText() == "Select a run to see its full record."
    panel.runs.selectRow(0)
    details = panel.run_details.toPlainText()
    assert f"Held out: {', '.join(i['name'] for i in held_out)}" in details
    assert f"Mixed in: {', '.join(i['name'] for i in mixed_in)}" in details
    assert "Losses: " + ", ".join(f"{v:.4f}" for v in result.losses) in details
    assert f"keypoint_AP {result.metrics['keypoint_AP']:.3f}" in details
    assert f"learning_rate={run.settings['training']['learning_rate']}" in details
    assert panel.runs.item(0, 0).toolTip() == details


def _items(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_switch_back_to_an_earlier_model(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    create_model(sample_index, weights="none", min_size=64)
    session = panel.session
    session.run(session.learn_images(sample_index, [1, 2], "roi", ONE_EPOCH))  # version 2
    qtbot.waitUntil(lambda: _column(panel.runs, 1) == ["learn"])
    panel.keypoints.setChecked(True)
    panel.weights.setCurrentIndex(panel.weights.findData("none"))
    _click_and_wait(qtbot, panel, panel.create_button)
    assert _items(panel.model_select) == ["default", "keypoints-2"]
    assert panel.model_select.currentText() == "keypoints-2"
    assert _column(panel.versions, 0) == ["1"] and panel.runs.rowCount() == 0
    panel.model_select.setCurrentIndex(0)  # as a choice in the drop-down does
    handle = active_model(sample_index)
    assert (handle.name, handle.active_version) == ("default", 2)
    assert _column(panel.versions, 2)[1] == handle.versions()[1].note
    assert _column(panel.versions, 0) == ["1", "2"] and _column(panel.versions, 4) == ["", "yes"]
    assert _column(panel.runs, 1) == ["learn"]
    assert panel.model_label.text().startswith("default: fasterrcnn")
    assert panel.model_select.currentText() == "default"


def test_model_selector_follows_the_index(panel: ModelPanel, sample_index: Index, qtbot,
                                          db_dump) -> None:
    assert panel.model_select.count() == 0 and not panel.model_select.isEnabled()
    create_model(sample_index, weights="none")
    worker = threading.Thread(target=create_model, args=(sample_index,),
                              kwargs={"name": "other", "weights": "none"})
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


def test_docked_beside_the_index_panel_it_fits_a_1000_px_screen(opened, qtbot) -> None:
    """Its sections scroll: the window's minimum height stays far below a laptop screen's, and
    the training buttons stay in sight in a 1000-px window."""
    window = opened.viewer.window._qt_window
    panel = ModelPanel(opened.viewer)
    opened.viewer.window.add_dock_widget(panel, name="Model panel")
    assert panel.minimumSizeHint().height() < 300
    assert window.minimumSizeHint().height() < 700
    opened.viewer.show()
    window.resize(1280, 1000)
    qtbot.waitExposed(panel)
    qtbot.waitUntil(lambda: window.height() <= 1000)
    for button in (panel.train_button, panel.cancel_button):
        corner = button.mapTo(window, button.rect().bottomRight())
        assert window.rect().contains(corner) and not button.visibleRegion().isEmpty()


def test_a_long_note_is_shown_in_full(panel: ModelPanel, sample_index: Index, qtbot) -> None:
    handle = create_model(sample_index, weights="none")
    note = ("learned on the 40 blood smears of the second batch after relabelling the "
            "platelets, 20 epochs, full model")
    handle.commit_version(*handle.load(), note=note)
    qtbot.waitUntil(lambda: panel.versions.rowCount() == 2)
    panel.viewer.show()
    qtbot.waitExposed(panel.versions)
    item = panel.versions.item(1, 2)
    assert item.toolTip() == note
    rect = panel.versions.visualItemRect(item)
    assert rect.width() < panel.versions.fontMetrics().horizontalAdvance(note)  # it must wrap
    wrapped = panel.versions.fontMetrics().boundingRect(
        rect.adjusted(3, 0, -3, 0), Qt.TextFlag.TextWordWrap, note)
    assert wrapped.height() <= rect.height()  # every line of it in the row
