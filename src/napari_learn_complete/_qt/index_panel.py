"""The Index panel: categories as cards, the image table, and the Learn / Complete entry points.

Right-click on selected images offers ROI and Keypoints submenus with Learn and Complete;
right-click on a category card offers Learn and Complete for that category. Both are enabled
exactly by the rules in :mod:`napari_learn_complete.actions`, and a disabled entry shows why as
its tooltip. Work runs in thread workers (:mod:`.workers`); the panel only starts it and reports
the outcome, and the layers follow the index through its change events.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import ensure_main_thread

from .._napari.layers import IndexLayers, index_layers, layers_for, open_index, real_viewer
from .._napari.menus import register_menus
from ..actions import Availability
from ..engine.progress import Progress
from ..engine.results import CompleteResult, Proposal, TrainResult
from ..errors import LearnCompleteError
from ..index import Change, Index
from ..session import Task, session_for
from . import dialogs
from .review import show_review
from .workers import Worker, describe, run_in_worker

if TYPE_CHECKING:
    import napari

KIND_TITLES = {"roi": "ROI", "keypoints": "Keypoints"}
KIND_WORDS = {"roi": "boxes", "keypoints": "keypoints"}
SELECTION_FILTERS = ("All images", "Selected", "Unselected")
_REFRESH_MS = 150  # coalesce the change events of a Complete batch into one repaint


class CategoryCard(QFrame):
    """One category: colour, name, counts. Click makes it active; right-click: Learn, Complete."""

    def __init__(self, panel: IndexPanel, name: str, colour: str) -> None:
        super().__init__()
        self.panel, self.name = panel, name
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        swatch = QLabel()
        swatch.setFixedSize(14, 14)
        swatch.setStyleSheet(f"background: {colour}; border-radius: 7px;")
        self.title = QLabel(f"<b>{name}</b>")
        self.counts = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 3, 6, 3)
        layout.addWidget(swatch)
        layout.addWidget(self.title)
        layout.addStretch(1)
        layout.addWidget(self.counts)

    def set_counts(self, counts: dict[str, int]) -> None:
        self.counts.setText(
            f"{counts['images']} images · {counts['boxes']} boxes · "
            f"{counts['keypoints']} keypoints"
        )

    def set_active(self, active: bool) -> None:
        self.setLineWidth(2 if active else 1)
        self.setFrameShadow(QFrame.Shadow.Sunken if active else QFrame.Shadow.Raised)
        self.title.setText(f"<b>▶ {self.name}</b>" if active else f"<b>{self.name}</b>")

    def mousePressEvent(self, event: Any) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.panel.set_active_category(self.name)
        super().mousePressEvent(event)

    def contextMenuEvent(self, event: Any) -> None:
        self.panel.category_menu(self.name).exec(event.globalPos())


class IndexPanel(QWidget):
    """Dock widget over the index shown in the viewer (see :func:`index_layers`)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        register_menus(self.viewer)
        self.session = session_for(self.viewer)  # rules, captured tasks, runner, last run
        self.layers: IndexLayers | None = None
        self.workers: list[Worker] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._ids: list[int] = []  # image id of each table row
        self._cards: dict[str, CategoryCard] = {}
        self._pending: set[str] = set()  # tables changed since the last refresh
        self._refresh_timer = QTimer(self, singleShot=True, interval=_REFRESH_MS)
        self._refresh_timer.timeout.connect(self._apply_changes)
        self._build()
        self.viewer.layers.events.inserted.connect(self._follow_viewer)
        self.viewer.layers.events.removed.connect(self._follow_viewer)
        self.viewer.layers.selection.events.active.connect(self._follow_viewer)
        self.destroyed.connect(self._disconnect_index)
        self._follow_viewer()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.index_label = QLabel("No index open")
        self.index_label.setWordWrap(True)
        open_button = QPushButton("Open index...")
        open_button.clicked.connect(self._ask_open)
        top = QHBoxLayout()
        top.addWidget(self.index_label, 1)
        top.addWidget(open_button)

        self.cards = QVBoxLayout()
        self.cards.setSpacing(2)

        self.category_filter = QComboBox()
        self.attribute_filter = QComboBox()
        self.selection_filter = QComboBox()
        self.selection_filter.addItems(SELECTION_FILTERS)
        self.category_filter.currentIndexChanged.connect(self._reload_images)
        self.attribute_filter.currentIndexChanged.connect(self._reload_images)
        self.selection_filter.currentIndexChanged.connect(self._apply_selection_filter)
        filters = QHBoxLayout()
        for combo, tip in (
            (self.category_filter, "Show images with an observation of this category"),
            (self.attribute_filter, "Show images with an observation having this attribute"),
            (self.selection_filter, "Show all, only the selected or only the unselected images"),
        ):
            combo.setToolTip(tip)
            filters.addWidget(combo)

        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Image", "Size", "Observations"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()  # names get the room, the numbers what they need
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(
            lambda pos: self.image_menu().exec(self.table.viewport().mapToGlobal(pos))
        )
        self.table.currentCellChanged.connect(self._show_current)
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.status = QLabel()  # live readout: stage, epoch, loss
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running Learn / Complete (saved work is kept)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.undo_button = QPushButton("Undo last Complete")
        self.undo_button.setToolTip("Put back exactly what the last Complete (or accepted "
                                    "review) changed, even a cancelled one")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self.undo_last_complete)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.undo_button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(QLabel("Categories (click: make active; right-click: Learn, Complete)"))
        layout.addLayout(self.cards)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)

    # ------------------------------------------------------------ which index
    @property
    def index(self) -> Index | None:
        return self.layers.index if self.layers is not None else None

    def _follow_viewer(self, *_: object) -> None:
        """Show the index of the active layer, else the last index opened in the viewer."""
        active = self.viewer.layers.selection.active
        chosen = layers_for(active) if active is not None else None
        if chosen is None:
            opened = index_layers(self.viewer)
            if self.layers in opened:
                return
            chosen = opened[-1] if opened else None
        self.show_index(chosen)

    def show_index(self, layers: IndexLayers | None) -> None:
        """Switch the panel to another index's layers (or to none)."""
        if layers is self.layers:
            return
        self._disconnect_index()
        self.layers = layers
        if layers is not None:
            self._unsubscribe = layers.index.subscribe(self._on_change)
            layers.events.active_category.connect(self._mark_active)
        self.index_label.setText(
            f"Index: <b>{layers.index.path.name}</b>" if layers else "No index open"
        )
        self._reload_categories()
        self._reload_images()

    def _disconnect_index(self, *_: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.layers is not None:
            self.layers.events.active_category.disconnect(self._mark_active)

    def _ask_open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a Learn & Complete index")
        if folder:
            self.show_index(open_index(self.viewer, folder))

    # ----------------------------------------------------------- live refresh
    def _on_change(self, change: Change) -> None:
        """Runs in the committing thread (maybe a worker): hop to the main thread."""
        self._queue_change(change.table)

    @ensure_main_thread
    def _queue_change(self, table: str) -> None:
        self._pending.add(table)
        self._refresh_timer.start()

    def _apply_changes(self) -> None:
        pending, self._pending = self._pending, set()
        if "categories" in pending:
            self._reload_categories()
        if pending & {"images", "categories"}:
            self._reload_images()
        elif "observations" in pending:
            self._reload_attributes()
            self._update_counts()
        if "runs" in pending:  # a Complete or an accepted review can now be undone
            self.undo_button.setEnabled(self.session.can_undo)

    # --------------------------------------------------------------- categories
    def _reload_categories(self) -> None:
        for card in self._cards.values():
            card.deleteLater()
        self._cards.clear()
        index = self.index
        names = [c.name for c in index.categories()] if index else []
        if index is not None:
            for cat in index.categories():
                card = CategoryCard(self, cat.name, cat.colour)
                self._cards[cat.name] = card
                self.cards.addWidget(card)
        self._refill(self.category_filter, "All categories", [(n, n) for n in names])
        self._reload_attributes()
        self._update_counts()
        self._mark_active()

    def _reload_attributes(self) -> None:
        values = self.index.attribute_values() if self.index else {}
        if self._refill(self.attribute_filter, "Any attribute", [
            (f"{key} = {value}", (key, value)) for key, vals in values.items() for value in vals
        ]):
            self._reload_images()

    @staticmethod
    def _refill(combo: QComboBox, everything: str, items: list[tuple[str, Any]]) -> bool:
        """Replace the choices, keeping the current one; True when it had to fall back."""
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(everything, None)
        for text, data in items:
            combo.addItem(text, data)
        found = combo.findData(current) if current is not None else -1
        combo.setCurrentIndex(max(found, 0))
        combo.blockSignals(False)
        return current is not None and found < 0

    def _mark_active(self, *_: object) -> None:
        active = self.layers.active_category if self.layers else None
        for name, card in self._cards.items():
            card.set_active(name == active)

    def set_active_category(self, name: str) -> None:
        """Make ``name`` the category new boxes and points take (and Complete writes to)."""
        if self.layers is not None:
            self.layers.active_category = name
            self._mark_active()

    # ------------------------------------------------------------------- images
    def _reload_images(self, *_: object) -> None:
        """Fill the table with the images passing the category and attribute filters."""
        index = self.index
        keep = set(self.selected_image_ids(visible_only=False))
        images = index.images(
            category=self.category_filter.currentData(),
            attribute=self.attribute_filter.currentData(),
        ) if index else []
        self.table.blockSignals(True)
        self.table.clearContents()
        self.table.setRowCount(len(images))
        self._ids = [image.id for image in images]
        for row, image in enumerate(images):
            self.table.setItem(row, 0, QTableWidgetItem(image.name))
            self.table.setItem(row, 1, QTableWidgetItem(f"{image.width}×{image.height}"))
            self.table.setItem(row, 2, QTableWidgetItem())
            if image.id in keep:
                self.table.selectRow(row)
        self.table.blockSignals(False)
        self._update_counts()
        self._apply_selection_filter()

    def _update_counts(self) -> None:
        index = self.index
        if index is None:
            return
        counts = index.counts()
        for name, card in self._cards.items():
            card.set_counts(counts.get(name, {"images": 0, "boxes": 0, "keypoints": 0}))
        per_image = dict(
            index.query("SELECT image_id, COUNT(*) FROM observations GROUP BY image_id")
        )
        for row, image_id in enumerate(self._ids):
            item, text = self.table.item(row, 2), str(per_image.get(image_id, 0))
            if item.text() != text:  # a set text re-fits the column and repaints: changed only
                item.setText(text)

    def _selected_rows(self) -> set[int]:
        return {i.row() for i in self.table.selectionModel().selectedRows()}

    def selected_image_ids(self, *, visible_only: bool = True) -> list[int]:
        """Ids of the selected images (those the filters hide are left out by default)."""
        return [
            self._ids[row] for row in sorted(self._selected_rows())
            if not (visible_only and self.table.isRowHidden(row))
        ]

    def select_images(self, image_ids: list[int]) -> None:
        """Select exactly these images in the table (for scripts and tests)."""
        wanted = set(image_ids)
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row, image_id in enumerate(self._ids):
            if image_id in wanted:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def _apply_selection_filter(self, *_: object) -> None:
        which = self.selection_filter.currentText()
        selected = self._selected_rows()
        for row in range(self.table.rowCount()):
            hide = (which == "Selected" and row not in selected) or (
                which == "Unselected" and row in selected
            )
            self.table.setRowHidden(row, hide)

    def _selection_changed(self) -> None:
        if self.selection_filter.currentText() != "All images":
            self._apply_selection_filter()

    def _show_current(self, row: int, *_: int) -> None:
        if self.layers is not None and 0 <= row < len(self._ids):
            self.layers.show_image(self._ids[row])

    # -------------------------------------------------------------------- menus
    def image_availability(self, kind: str) -> Availability:
        return self.session.image_availability(
            self.index, self.selected_image_ids(), kind,
            self.layers.active_category if self.layers else None,
        )

    def image_menu(self) -> QMenu:
        """ROI and Keypoints submenus, each with Learn and Complete, for the selected images."""
        menu = QMenu(self)
        for kind, title in KIND_TITLES.items():
            sub = menu.addMenu(title)
            sub.setToolTipsVisible(True)
            _add_actions(sub, self.image_availability(kind),
                         {"Learn": partial(self.learn_images, kind),
                          "Complete": partial(self.complete_images, kind)},
                         f"({title}) on the selected images")
        return menu

    def category_menu(self, name: str) -> QMenu:
        """Learn and Complete for one category, enabled when it has an observation."""
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        found = self.session.category_availability(self.index, name)
        _add_actions(menu, found, {"Learn": partial(self.learn_category, name),
                                   "Complete": partial(self.complete_category, name)},
                     f"for category {name!r}")
        return menu

    # -------------------------------------------------------------------- work
    def _start(self, make: Callable[[], Task], on_done: Callable[[Task, Any], None]
               ) -> Worker | None:
        """Capture the task ``make`` returns and run it through the session in a thread worker
        (the engine does the work); a refusal while capturing (no model...) is shown, no job."""
        try:
            task = make()
        except LearnCompleteError as exc:
            show_error(str(exc))
            return None
        worker = run_in_worker(
            self.viewer, partial(self.session.run, task), title=task.title,
            on_done=partial(on_done, task), on_progress=self._show_progress,
            on_finished=self._finished,
        )
        self.workers.append(worker)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"{task.title}: starting...")
        return worker

    def _finished(self, worker: Worker) -> None:
        self.workers.remove(worker)
        self.cancel_button.setEnabled(bool(self.workers))
        self.undo_button.setEnabled(self.session.can_undo)
        if not self.workers:
            self.status.setText("")

    def _show_progress(self, event: Progress) -> None:
        self.status.setText(describe(event))

    def cancel(self) -> None:
        """Ask every running Learn / Complete to stop (the engine is stopped if it does not)."""
        for worker in self.workers:
            worker.quit()

    def _refuse(self, found: Availability) -> bool:
        if not found.enabled:
            show_info(found.reason)
        return not found.enabled

    def learn_images(self, kind: str, *_: object) -> Worker | None:
        """Learn (``kind`` 'roi' or 'keypoints') on the selected images, after the dialog."""
        if self._refuse(self.image_availability(kind)):
            return None
        index, ids = self.layers.index, self.selected_image_ids()
        settings = dialogs.ask_learn(
            f"Learn {KIND_WORDS[kind]} on {len(ids)} selected image(s)", self
        )
        if settings is None:
            return None
        return self._start(partial(self.session.learn_images, index, ids, kind, settings),
                           self._learned)

    def learn_category(self, name: str, *_: object) -> Worker | None:
        """Learn on every image of category ``name``, after the dialog."""
        if self._refuse(self.session.category_availability(self.index, name)):
            return None
        settings = dialogs.ask_learn(f"Learn on all images of category {name!r}", self)
        if settings is None:
            return None
        return self._start(
            partial(self.session.learn_category, self.layers.index, name, settings), self._learned
        )

    def _learned(self, _task: Task, result: TrainResult) -> None:
        parts = [f"Learn finished on {result.images} image(s) in {result.seconds:.0f} s"]
        if result.losses:
            parts.append(f"final loss {result.losses[-1]:.4f}")
        if result.version is not None:
            parts.append(f"model version {result.version}")
        if result.metrics:
            parts.append("validation: " + ", ".join(
                f"{key} {value:.3f}" for key, value in result.metrics.items()
            ))
        show_info("; ".join(parts))

    def complete_images(self, kind: str, *_: object) -> Worker | None:
        """Complete (``kind``) the selected images into the active category, after the dialog.

        The index, images and category are captured when the user confirms: results go there
        even if the user switches category or layer while Complete runs.
        """
        if self._refuse(self.image_availability(kind)):
            return None
        count = len(self.selected_image_ids())
        settings = dialogs.ask_complete(
            f"Complete {KIND_WORDS[kind]} on {count} selected image(s) "
            f"into category {self.layers.active_category!r}", parent=self,
        )
        if settings is None:
            return None
        return self._start(partial(
            self.session.complete_images, self.layers.index, self.selected_image_ids(),
            self.layers.active_category, kind, settings,
        ), self._completed)

    def _completed(self, task: Task, result: CompleteResult) -> None:
        removed = f", removed {result.removed} existing" if result.removed else ""
        show_info(
            f"Complete wrote {result.written} observation(s) with {KIND_WORDS[task.kind]} on "
            f"{result.images} image(s) into category {task.category!r}{removed}"
        )

    def undo_last_complete(self) -> int:
        """Put back what the last Complete (or accepted review) changed; returns how many."""
        if not self.session.can_undo:
            return 0
        try:
            count = self.session.undo_last()
        except LearnCompleteError as exc:  # e.g. an observation of the run was edited since
            show_error(f"Undo: {exc}")
            return 0
        finally:
            self.undo_button.setEnabled(self.session.can_undo)
        show_info(f"Undo: put back {count} observation(s) changed by the last Complete")
        return count

    def complete_category(self, name: str, *_: object) -> Worker | None:
        """Look for ``name`` on the images of other categories; proposals open in the review."""
        if self._refuse(self.session.category_availability(self.index, name)):
            return None
        settings = dialogs.ask_complete(
            f"Find category {name!r} on images that do not have it yet", from_category=True,
            parent=self,
        )
        if settings is None:
            return None
        return self._start(
            partial(self.session.complete_category, self.layers.index, name, settings),
            self._review,
        )

    def _review(self, task: Task, proposals: list[Proposal]) -> None:
        if not proposals:
            show_info(f"Complete from category {task.category!r}: no proposals")
            return
        show_review(self.viewer, task.index, task.category, proposals, beside=self)
        show_info(f"{len(proposals)} proposal(s) for {task.category!r}: review them before "
                  "saving")


def index_panel(viewer: napari.Viewer) -> IndexPanel:
    """The viewer's Index panel, docked first if it is not open yet."""
    _, panel = viewer.window.add_plugin_dock_widget("napari-learn-complete", "Index panel")
    return panel


def _add_actions(
    menu: QMenu, found: Availability, slots: dict[str, Callable[[], None]], what: str
) -> None:
    """Add Learn/Complete entries, enabled per the specification's rule, with the reason (or
    what the entry does) as tooltip."""
    for text, slot in slots.items():
        action = menu.addAction(text)
        action.setEnabled(found.enabled)
        action.setToolTip(found.reason or f"{text} {what}")
        action.triggered.connect(lambda _checked=False, slot=slot: slot())
