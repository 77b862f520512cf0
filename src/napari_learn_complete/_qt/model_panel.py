"""Model panel: create a model (it becomes the index's active one), switch back to another model
of the index, see the active model's weight versions and a compact table of its Learn and
training runs with the full record of the selected one, roll back, and start a full training run.

The panel works on the first index open in the viewer (or the one given to :meth:`set_index`) and
re-reads the registry when the index reports a change to its models, from whatever thread wrote it
(a Learn started from a menu adds a version while the panel is open).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import napari
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._napari.layers import index_layers, real_viewer
from ..engine.progress import Progress
from ..engine.results import TrainResult
from ..errors import LearnCompleteError, RefusedError
from ..index import Change, Index
from ..index.runs import Run
from ..model.config import MODEL_CHOICES
from ..model.registry import (
    ModelHandle,
    active_model,
    default_input_size,
    models,
    set_active_model,
)
from ..session import Task, session_for
from .workers import Worker, describe, run_in_worker

# Initial weights as the user reads them -> create_model's ``weights`` ("file": the file row)
WEIGHTS = (("COCO (torchvision, downloaded once)", "coco"),
           ("ImageNet backbone only (for images far from COCO)", "imagenet"),
           ("Random (offline, learns slowly)", "none"),
           ("Weight file…", "file"))
KEYPOINTS_TOO = "Predict keypoints too"
INPUT_SIZE_HINT = ("Short side the images are scaled to; default: the median short side of the "
                   "index's images, rounded to 32, within 320-640; larger finds smaller objects, "
                   "costs time")
VERSION_COLUMNS = ("Version", "Parent", "Note", "Created", "Active")
RUN_COLUMNS = ("Version", "Operation", "Kind", "Scope", "Epochs / mode", "Final loss", "Metric",
               "Seconds", "Status")
NO_RUN_SELECTED = "Select a run to see its full record."
NO_MODEL = ("No model yet: create one here, or run Learn from the Index panel (it offers to "
            "create one)")


class ModelPanel(QWidget):
    """Dock widget over the active model of the open index."""

    models_changed = Signal()  # emitted from any thread; refreshes on the main thread
    trained = Signal(object)   # TrainResult of a finished full training run

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        self.session = session_for(self.viewer)
        self.index: Index | None = None
        self.handle: ModelHandle | None = None
        self.worker: Worker | None = None
        self._running: Task | None = None  # the task of self.worker
        self._cancelling = False
        self._unsubscribe = None

        self.index_label = QLabel()
        self.index_label.setWordWrap(True)

        # -- new model
        self.choice = QComboBox()
        for name, choice in MODEL_CHOICES.items():
            self.choice.addItem(name, name)
            self.choice.setItemData(self.choice.count() - 1, choice.describe(),
                                    Qt.ItemDataRole.ToolTipRole)
        self.choice_note = QLabel()  # what the chosen model is good for and its size
        self.choice_note.setWordWrap(True)
        self.keypoints = QCheckBox(KEYPOINTS_TOO)
        self.keypoints.setToolTip("Boxes and the keypoints of the categories that have keypoints "
                                  "enabled, on the chosen model's backbone")
        self.weights = QComboBox()
        for label, value in WEIGHTS:
            self.weights.addItem(label, value)
        self.weights_file = QLineEdit()
        self.weights_file.setPlaceholderText("weights file (.pt)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        weights_row = QHBoxLayout()
        weights_row.addWidget(self.weights)
        weights_row.addWidget(self.weights_file)
        weights_row.addWidget(browse)
        self.input_size = QSpinBox(minimum=64, maximum=4096, singleStep=32)
        self.input_size.setSuffix(" px")
        self.input_size.setToolTip(
            f"{INPUT_SIZE_HINT}. The long side follows the images' median aspect ratio, at most "
            "twice the short side; both can be edited in the model's config.json")
        input_hint = QLabel(INPUT_SIZE_HINT)
        input_hint.setWordWrap(True)
        self.categories_label = QLabel()
        self.categories_label.setWordWrap(True)
        self.keypoints_label = QLabel()
        self.keypoints_label.setWordWrap(True)
        self.model_name = QLineEdit()
        self.model_name.setToolTip("A name not used yet in this index; the new model becomes "
                                   "the active one")
        self._suggested_name = ""
        self.create_button = QPushButton("Create model")
        new_box = QGroupBox("New model")
        new_form = QFormLayout(new_box)
        new_form.addRow("Name", self.model_name)
        new_form.addRow("Model", self.choice)
        new_form.addRow("", self.choice_note)
        new_form.addRow("", self.keypoints)
        new_form.addRow("Initial weights", weights_row)
        new_form.addRow("Input size", self.input_size)
        new_form.addRow("", input_hint)
        new_form.addRow("Categories", self.categories_label)
        new_form.addRow("Keypoints", self.keypoints_label)
        new_form.addRow(self.create_button)

        # -- active model, versions, runs
        self.model_select = QComboBox()
        self.model_select.setToolTip("The index's models; Learn, Complete and full training use "
                                     "the one chosen here")
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.versions = _table(VERSION_COLUMNS, stretch="Note")
        # a long note wraps onto more lines, as the column narrows or widens
        self.versions.verticalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.rollback_button = QPushButton("Roll back to selected version")
        self.runs = _table(RUN_COLUMNS, stretch="Scope")
        self.run_details = QPlainTextEdit(NO_RUN_SELECTED)
        self.run_details.setReadOnly(True)
        self.run_details.setMaximumHeight(130)
        self._run_records: list[str] = []  # full record of each row of the runs table
        self.train_button = QPushButton("Full training run")
        self.train_button.setToolTip("Train on every labelled image with the model's own "
                                     "training settings; writes a new version")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress_label = QLabel()
        self.progress_label.setWordWrap(True)
        active_box = QGroupBox("Active model")
        active_layout = QVBoxLayout(active_box)
        active_layout.addWidget(self.model_select)
        active_layout.addWidget(self.model_label)
        active_layout.addWidget(QLabel("Weight versions"))
        active_layout.addWidget(self.versions)
        active_layout.addWidget(self.rollback_button)
        active_layout.addWidget(QLabel("Learn and training runs"))
        active_layout.addWidget(self.runs)
        active_layout.addWidget(self.run_details)

        # the sections scroll: docked beside the Index panel, the panel must not claim the
        # screen's height (napari's window cannot get smaller than its docks' minimum); the
        # training controls and their progress stay in sight below
        sections = QWidget()
        sections_layout = QVBoxLayout(sections)
        sections_layout.setContentsMargins(0, 0, 0, 0)
        sections_layout.addWidget(self.index_label)
        sections_layout.addWidget(new_box)
        sections_layout.addWidget(active_box)
        sections_layout.addStretch()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(sections)
        train_row = QHBoxLayout()
        train_row.addWidget(self.train_button)
        train_row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll)
        # the scrolled sections take the height the dock gives (napari pads a non-expanding
        # panel with a stretch, which would part the buttons from the sections)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        layout.addLayout(train_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)

        self.weights.currentIndexChanged.connect(self._weights_changed)
        self.choice.currentIndexChanged.connect(self._choice_changed)
        self.keypoints.toggled.connect(self._suggest_name)
        self.runs.itemSelectionChanged.connect(self._show_run)
        self.model_select.currentIndexChanged.connect(self._model_chosen)
        browse.clicked.connect(self._browse)
        self.create_button.clicked.connect(self.create)
        self.rollback_button.clicked.connect(self.rollback)
        self.versions.itemSelectionChanged.connect(self._update_enabled)
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.models_changed.connect(self.refresh, Qt.ConnectionType.QueuedConnection)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        # not a method of self: Qt calls no slot of an object being destroyed
        self.destroyed.connect(partial(ModelPanel._detach, self))
        self._weights_changed()
        self._choice_changed()
        self._follow_open_index()

    # ------------------------------------------------------------------------------ public
    def set_index(self, index: Index | None) -> None:
        """Work on ``index`` (None: no index) and listen to its model changes."""
        if index is self.index:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.index = index
        if index is not None:
            self._unsubscribe = index.subscribe(self._index_changed)
            self.input_size.setValue(default_input_size(index)[0])
        self.refresh()

    def refresh(self) -> None:
        """Re-read the index's categories, active model, versions and runs."""
        index = self.index
        self.index_label.setText(
            f"Index: {index.path}" if index else "No index open: open an index folder first."
        )
        self.handle = None
        if index is not None:
            categories = index.categories()
            self.categories_label.setText(", ".join(c.name for c in categories) or "none yet")
            names = list(dict.fromkeys(k for c in categories for k in c.keypoint_names))
            self.keypoints_label.setText(", ".join(names) or "none")
            self._suggest_name()
            try:
                self.handle = active_model(index)
            except RefusedError:  # the only refusal: the index has no model yet
                self.model_label.setText(NO_MODEL)
        if self.handle is not None:
            config = self.handle.config
            self.model_label.setText(
                f"{self.handle.name}: {config.architecture}, {config.backbone}, "
                f"{config.min_size} px, purpose {config.purpose}; version "
                f"{self.handle.active_version}; categories: {', '.join(config.categories)}"
                + (f"; keypoints: {', '.join(config.keypoint_names)}"
                   if config.keypoint_names else "")
            )
        elif index is None:
            self.model_label.setText("")
        self._fill_models()
        self._fill_versions()
        self._fill_runs()
        self._update_enabled()

    def create(self) -> Worker | None:
        """Create a model from the form in the engine and make it the active one (building it
        and getting its weights need torch; a download of pretrained weights reports its progress
        here and in the activity dock); errors are shown, not raised."""
        if self.index is None or self.worker is not None:
            return None
        name = self.model_name.text().strip()
        if not name:
            show_error("Create model: give the model a name")
            return None
        weights = self.weights.currentData()
        if weights == "file":
            if not self.weights_file.text().strip():
                show_error("Create model: choose the initial weights file first")
                return None
            weights = str(Path(self.weights_file.text().strip()).resolve())
        size = self.input_size.value()
        task = self.session.create_model(
            self.index,
            choice=self.choice.currentData(),
            keypoints=self.keypoints.isChecked(),
            weights=weights,
            name=name,
            # the untouched default lets the registry also fit max_size to the images' aspect
            min_size=None if size == default_input_size(self.index)[0] else size,
        )
        return self._run(task, self._created)

    def _created(self, name: str) -> None:
        show_info(f"Created model {name!r} for {self.index.path.name}")
        self.model_name.clear()  # the name is taken now: offer the next free one

    def choose_model(self, name: str) -> ModelHandle | None:
        """Make the index's model ``name`` the active one; errors are shown, not raised."""
        if self.index is None:
            return None
        try:
            self.handle = set_active_model(self.index, name)
        except LearnCompleteError as exc:
            show_error(f"Active model: {exc}")
            self.refresh()  # the combo box goes back to the model that stays active
            return None
        show_info(f"Model {name!r} is now the active model of {self.index.path.name}")
        self.refresh()
        return self.handle

    def rollback(self) -> None:
        """Make the selected weight version the active one (in the engine: it reads the version's
        weight file)."""
        rows = self.versions.selectionModel().selectedRows()
        if self.handle is None or not rows or self.worker is not None:
            return
        number = int(self.versions.item(rows[0].row(), 0).text())
        name = self.handle.name
        self._run(self.session.rollback(self.index, name, number), lambda _: show_info(
            f"Model {name!r} rolled back to version {number}"))

    def start_training(self) -> Worker | None:
        """Start a full training run in the engine (progress here and in the activity dock)."""
        if self.index is None or self.worker is not None:
            return None
        return self._run(self.session.train(self.index), self._trained)

    def _run(self, task: Task, on_done: Callable[[Any], None]) -> Worker:
        """Run one task of this panel through the session in a thread worker; the panel's
        buttons wait for it, its progress shows here and in the activity dock."""
        self.progress.setRange(0, 0)
        self.progress_label.setText(f"{task.title}: starting")
        self._running, self._cancelling = task, False
        self.worker = run_in_worker(
            partial(self.session.run, task),
            title=task.title,
            owner=self,
            on_done=lambda result: (self.progress_label.setText(""), on_done(result)),
            on_error=partial(self._failed, task.title),
            on_progress=partial(self._progressed, task.title),
            on_finished=self._ended,
        )
        self._update_enabled()
        return self.worker

    def cancel_training(self) -> None:
        if self.worker is not None:
            self._cancelling = True
            self.progress_label.setText(f"{self._running.title}: cancelling…")
            self.worker.quit()

    def closeEvent(self, event: Any) -> None:
        self._detach()
        super().closeEvent(event)

    def _detach(self) -> None:
        """Stop hearing the index and the viewer; touches no widget, so it also serves once the
        panel is destroyed (its viewer closed), when a Learn's writes would reach deleted Qt
        objects."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.viewer.layers.events.inserted.disconnect(self._layers_changed)
        self.viewer.layers.events.removed.disconnect(self._layers_changed)

    # ----------------------------------------------------------------------------- private
    def _layers_changed(self, _event: Any = None) -> None:
        # an index registers its layers after napari inserts them: look once that is done
        QTimer.singleShot(0, self._follow_open_index)

    def _follow_open_index(self) -> None:
        opened = [layers.index for layers in index_layers(self.viewer)]
        if self.index is None or all(i.path != self.index.path for i in opened):
            self.set_index(opened[0] if opened else None)

    def _index_changed(self, change: Change) -> None:
        # any thread: hop to the main thread through the signal; runs too, so a cancelled or
        # failed Learn shows in the runs table as soon as it is recorded
        if change.table in ("models", "runs"):
            self.models_changed.emit()

    def _fill_models(self) -> None:
        """List the index's models with the active one selected, without choosing anything."""
        self.model_select.blockSignals(True)
        self.model_select.clear()
        if self.index is not None:
            self.model_select.addItems([handle.name for handle in models(self.index)])
        self.model_select.setCurrentIndex(
            -1 if self.handle is None else self.model_select.findText(self.handle.name)
        )
        self.model_select.blockSignals(False)

    def _model_chosen(self, row: int) -> None:
        name = self.model_select.itemText(row)
        if row >= 0 and (self.handle is None or name != self.handle.name):
            self.choose_model(name)

    def _fill_versions(self) -> None:
        versions = self.handle.versions() if self.handle is not None else []
        self.versions.setRowCount(len(versions))
        for row, v in enumerate(versions):
            values = (v.number, "" if v.parent is None else v.parent, v.note, v.created_at,
                      "yes" if v.active else "")
            for column, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                item.setToolTip(v.note)  # however narrow the column, the note in full
                self.versions.setItem(row, column, item)

    def _fill_runs(self) -> None:
        records = [] if self.handle is None else [
            RunRow(run) for run in self.index.runs.list(model_id=self.handle.id,
                                                         operations=("learn", "train"))
        ]
        self._run_records = [record.details() for record in records]
        self.runs.setRowCount(len(records))
        for row, record in enumerate(records):
            for column, text in enumerate(record.cells()):
                item = QTableWidgetItem(text)
                item.setToolTip(self._run_records[row])
                self.runs.setItem(row, column, item)
        self._show_run()

    def _show_run(self) -> None:
        rows = self.runs.selectionModel().selectedRows()
        self.run_details.setPlainText(
            self._run_records[rows[0].row()] if rows else NO_RUN_SELECTED
        )

    def _suggest_name(self) -> None:
        """Offer a free name, unless the user typed one of their own."""
        if self.index is None or self.model_name.text() not in ("", self._suggested_name):
            return
        self._suggested_name = free_model_name(self.index, self.keypoints.isChecked())
        self.model_name.setText(self._suggested_name)

    def _update_enabled(self) -> None:
        idle = self.worker is None
        has_index, has_model = self.index is not None, self.handle is not None
        self.create_button.setEnabled(idle and has_index)
        # a full training run keeps to the model it started with
        self.model_select.setEnabled(idle and has_model)
        self.rollback_button.setEnabled(
            idle and has_model and bool(self.versions.selectionModel().selectedRows())
        )
        self.train_button.setEnabled(idle and has_model)
        self.cancel_button.setEnabled(not idle)

    def _choice_changed(self) -> None:
        """Say what the chosen model is good for; the keypoints model implies keypoints."""
        choice = MODEL_CHOICES[self.choice.currentData()]
        self.choice_note.setText(choice.describe())
        implied = choice.architecture == "keypointrcnn"
        if implied:
            self.keypoints.setChecked(True)
        self.keypoints.setEnabled(not implied)

    def _weights_changed(self) -> None:
        is_file = self.weights.currentData() == "file"
        self.weights_file.setVisible(is_file)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Initial weights", "", "Weights (*.pt *.pth)")
        if path:
            self.weights_file.setText(path)
            self.weights.setCurrentIndex(self.weights.findData("file"))

    def _progressed(self, title: str, event: Progress) -> None:
        if event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
        self.progress_label.setText(describe(event, title=title))

    def _trained(self, result: TrainResult) -> None:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
        message = (f"Full training finished in {result.seconds:.0f} s on {result.images} images: "
                   f"version {result.version}" + (f"; {metrics}" if metrics else ""))
        self.progress_label.setText(message)
        show_info(message)
        self.trained.emit(result)

    def _failed(self, title: str, exc: Exception) -> None:
        self.progress_label.setText(f"{title} failed: {exc}")
        show_error(f"{title}: {exc}")

    def _ended(self, _worker: Worker) -> None:
        self.worker = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if self._cancelling:
            self.progress_label.setText(f"{self._running.title} cancelled: the model is as it was")
        self._running, self._cancelling = None, False
        self.refresh()


def _table(columns: tuple[str, ...], stretch: str) -> QTableWidget:
    """A read-only table whose ``stretch`` column takes the room the others do not need."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    # at least three rows in sight, however tall the rest of the panel is
    table.setMinimumHeight(table.horizontalHeader().sizeHint().height()
                           + 3 * table.verticalHeader().defaultSectionSize() + 4)
    header = table.horizontalHeader()
    for column, title in enumerate(columns):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if title == stretch
                                    else QHeaderView.ResizeMode.ResizeToContents)
    return table


def free_model_name(index: Index, keypoints: bool) -> str:
    """"default" for an index's first model, then "boxes-2", "keypoints-3"... (the first number
    that neither a model nor a leftover folder of the index uses)."""
    taken = {record.name for record in index.models.list()}

    def free(name: str) -> bool:
        return name not in taken and not (index.models_dir / name).exists()

    if free("default"):
        return "default"
    base = "keypoints" if keypoints else "boxes"
    return next(f"{base}-{n}" for n in itertools.count(2) if free(f"{base}-{n}"))


@dataclass(frozen=True)
class RunRow:
    """How the runs table shows one recorded run (the record itself: ``index.runs``)."""

    run: Run

    @property
    def training(self) -> dict[str, Any]:
        return self.run.settings.get("training", {})

    def scope_summary(self) -> str:
        """E.g. "category triangle, 8 images, 25% held out, +2 mixed in"."""
        scope = self.run.scope
        parts = [f"category {scope['category']}"] if scope.get("category") else []
        parts.append(f"{len(scope.get('images', []))} images")
        if scope.get("test"):
            percent = self.run.settings.get("test_percent", self.training.get("test_percent"))
            parts.append(f"{percent:g}% held out" if percent else
                         f"{len(scope['test'])} held out")
        if scope.get("mix_in"):
            parts.append(f"+{len(scope['mix_in'])} mixed in")
        return ", ".join(parts)

    def main_metric(self) -> str:
        """The held-out figure that matters for the kind: keypoint AP or box AP."""
        key = "keypoint_AP" if self.run.kind == "keypoints" and "keypoint_AP" in self.run.metrics \
            else "box_AP"
        value = self.run.metrics.get(key)
        return f"{key} {value:.3f}" if isinstance(value, float) else ""

    def cells(self) -> tuple[str, ...]:
        """The values of :data:`RUN_COLUMNS`."""
        epochs = self.run.settings.get("epochs", self.training.get("epochs"))
        return (
            "" if self.run.version is None else str(self.run.version),
            self.run.operation,
            self.run.kind or "",
            self.scope_summary(),
            " × ".join(str(v) for v in (epochs, self.run.settings.get("mode")) if v is not None),
            f"{self.run.losses[-1]:.4f}" if self.run.losses else "",
            self.main_metric(),
            "" if self.run.seconds is None else f"{self.run.seconds:.1f}",
            self.run.status,
        )

    def details(self) -> str:
        """The full record, for the detail box and the row tooltips."""

        def names(key: str) -> str:
            return ", ".join(image["name"] for image in self.run.scope.get(key, [])) or "none"

        run = self.run
        settings = {k: v for k, v in run.settings.items() if k != "training"}
        return "\n".join([
            f"Run {run.id}: {run.operation} ({run.kind or 'all'}), {run.status}, started "
            f"{run.started_at}" + ("" if run.seconds is None else f", {run.seconds:.1f} s")
            + ("" if run.version is None else f", wrote version {run.version}"),
            f"Scope: {self.scope_summary()}",
            f"Images: {names('images')}",
            f"Held out: {names('test')}",
            f"Mixed in: {names('mix_in')}",
            "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
            "Training: " + ", ".join(f"{k}={v}" for k, v in self.training.items()),
            "Losses: " + (", ".join(f"{v:.4f}" for v in self.run.losses) or "none"),
            "Metrics: " + (", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in self.run.metrics.items()) or "none"),
        ])
