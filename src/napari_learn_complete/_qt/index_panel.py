"""The Index panel: categories as cards, the image table, and the Learn / Complete entry points.

Right-click on selected images offers ROI and Keypoints submenus with Learn and Complete;
right-click on a category card offers Learn and Complete of each kind for that category. Both are
enabled exactly by the rules in :mod:`napari_learn_complete.actions`, and a disabled entry shows
why as its tooltip. Work runs in thread workers (:mod:`.workers`); the panel only starts it and
reports the outcome, and the layers follow the index through its change events.

The image table is a ``QTableView`` over :class:`ImageTableModel` (every image of the index) and
:class:`ImageFilter` (the category, attribute and review filters): the index's changes become
inserted rows and changed cells, never a rebuilt table, so an index of tens of thousands of images
opens at once, a Complete streaming results costs what it changed, and the selection stays. What
a change or a filter choice makes the panel re-read (counts, attributes, reviewed images, the
images a filter passes: queries that grow with the index) is read in a thread of the panel's own,
and only shown on the main thread. The table's current row follows the image the viewer shows.

Below the cards, the labeller's edits that are not drawing: the keypoint the next click places,
attributes of the observations selected in the layers, and the reviewed state of images.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from .._napari.layers import IndexLayers, index_layers, layers_for, open_index, real_viewer
from .._napari.menus import register_menus
from ..actions import Availability
from ..engine.progress import Progress
from ..engine.results import CompleteResult, Proposals, TrainResult
from ..engine.scope import learn_scope
from ..engine.settings import LearnSettings
from ..errors import LearnCompleteError, listed
from ..index import KIND_NOUNS, KIND_TITLES, Category, Change, ImageRecord, Index
from ..model.config import Suggested
from ..model.registry import active_model
from ..session import Task, session_for
from . import dialogs
from .model_panel import free_model_name
from .review import show_review
from .workers import Worker, describe, reason_first, run_in_worker

if TYPE_CHECKING:
    import napari

SELECTION_FILTERS = ("All images", "Selected", "Unselected")
REVIEW_FILTERS = (("All review states", None), ("Reviewed", True), ("Not reviewed", False))
VIDEO_NOT_SHOWN = "video clip: not shown in the viewer"
_REFRESH_MS = 150  # coalesce the change events of a Complete batch into one repaint
_NO_COUNTS = {"images": 0, "boxes": 0, "keypoints": 0}
_NO_OBSERVATIONS = (0, 0)  # (human, model) of an image without observations
_FIT_ROWS = 100  # rows read to fit the number columns to their contents
_DISPLAY = Qt.ItemDataRole.DisplayRole
log = logging.getLogger(__name__)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``count`` and the noun in the right number: "1 image", "2 images", "3 boxes"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {nouns or (noun + 'es' if noun.endswith(('x', 's', 'sh')) else noun + 's')}"


def _runs(rows: Iterable[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each block of consecutive numbers in the sorted ``rows``: one signal or
    selection range per block instead of one per row."""
    for _, block in groupby(enumerate(rows), key=lambda pair: pair[1] - pair[0]):
        found = [row for _, row in block]
        yield found[0], found[-1]


class ImageTableModel(QAbstractTableModel):
    """Every image of the index in id order: name, size, its human and model observations, and
    whether it was reviewed.

    It changes in place: new images are inserted rows, new counts and review marks are changed
    cells, so a view keeps its selection, current row and scroll position while Complete streams
    results in, and an update costs what changed, not the size of the index.
    """

    COLUMNS = ("Name", "Size", "Human", "Model", "Reviewed")
    NAME, SIZE, HUMAN, MODEL, REVIEWED = range(5)

    def __init__(self) -> None:
        super().__init__()
        self._images: list[ImageRecord] = []
        self._ids: list[int] = []  # ascending, as the rows: a row is found by bisection
        # image id -> (human, model) observations (images with none left out)
        self._counts: dict[int, tuple[int, int]] = {}
        self._reviewed: set[int] = set()

    def reset(self, images: Sequence[ImageRecord]) -> None:
        """Show another index's images (counts come with :meth:`set_counts`)."""
        self.beginResetModel()
        self._images = sorted(images, key=attrgetter("id"))
        self._ids = [image.id for image in self._images]
        self._counts = {}
        self._reviewed = {image.id for image in self._images if image.reviewed}
        self.endResetModel()

    def image_id(self, row: int) -> int:
        return self._ids[row]

    def record(self, row: int) -> ImageRecord:
        return self._images[row]

    def row_of(self, image_id: int) -> int | None:
        row = bisect_left(self._ids, image_id)
        return row if row < len(self._ids) and self._ids[row] == image_id else None

    def add_images(self, images: Iterable[ImageRecord]) -> None:
        """Insert the images not shown yet at their places in id order, a block at a time."""
        known = set(self._ids)
        new = sorted((im for im in images if im.id not in known), key=attrgetter("id"))
        blocks = [(row, list(block)) for row, block in
                  groupby(new, key=lambda image: bisect_left(self._ids, image.id))]
        for row, block in reversed(blocks):  # from the end: the places before it stay valid
            self.beginInsertRows(QModelIndex(), row, row + len(block) - 1)
            self._images[row:row] = block
            self._ids[row:row] = [image.id for image in block]
            self.endInsertRows()

    def set_counts(self, counts: dict[int, tuple[int, int]]) -> None:
        """Take the (human, model) observation counts of every image; only the cells that
        changed are announced."""
        old, self._counts = self._counts, counts
        changed = [i for i in old.keys() | counts.keys()
                   if old.get(i, _NO_OBSERVATIONS) != counts.get(i, _NO_OBSERVATIONS)]
        for column, part in ((self.HUMAN, 0), (self.MODEL, 1)):
            self._changed(column, (i for i in changed if old.get(i, _NO_OBSERVATIONS)[part]
                                   != counts.get(i, _NO_OBSERVATIONS)[part]))

    def set_reviewed(self, image_ids: set[int]) -> None:
        """Take the ids of the reviewed images; only the marks that changed are announced."""
        old, self._reviewed = self._reviewed, image_ids
        self._changed(self.REVIEWED, old ^ image_ids)

    def _changed(self, column: int, image_ids: Iterable[int]) -> None:
        """Announce the cells of ``column`` of these images: one ``dataChanged`` per block of
        neighbouring rows."""
        rows = sorted(row for i in image_ids if (row := self.row_of(i)) is not None)
        for first, last in _runs(rows):
            self.dataChanged.emit(self.index(first, column), self.index(last, column),
                                  [_DISPLAY])

    # -- Qt model interface
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._images)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = _DISPLAY) -> Any:
        if role != _DISPLAY or not index.isValid():  # asked for many roles: answer fast
            return None
        image, column = self._images[index.row()], index.column()
        if column == self.NAME:
            return image.name
        if column == self.SIZE:
            return f"{image.width}×{image.height}"
        if column == self.REVIEWED:
            return "✓" if image.id in self._reviewed else ""
        return str(self._counts.get(image.id, _NO_OBSERVATIONS)[column - self.HUMAN])


class ImageFilter(QSortFilterProxyModel):
    """Shows the images that pass the category, attribute and review filters: the index finds
    their ids (:meth:`Index.images`), so the filter rules stay in the store."""

    def __init__(self, source: ImageTableModel) -> None:
        super().__init__()
        self.setSourceModel(source)
        self.image_ids: set[int] | None = None  # None: no filter, every image passes

    def set_image_ids(self, image_ids: set[int] | None) -> None:
        """Show these images only; rows that stay keep their selection."""
        if image_ids != self.image_ids:
            self.image_ids = image_ids
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        return self.image_ids is None or self.sourceModel().image_id(row) in self.image_ids


# (category, (key, value), reviewed); None: any
Filters = tuple[str | None, tuple[str, str] | None, bool | None]
_NO_FILTER: Filters = (None, None, None)


@dataclass(frozen=True)
class Passing:
    """The images the filter choices ``filters`` pass in ``index`` (``image_ids`` None: no
    filter, every image)."""

    index: Index | None
    filters: Filters
    image_ids: set[int] | None

    @classmethod
    def of(cls, index: Index | None, filters: Filters) -> Passing:
        if index is None or filters == _NO_FILTER:
            return cls(index, filters, None)
        category, attribute, reviewed = filters
        return cls(index, filters, {image.id for image in index.images(
            category=category, attribute=attribute, reviewed=reviewed)})


@dataclass(frozen=True)
class Reading:
    """What the panel shows that the index decides, read in one go: inline when the panel
    opens, in the panel's reader thread after a change (these queries grow with the index)."""

    index: Index | None
    images: list[ImageRecord] | None  # every image, when images changed
    counts: dict[str, dict[str, int]]  # per category: images, boxes, keypoints
    per_image: dict[int, tuple[int, int]]  # (human, model) observations per image
    attributes: dict[str, list[str]]  # attribute key -> values
    passing: Passing

    @classmethod
    def of(cls, index: Index | None, filters: Filters, *, images: bool = False) -> Reading:
        """Read ``index`` (None: nothing to show); ``images``: the images changed (some were
        added, or marked reviewed)."""
        if index is None:
            return cls(None, None, {}, {}, {}, Passing.of(None, filters))
        return cls(index, index.images() if images else None, index.counts(),
                   index.observation_counts(), index.attribute_values(),
                   Passing.of(index, filters))


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
        self.counts.setText(" · ".join((
            plural(counts["images"], "image"), plural(counts["boxes"], "box"),
            plural(counts["keypoints"], "keypoint"),
        )))

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

    # Emitted from other threads, delivered on the main thread; Qt drops them once the panel is
    # deleted, where a call into a deleted widget would abort the process.
    _changed = Signal(str)  # a table of the index changed
    _reading_done = Signal(object)  # a Reading or Passing, read in the reader thread

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        register_menus(self.viewer)
        self.session = session_for(self.viewer)  # rules, captured tasks, runner, last run
        self.layers: IndexLayers | None = None
        self.workers: list[Worker] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._moving_rows = False  # the table changes rows itself: the viewer stays put
        self._cards: dict[str, CategoryCard] = {}
        self._categories: dict[str, Category] = {}
        self._selected_observations: list[int] = []  # shown in selection_attributes
        self._pending: set[str] = set()  # tables changed since the last refresh
        self._refresh_timer = QTimer(self, singleShot=True, interval=_REFRESH_MS)
        self._refresh_timer.timeout.connect(self._apply_changes)
        self._reader = ThreadPoolExecutor(1, "index-panel-reader")  # one connection, in order
        self._build()
        self.viewer.layers.events.inserted.connect(self._follow_viewer)
        self.viewer.layers.events.removed.connect(self._follow_viewer)
        self.viewer.layers.selection.events.active.connect(self._follow_viewer)
        # a bound method of the object being destroyed is not called from its own destroyed
        # signal under PyQt6; a partial of the class function is
        self.destroyed.connect(partial(IndexPanel._disconnect_index, self))
        self.destroyed.connect(partial(IndexPanel._stop_reading, self))
        self._changed.connect(self._queue_change, Qt.ConnectionType.QueuedConnection)
        self._reading_done.connect(self._show_reading, Qt.ConnectionType.QueuedConnection)
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

        self.keypoint_choice = QComboBox()
        self.keypoint_choice.setToolTip("The keypoint the next click on the keypoints layer "
                                        "places; it moves on to the next one after each click")
        self.keypoint_choice.currentIndexChanged.connect(self._choose_keypoint)
        self.attribute_key = QLineEdit(placeholderText="key")
        self.attribute_value = QLineEdit(placeholderText="value")
        self.set_attribute_button = QPushButton("Set on selected")
        self.set_attribute_button.setToolTip("Set this attribute on the boxes and keypoints "
                                             "selected in the layers")
        self.set_attribute_button.clicked.connect(self.set_attribute)
        self.remove_attribute_button = QPushButton("Remove")
        self.remove_attribute_button.setToolTip("Remove the attribute with this key from the "
                                                "boxes and keypoints selected in the layers")
        self.remove_attribute_button.clicked.connect(self.remove_attribute)
        attribute_row = QHBoxLayout()
        for widget in (self.attribute_key, self.attribute_value, self.set_attribute_button,
                       self.remove_attribute_button):
            attribute_row.addWidget(widget)
        self.selection_attributes = QLabel()  # the attributes of the selected observations
        self.selection_attributes.setWordWrap(True)
        edits = QFormLayout()
        edits.addRow("Keypoint to place", self.keypoint_choice)
        edits.addRow("Attribute", attribute_row)
        edits.addRow("", self.selection_attributes)

        self.category_filter = QComboBox()
        self.attribute_filter = QComboBox()
        self.review_filter = QComboBox()
        for text, reviewed in REVIEW_FILTERS:
            self.review_filter.addItem(text, reviewed)
        self.selection_filter = QComboBox()
        self.selection_filter.addItems(SELECTION_FILTERS)
        for combo in (self.category_filter, self.attribute_filter, self.review_filter):
            combo.currentIndexChanged.connect(self._refilter)
        self.selection_filter.currentIndexChanged.connect(self._apply_selection_filter)
        filters = QHBoxLayout()
        for combo, tip in (
            (self.category_filter, "Show images with an observation of this category"),
            (self.attribute_filter, "Show images with an observation having this attribute"),
            (self.review_filter, "Show all images, only the reviewed or only the others"),
            (self.selection_filter, "Show all, only the selected or only the unselected images"),
        ):
            combo.setToolTip(tip)
            filters.addWidget(combo)

        self.image_model = ImageTableModel()
        self.image_filter = ImageFilter(self.image_model)
        self.table = QTableView()
        self.table.setModel(self.image_filter)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()  # names get the room, the numbers what they need
        header.setSectionResizeMode(ImageTableModel.NAME, QHeaderView.ResizeMode.Stretch)
        for column in range(ImageTableModel.SIZE, len(ImageTableModel.COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        # a count that changes re-fits its column: from the rows around the shown ones, not
        # from 1000 rows (Qt's default), which took 0.1 s per change on a large index
        header.setResizeContentsPrecision(_FIT_ROWS)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(
            lambda pos: self.image_menu().exec(self.table.viewport().mapToGlobal(pos))
        )
        self.table.selectionModel().currentRowChanged.connect(self._show_current)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.image_filter.rowsInserted.connect(self._selection_changed)  # new rows: hide or not
        self.image_filter.modelReset.connect(self._selection_changed)

        self.current_label = QLabel()  # the image the viewer shows
        self.reviewed_button = QPushButton("Mark reviewed")
        self.reviewed_button.setToolTip("Mark the selected images (none selected: the image "
                                        "shown) as reviewed")
        self.reviewed_button.clicked.connect(lambda: self.mark_reviewed(True))
        self.not_reviewed_button = QPushButton("Mark not reviewed")
        self.not_reviewed_button.setToolTip("Take the reviewed mark off the selected images "
                                            "(none selected: the image shown)")
        self.not_reviewed_button.clicked.connect(lambda: self.mark_reviewed(False))
        review_row = QHBoxLayout()
        review_row.addWidget(self.current_label, 1)
        review_row.addWidget(self.reviewed_button)
        review_row.addWidget(self.not_reviewed_button)

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
        layout.addLayout(edits)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(review_row)
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
            for emitter, slot in self._layer_slots(layers):
                emitter.connect(slot)
        self.index_label.setText(
            f"Index: <b>{layers.index.path.name}</b>" if layers else "No index open"
        )
        with self._rows_moving():
            self.image_model.reset(layers.index.images() if layers else [])
        self._reload_categories()
        self._show(Reading.of(self.index, self._filters()))  # at once: it opens complete
        self._follow_current_image()
        self._show_selection_attributes()

    def _layer_slots(self, layers: IndexLayers) -> list[tuple[Any, Callable[..., None]]]:
        """What the panel follows of the layers it shows: the active category and keypoint, the
        image shown, the boxes and keypoints selected."""
        return [
            (layers.events.active_category, self._show_active),
            (layers.events.active_keypoint, self._show_keypoints),
            (layers.events.current_image, self._follow_current_image),
            (layers.boxes_layer.events.highlight, self._show_selection_attributes),
            (layers.keypoints_layer.events.highlight, self._show_selection_attributes),
        ]

    def _disconnect_index(self, *_: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.layers is not None:
            for emitter, slot in self._layer_slots(self.layers):
                emitter.disconnect(slot)

    def _ask_open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a Learn & Complete index")
        if folder:
            self.show_index(open_index(self.viewer, folder))

    # ----------------------------------------------------------- live refresh
    def _on_change(self, change: Change) -> None:
        """Runs in the committing thread (maybe a worker): hop to the main thread through a
        queued signal, which Qt drops once the panel is deleted (a closed viewer)."""
        self._changed.emit(change.table)

    def _queue_change(self, table: str) -> None:
        self._pending.add(table)
        self._refresh_timer.start()

    def _apply_changes(self) -> None:
        pending, self._pending = self._pending, set()
        if "categories" in pending:
            self._reload_categories()
        if pending & {"images", "categories", "observations"} and self.index is not None:
            self._read(Reading.of, self.index, self._filters(), images="images" in pending)
        if "observations" in pending:  # the selection's attributes may have changed
            self._show_selection_attributes(force=True)
        if "runs" in pending:  # a Complete or an accepted review can now be undone
            self.undo_button.setEnabled(self.session.can_undo)

    def _read(self, read: Callable[..., Reading | Passing], *args: Any, **kwargs: Any) -> None:
        """Run a query that grows with the index in the reader thread; its result is shown on
        the main thread."""
        self._reader.submit(read, *args, **kwargs).add_done_callback(self._read_done)

    def _read_done(self, reading: Future[Reading | Passing]) -> None:
        """Runs in the reader thread: a failed read is logged (the next change reads again)."""
        if reading.cancelled():  # the panel closed before it ran
            return
        try:
            self._reading_done.emit(reading.result())
        except Exception:
            log.exception("the Index panel could not read the index")

    def _show_reading(self, reading: Reading | Passing) -> None:
        if reading.index is not self.index:  # an index the panel has left meanwhile
            return
        if isinstance(reading, Passing):
            self._show_passing(reading)
        else:
            self._show(reading)

    def _show(self, reading: Reading) -> None:
        """Show a reading: new rows, attribute choices, counts, review marks, the images the
        filters pass."""
        if reading.images is not None:
            with self._rows_moving():
                self.image_model.add_images(reading.images)
            self.image_model.set_reviewed({i.id for i in reading.images if i.reviewed})
        self._refill(self.attribute_filter, "Any attribute", [
            (f"{key} = {value}", (key, value))
            for key, values in reading.attributes.items() for value in values
        ])
        for name, card in self._cards.items():
            card.set_counts(reading.counts.get(name, _NO_COUNTS))
        self.image_model.set_counts(reading.per_image)
        if reading.passing.filters == self._filters():
            self._show_passing(reading.passing)
        else:  # a choice is gone from the index (the user's own changes are read already)
            self._refilter()

    def _show_passing(self, passing: Passing) -> None:
        """Show the images the filters pass, unless the user has chosen others meanwhile."""
        if passing.filters == self._filters():
            with self._rows_moving():
                self.image_filter.set_image_ids(passing.image_ids)

    def _stop_reading(self, *_: object) -> None:
        """The panel is gone: a reading still to come is for no index now, and not shown."""
        self._reader.shutdown(wait=False, cancel_futures=True)
        self.layers = None

    # --------------------------------------------------------------- categories
    def _reload_categories(self) -> None:
        for card in self._cards.values():
            card.deleteLater()
        self._cards.clear()
        categories = self.index.categories() if self.index else []
        self._categories = {cat.name: cat for cat in categories}
        for cat in categories:
            card = CategoryCard(self, cat.name, cat.colour)
            self._cards[cat.name] = card
            self.cards.addWidget(card)
        self._refill(self.category_filter, "All categories", [(c.name, c.name) for c in categories])
        self._show_active()

    @staticmethod
    def _refill(combo: QComboBox, everything: str, items: list[tuple[str, Any]]) -> None:
        """Replace the choices, keeping the current one (else the first: no filter). The same
        choices are left alone: a Complete's changes must not close an open choice list."""
        if combo.count() and items == [
            (combo.itemText(i), combo.itemData(i)) for i in range(1, combo.count())
        ]:
            return
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(everything, None)
        for text, data in items:
            combo.addItem(text, data)
        found = combo.findData(current) if current is not None else -1
        combo.setCurrentIndex(max(found, 0))
        combo.blockSignals(False)

    def _show_active(self, *_: object) -> None:
        """Mark the active category's card and offer its keypoints."""
        active = self.layers.active_category if self.layers else None
        for name, card in self._cards.items():
            card.set_active(name == active)
        self._show_keypoints()

    def set_active_category(self, name: str) -> None:
        """Make ``name`` the category new boxes and points take (and Complete writes to)."""
        if self.layers is not None:
            self.layers.active_category = name
            self._show_active()

    def _show_keypoints(self, *_: object) -> None:
        """Offer the active category's keypoints, the one the next click places chosen; without
        any, say so (the choice is disabled)."""
        active = self.layers.active_category if self.layers else None
        names = self._categories[active].keypoint_names if active in self._categories else ()
        combo = self.keypoint_choice
        combo.blockSignals(True)
        combo.clear()
        if names:
            combo.addItems(names)
            combo.setCurrentIndex(max(combo.findText(self.layers.active_keypoint or ""), 0))
        else:
            combo.addItem(f"{active} has no keypoints" if active else "No active category")
        combo.setEnabled(bool(names))
        combo.blockSignals(False)

    def _choose_keypoint(self, *_: object) -> None:
        if self.layers is not None and self.keypoint_choice.isEnabled():
            self.layers.active_keypoint = self.keypoint_choice.currentText()

    # --------------------------------------------------------------- attributes
    def _show_selection_attributes(self, *_: object, force: bool = False) -> None:
        """Show the attributes of the observations selected in the layers (read again only
        when the selection changed, or ``force``: they may have been edited)."""
        ids = self.layers.selected_observation_ids() if self.layers else []
        if ids == self._selected_observations and not force:
            return
        self._selected_observations = ids
        if not ids:
            self.selection_attributes.setText("Select boxes or keypoints to see and set their "
                                              "attributes")
            return
        found = Counter(item for obs in self.index.observations(ids=ids)
                        for item in obs.attributes.items())
        described = ", ".join(f"{key} = {value} ({count})" if count < len(ids) else
                              f"{key} = {value}" for (key, value), count in sorted(found.items()))
        self.selection_attributes.setText(
            f"{plural(len(ids), 'observation')} selected: {described or 'no attributes'}"
        )

    def _edit_attribute(self, value: str | None) -> None:
        """Set the typed attribute (``value`` None: remove it) on the selected observations."""
        ids = self.layers.selected_observation_ids() if self.layers else []
        key = self.attribute_key.text().strip()
        if not ids:
            show_info("No box or keypoint selected: select them in the layers first")
            return
        if not key:
            show_info("No attribute key: type the attribute's key first")
            return
        try:
            self.index.set_attributes(ids, {key: value})
        except LearnCompleteError as exc:
            show_error(reason_first(exc))
            return
        self._show_selection_attributes(force=True)

    def set_attribute(self) -> None:
        """Set the typed key and value on the observations selected in the layers."""
        self._edit_attribute(self.attribute_value.text().strip())

    def remove_attribute(self) -> None:
        """Remove the typed key from the observations selected in the layers."""
        self._edit_attribute(None)

    # ------------------------------------------------------------------- images
    @contextmanager
    def _rows_moving(self) -> Iterator[None]:
        """Rows inserted, filtered or reset can move the current row: the viewer follows the
        user's moves only, not the table's own."""
        self._moving_rows = True
        try:
            yield
        finally:
            self._moving_rows = False

    def _filters(self) -> Filters:
        return (self.category_filter.currentData(), self.attribute_filter.currentData(),
                self.review_filter.currentData())

    def _refilter(self, *_: object) -> None:
        """Show the images the chosen filters pass, once the reader thread has found them."""
        self._read(Passing.of, self.index, self._filters())

    def _image_id(self, row: int) -> int:
        """The image of a table row (a row of the filter)."""
        return self.image_model.image_id(self.image_filter.mapToSource(
            self.image_filter.index(row, 0)).row())

    def _selected_rows(self) -> set[int]:
        return {i.row() for i in self.table.selectionModel().selectedRows()}

    def selected_image_ids(self, *, visible_only: bool = True) -> list[int]:
        """Ids of the selected images (those the selection filter hides are left out by
        default)."""
        return [
            self._image_id(row) for row in sorted(self._selected_rows())
            if not (visible_only and self.table.isRowHidden(row))
        ]

    def select_images(self, image_ids: Iterable[int]) -> None:
        """Select exactly these images in the table (for scripts and tests)."""
        shown = (self.image_filter.mapFromSource(self.image_model.index(row, 0)).row()
                 for image_id in set(image_ids)
                 if (row := self.image_model.row_of(image_id)) is not None)
        selection = QItemSelection()
        for first, last in _runs(sorted(row for row in shown if row >= 0)):  # -1: filtered out
            selection.select(self.image_filter.index(first, 0),
                             self.image_filter.index(last, len(ImageTableModel.COLUMNS) - 1))
        self.table.selectionModel().select(
            selection, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )

    def _apply_selection_filter(self, *_: object) -> None:
        """Hide rows (rather than filter them out) so that hidden rows stay selected."""
        which = self.selection_filter.currentText()
        selected = self._selected_rows()
        for row in range(self.image_filter.rowCount()):
            hide = (which == "Selected" and row not in selected) or (
                which == "Unselected" and row in selected
            )
            if self.table.isRowHidden(row) != hide:
                self.table.setRowHidden(row, hide)

    def _selection_changed(self, *_: object) -> None:
        if self.selection_filter.currentText() != "All images":
            self._apply_selection_filter()

    def _show_current(self, current: QModelIndex, *_: object) -> None:
        """The user moved to another row: the viewer shows its image (a video clip is not
        shown: the panel says so)."""
        if self.layers is None or not current.isValid() or self._moving_rows:
            return
        image = self.image_model.record(self.image_filter.mapToSource(current).row())
        if image.is_video:
            self.current_label.setText(f"{image.name}: {VIDEO_NOT_SHOWN}")
        else:
            self.layers.show_image(image.id)

    def _follow_current_image(self, *_: object) -> None:
        """The viewer shows another image: name it, and make its row the current one (without
        moving the viewer again, or changing the selection)."""
        image_id = self.layers.current_image_id() if self.layers else None
        if image_id is None:
            self.current_label.setText("")
            return
        row = self.image_model.row_of(image_id)
        name = self.image_model.record(row).name if row is not None else ""
        self.current_label.setText(
            f"Image {self.layers.plane(image_id) + 1} / {self.layers.planes} · {name}"
        )
        shown = self.image_filter.mapFromSource(self.image_model.index(row, 0)) \
            if row is not None else QModelIndex()
        if shown.isValid() and shown.row() != self.table.currentIndex().row():
            with self._rows_moving():
                self.table.selectionModel().setCurrentIndex(
                    shown, QItemSelectionModel.SelectionFlag.NoUpdate)
            self.table.scrollTo(shown)

    def mark_reviewed(self, reviewed: bool = True) -> None:
        """Mark the selected images (none selected: the image shown) reviewed, or not."""
        if self.layers is None:
            return
        current = self.layers.current_image_id()
        ids = self.selected_image_ids() or ([current] if current is not None else [])
        if not ids:
            show_info("No image to mark: the index has none")
            return
        self.index.set_reviewed(ids, reviewed)

    # -------------------------------------------------------------------- menus
    def image_availability(self, kind: str, action: str) -> Availability:
        """Whether ``action`` ('learn' or 'complete') of ``kind`` may run on the selection."""
        return self.session.image_availability(
            self.index, self.selected_image_ids(), kind,
            self.layers.active_category if self.layers else None, action=action,
        )

    def category_availability(self, name: str, kind: str, action: str) -> Availability:
        """Whether ``action`` of ``kind`` may run on every image of category ``name``."""
        return self.session.category_availability(self.index, name, kind, action=action)

    def image_menu(self) -> QMenu:
        """ROI and Keypoints submenus, each with Learn and Complete, for the selected images."""
        menu = QMenu(self)
        for kind, title in KIND_TITLES.items():
            sub = menu.addMenu(title)
            sub.setToolTipsVisible(True)
            _add_actions(sub, {
                "Learn": (self.image_availability(kind, "learn"),
                          partial(self.learn_images, kind)),
                "Complete": (self.image_availability(kind, "complete"),
                             partial(self.complete_images, kind)),
            }, f"({title}) on the selected images")
        return menu

    def category_menu(self, name: str) -> QMenu:
        """Learn and Complete of each kind for one category, directly in the menu (no submenu,
        as the specification shows it); the kind, as in the image menu, says what they work on.
        Enabled when the category has an observation and the kind switched on."""
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        for kind, title in KIND_TITLES.items():
            if menu.actions():
                menu.addSeparator()
            _add_actions(menu, {
                f"Learn ({title})": (self.category_availability(name, kind, "learn"),
                                     partial(self.learn_category, name, kind)),
                f"Complete ({title})": (self.category_availability(name, kind, "complete"),
                                        partial(self.complete_category, name, kind)),
            }, f"for category {name!r}")
        return menu

    # -------------------------------------------------------------------- work
    def _start(self, make: Callable[[], Task], on_done: Callable[[Task, Any], None]
               ) -> Worker | None:
        """Capture the task ``make`` returns and run it through the session in a thread worker
        (the engine does the work); a refusal while capturing (no model...) is shown, no job."""
        try:
            task = make()
        except LearnCompleteError as exc:
            show_error(reason_first(exc))
            return None
        worker = run_in_worker(
            partial(self.session.run, task), title=task.title,
            on_done=partial(on_done, task),
            on_progress=partial(self._show_progress, task), on_finished=self._finished,
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

    def _show_progress(self, task: Task, event: Progress) -> None:
        self.status.setText(describe(event, title=task.title))

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
        if self._refuse(self.image_availability(kind, "learn")):
            return None
        index, ids = self.layers.index, self.selected_image_ids()
        return self._learn(f"Learn {KIND_NOUNS[kind]} on {len(ids)} selected image(s)",
                           partial(self.session.learn_images, index, ids, kind),
                           partial(learn_scope, index, images=ids, kind=kind))

    def learn_category(self, name: str, kind: str, *_: object) -> Worker | None:
        """Learn (``kind``) on every image of category ``name``, after the dialog."""
        if self._refuse(self.category_availability(name, kind, "learn")):
            return None
        index = self.layers.index
        return self._learn(f"Learn {KIND_NOUNS[kind]} on all images of category {name!r}",
                           partial(self.session.learn_category, index, name, kind),
                           partial(learn_scope, index, category=name, kind=kind))

    def _learn(self, scope: str, make: Callable[[LearnSettings], Task],
               images: Callable[[], list[ImageRecord]]) -> Worker | None:
        """Ask the Learn dialog and run ``make(settings)``; the dialog warns when a heads-only
        Learn would train on a backbone that never learned anything, and offers the epochs a
        model from random weights needs for ``images()`` (the Learn's scope). On an index
        without a model the dialog also offers the model to create and its start weights, and
        the Learn starts once it is created (in the engine: building it and getting its weights
        need torch); Cancel or a failure stops there."""
        index = self.layers.index
        try:
            count = len(images())
        except LearnCompleteError:  # nothing to learn from: the Learn itself says why
            count = 0
        if index.models.active() is not None:
            try:
                config = active_model(index).config
            except LearnCompleteError as exc:  # its configuration cannot be read
                show_error(reason_first(exc))
                return None
            settings = dialogs.ask_learn(
                scope, self, backbone_trained=config.backbone_trained,
                backbone_pretrained=config.backbone_pretrained, images=count,
                batch_size=config.training.batch_size)
            return None if settings is None else self._start(partial(make, settings),
                                                             self._learned)
        wants_keypoints = any(cat.keypoints_enabled for cat in self._categories.values())
        answer = dialogs.ask_first_learn(scope, wants_keypoints, self, images=count)
        if answer is None:
            return None
        settings, model = answer
        return self._start(partial(  # a cancelled job returns nothing: no Learn follows
            self.session.create_model, index, choice=model.choice, keypoints=model.keypoints,
            weights=model.weights, name=free_model_name(index, model.keypoints),
        ), lambda _task, _name: self._start(partial(make, settings), self._learned))

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
        show_info("; ".join(parts + result.notes))

    def complete_images(self, kind: str, *_: object) -> Worker | None:
        """Complete (``kind``) the selected images into the active category, after the dialog.

        The index, images and category are captured when the user confirms: results go there
        even if the user switches category or layer while Complete runs.
        """
        if self._refuse(self.image_availability(kind, "complete")):
            return None
        count = len(self.selected_image_ids())
        request = dialogs.ask_complete(
            f"Complete {KIND_NOUNS[kind]} on {count} selected image(s) "
            f"into category {self.layers.active_category!r}", parent=self,
            suggested=self._suggested(self.layers.active_category),
        )
        if request is None:
            return None
        return self._start(partial(
            self.session.complete_images, self.layers.index, self.selected_image_ids(),
            self.layers.active_category, kind, request.settings, engine=request.engine,
        ), self._completed)

    def _completed(self, task: Task, result: CompleteResult) -> None:
        removed = f", removed {result.removed} existing" if result.removed else ""
        show_info(
            f"Complete wrote {result.written} observation(s) with {KIND_NOUNS[task.kind]} on "
            f"{result.images} image(s) into category {task.category!r}{removed}"
        )

    def undo_last_complete(self) -> int:
        """Put back what the last Complete (or accepted review) changed; returns how many."""
        if not self.session.can_undo:
            return 0
        try:
            count = self.session.undo_last()
        except LearnCompleteError as exc:  # e.g. an observation of the run was edited since
            show_error(f"Undo: {reason_first(exc)}")
            return 0
        finally:
            self.undo_button.setEnabled(self.session.can_undo)
        show_info(f"Undo: put back {count} observation(s) changed by the last Complete")
        return count

    def complete_category(self, name: str, kind: str, *_: object) -> Worker | None:
        """Look for ``name`` (its ``kind``) on the images of other categories; the proposals
        open in the review."""
        if self._refuse(self.category_availability(name, kind, "complete")):
            return None
        request = dialogs.ask_complete(
            f"Find category {name!r} ({KIND_NOUNS[kind]}) on images that do not have it yet",
            from_category=True, parent=self, suggested=self._suggested(name),
        )
        if request is None:
            return None
        return self._start(partial(
            self.session.complete_category, self.layers.index, name, kind, request.settings,
            engine=request.engine,
        ), self._review)

    def _suggested(self, category: str | None) -> Suggested | None:
        """What the active version's Learn suggests for Complete into ``category``, if any (an
        index without a model, or whose model cannot be read, has none: Complete says why)."""
        index = self.layers.index
        if category is None or index.models.active() is None:
            return None
        try:
            return active_model(index).config.suggested.get(category)
        except LearnCompleteError:
            return None

    def _review(self, task: Task, proposals: Proposals) -> None:
        skipped = proposals.skipped
        gone = (f"; skipped {plural(len(skipped), 'image')} whose file is gone: "
                f"{listed(skipped)}" if skipped else "")
        if not proposals:
            show_info(f"Complete from category {task.category!r}: no proposals{gone}")
            return
        show_review(self.viewer, task.index, task.category, proposals, beside=self)
        show_info(f"{len(proposals)} proposal(s) for {task.category!r}: review them before "
                  f"saving{gone}")


def index_panel(viewer: napari.Viewer) -> IndexPanel:
    """The viewer's Index panel, docked first if it is not open yet."""
    _, panel = viewer.window.add_plugin_dock_widget("napari-learn-complete", "Index panel")
    return panel


def _add_actions(menu: QMenu, entries: dict[str, tuple[Availability, Callable[[], Any]]],
                 what: str) -> None:
    """Add Learn/Complete entries, each enabled per the specification's rule, with the reason
    (or what the entry does) as tooltip."""
    for text, (found, slot) in entries.items():
        action = menu.addAction(text)
        action.setEnabled(found.enabled)
        action.setToolTip(found.reason or f"{text} {what}")
        action.triggered.connect(lambda _checked=False, slot=slot: slot())
