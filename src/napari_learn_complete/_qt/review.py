"""Review of "Complete from a category": the proposals in a table, nothing saved before Confirm.

One row per proposal (thumbnail, image, score) in a ``QTableView`` over a table model, so thousands
of proposals stay responsive: thumbnails are cut only for the rows Qt paints, from a small cache of
decoded images. A row is checked (to be saved) when its score reaches the threshold, so a reviewer
starts from the model's confident answers and only handles the exceptions. Selecting a row shows
its image with the proposals on it in a temporary "proposals" layer (green: checked, red: not).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    QObject,
    QPointF,
    QRectF,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from qtpy.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from .._napari.layer_data import HALF_PIXEL, box_vertices
from .._napari.layers import index_layers, open_index, real_viewer
from ..engine.results import CompleteResult, Proposal
from ..errors import LearnCompleteError
from ..index import Index, keypoint_extent
from ..index.media import to_rgb_uint8
from ..session import session_for

THUMB_PX = 64
PROPOSALS_LAYER = "proposals"
PROPOSAL_KEYPOINTS_LAYER = "proposal keypoints"
DEFAULT_THRESHOLD = 0.5
_CHECKED, _UNCHECKED = "#30e030", "#ff4040"
_KEYPOINT = "#ffff00"  # as in the proposal keypoints layer
_OUTLINE = "#00e5ff"   # the proposed box on a thumbnail (its checked state shows in the table)
_SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class ProposalTableModel(QAbstractTableModel):
    """Proposals and their checked state; columns Accept, Preview, Image, Score."""

    COLUMNS = ("Accept", "Preview", "Image", "Score")
    ACCEPT, PREVIEW, IMAGE, SCORE = range(4)
    checked_changed = Signal()

    def __init__(self, index: Index | None = None) -> None:
        super().__init__()
        self.index = index
        self.proposals: list[Proposal] = []
        self.checked: list[bool] = []
        self._thumbs: dict[int, QPixmap | None] = {}
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()

    def set_proposals(
        self, index: Index | None, proposals: Sequence[Proposal], threshold: float
    ) -> None:
        self.beginResetModel()
        self.index = index
        self.proposals = list(proposals)
        self.checked = [p.score >= threshold for p in self.proposals]
        self._thumbs.clear()
        self._images.clear()
        self.endResetModel()
        self.checked_changed.emit()

    def check_above(self, threshold: float) -> None:
        """Check exactly the proposals scoring at least ``threshold``."""
        self.checked = [p.score >= threshold for p in self.proposals]
        self._checks_changed(0, len(self.proposals) - 1)

    def set_checked(self, rows: Sequence[int], value: bool) -> None:
        for row in rows:
            self.checked[row] = value
        if rows:
            self._checks_changed(min(rows), max(rows))

    def _checks_changed(self, first: int, last: int) -> None:
        if last >= first:
            self.dataChanged.emit(
                self.index_of(first, self.ACCEPT), self.index_of(last, self.ACCEPT),
                [Qt.ItemDataRole.CheckStateRole],
            )
        self.checked_changed.emit()

    def index_of(self, row: int, column: int) -> QModelIndex:
        return self.createIndex(row, column)

    # -- Qt model interface
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.proposals)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == self.ACCEPT:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, column = index.row(), index.column()
        proposal = self.proposals[row]
        if role == Qt.ItemDataRole.CheckStateRole and column == self.ACCEPT:
            return Qt.CheckState.Checked if self.checked[row] else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.DecorationRole and column == self.PREVIEW:
            return self._thumbnail(row)
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.IMAGE:
                return proposal.image_name
            if column == self.SCORE:
                return f"{proposal.score:.3f}"
        if role == _SORT_ROLE:
            return (int(self.checked[row]), proposal.image_name, proposal.image_name,
                    proposal.score)[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{proposal.image_name}: {proposal.category} {proposal.score:.3f}"
        return None

    def setData(self, index: QModelIndex, value: Any,
                role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or index.column() != self.ACCEPT:
            return False
        self.set_checked([index.row()], Qt.CheckState(value) == Qt.CheckState.Checked)
        return True

    # -- thumbnails, made when Qt first paints a row
    def _thumbnail(self, row: int) -> QPixmap | None:
        if row not in self._thumbs:
            try:
                self._thumbs[row] = _thumbnail(self._pixels(self.proposals[row].image_id),
                                               self.proposals[row])
            except LearnCompleteError:  # image gone since Complete ran: no preview, no crash
                self._thumbs[row] = None
        return self._thumbs[row]

    def _pixels(self, image_id: int) -> np.ndarray:
        """Decoded images, a few at a time: proposals of one image are usually neighbours."""
        if image_id in self._images:
            self._images.move_to_end(image_id)
        else:
            assert self.index is not None
            self._images[image_id] = self.index.read_image(image_id)
            while len(self._images) > 8:
                self._images.popitem(last=False)
        return self._images[image_id]


class _ScoreFilter(QSortFilterProxyModel):
    """Hides proposals below a minimum score; sorts by the model's sort role."""

    def __init__(self) -> None:
        super().__init__()
        self.min_score = 0.0
        self.setSortRole(_SORT_ROLE)

    def set_min_score(self, value: float) -> None:
        self.min_score = value
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        source = self.sourceModel()
        return source.proposals[row].score >= self.min_score


class _WholeCellCheck(QStyledItemDelegate):
    """The Accept cell toggles on a click anywhere in it, not only on its small indicator."""

    def editorEvent(self, event: QEvent, model: Any, option: QStyleOptionViewItem,
                    index: QModelIndex) -> bool:
        if (event.type() == QEvent.Type.MouseButtonRelease
                and event.button() == Qt.MouseButton.LeftButton
                and option.rect.contains(event.position().toPoint())):
            checked = index.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
            state = Qt.CheckState.Unchecked if checked else Qt.CheckState.Checked
            return model.setData(index, state.value, Qt.ItemDataRole.CheckStateRole)
        return super().editorEvent(event, model, option, index)


class ReviewWidget(QWidget):
    """Review the proposals of "Complete from a category"; Confirm saves the checked rows only."""

    confirmed = Signal(object)  # CompleteResult, or None when nothing was checked
    cancelled = Signal()

    def __init__(
        self,
        napari_viewer: napari.Viewer,
        index: Index | None = None,
        proposals: Sequence[Proposal] | None = None,
        category: str | None = None,
    ) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        self.index: Index | None = None
        self.category: str | None = None
        self._by_image: dict[int, list[int]] = {}
        self._shown_rows: list[int] = []  # model rows drawn in the proposals layer
        self._shown_current = -1

        self.model = ProposalTableModel()
        self.proxy = _ScoreFilter()
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(THUMB_PX + 4)
        header = self.table.horizontalHeader()  # the image name gets the room left
        for column, mode in ((ProposalTableModel.ACCEPT, QHeaderView.ResizeMode.ResizeToContents),
                             (ProposalTableModel.PREVIEW, QHeaderView.ResizeMode.Fixed),
                             (ProposalTableModel.IMAGE, QHeaderView.ResizeMode.Stretch),
                             (ProposalTableModel.SCORE, QHeaderView.ResizeMode.ResizeToContents)):
            header.setSectionResizeMode(column, mode)
        header.setResizeContentsPrecision(50)  # checkboxes and scores are all alike: sample few
        self.table.setColumnWidth(ProposalTableModel.PREVIEW, THUMB_PX + 8)
        self._accept_delegate = _WholeCellCheck(self.table)
        self.table.setItemDelegateForColumn(ProposalTableModel.ACCEPT, self._accept_delegate)

        self.summary = QLabel()
        self.min_score = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2)
        self.min_score.setToolTip("Hide proposals scoring below this; hidden rows are not saved")
        self.threshold = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2)
        self.threshold.setValue(DEFAULT_THRESHOLD)
        self.threshold.setToolTip("Proposals scoring at least this are checked at first")
        self.accept_above = QPushButton("Accept all above")
        self.accept_above.setToolTip("Check the proposals scoring at least the threshold, "
                                     "uncheck the others")
        self.confirm_button = QPushButton("Confirm")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Discard every proposal; nothing is saved")

        form = QFormLayout()
        form.addRow("Min score", self.min_score)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.threshold)
        threshold_row.addWidget(self.accept_above)
        form.addRow("Threshold", threshold_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.confirm_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addLayout(buttons)

        self.min_score.valueChanged.connect(self._filter)
        self.accept_above.clicked.connect(lambda: self.model.check_above(self.threshold.value()))
        self.confirm_button.clicked.connect(self.confirm)
        self.cancel_button.clicked.connect(self.cancel)
        self.model.checked_changed.connect(self._checks_changed)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        self.table.installEventFilter(self)  # Space toggles every selected row

        self.set_proposals(index, category, proposals or [])

    # ------------------------------------------------------------------------------ public
    def set_proposals(
        self, index: Index | None, category: str | None, proposals: Sequence[Proposal]
    ) -> None:
        """Show new proposals for review (replacing any shown); nothing is written yet."""
        self._remove_layers()
        self.index, self.category = index, category
        self.model.set_proposals(index, proposals, self.threshold.value())
        self._by_image = {}
        for row, proposal in enumerate(self.model.proposals):
            self._by_image.setdefault(proposal.image_id, []).append(row)
        self.table.sortByColumn(ProposalTableModel.SCORE, Qt.SortOrder.DescendingOrder)
        self.setEnabled(bool(proposals))
        self._checks_changed()

    def visible_rows(self) -> list[int]:
        """Model rows that pass the score filter, in the table's current order."""
        return [
            self.proxy.mapToSource(self.proxy.index(r, 0)).row()
            for r in range(self.proxy.rowCount())
        ]

    def accepted(self) -> list[Proposal]:
        """What Confirm would save: the checked proposals that the filter shows."""
        return [self.model.proposals[r] for r in sorted(self.visible_rows())
                if self.model.checked[r]]

    def confirm(self) -> CompleteResult | None:
        """Save the accepted proposals, report how many, and clear the review."""
        if self.index is None:
            return None
        chosen = self.accepted()
        total = len(self.model.proposals)
        # through the viewer's session, so the Index panel's Undo can take it back
        result = session_for(self.viewer).accept(self.index, chosen) if chosen else None
        message = (f"Saved {result.written if result else 0} of {total} proposals for "
                   f"{self.category!r} in {self.index.path.name}")
        show_info(message)
        self.clear(message)
        self.confirmed.emit(result)
        return result

    def cancel(self) -> None:
        """Discard the proposals: nothing is saved."""
        if self.index is not None:
            show_info(f"Review of {self.category!r} cancelled: nothing saved")
        self.clear("Cancelled: nothing saved")
        self.cancelled.emit()

    def clear(self, message: str = "") -> None:
        self.set_proposals(None, None, [])
        if message:
            self.summary.setText(message)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (watched is self.table and event.type() == QEvent.Type.KeyPress
                and event.key() == Qt.Key.Key_Space):
            self._toggle_selected()
            return True
        return super().eventFilter(watched, event)

    def closeEvent(self, event: Any) -> None:
        self._remove_layers()
        super().closeEvent(event)

    # ----------------------------------------------------------------------------- private
    def _filter(self, value: float) -> None:
        self.proxy.set_min_score(value)
        self._checks_changed()

    def _checks_changed(self) -> None:
        if self.index is None:
            self.summary.setText("No proposals. Use Complete on a category card to find some.")
            self.confirm_button.setText("Confirm")
            return
        accepted = len(self.accepted())
        self.summary.setText(
            f"{self.category!r}: {len(self.model.proposals)} proposals, "
            f"{self.proxy.rowCount()} shown, {accepted} to save"
        )
        self.confirm_button.setText(f"Confirm ({accepted})")
        self._update_layer_colours()

    def _toggle_selected(self) -> None:
        rows = sorted({self.proxy.mapToSource(i).row()
                       for i in self.table.selectionModel().selectedRows()})
        if rows:
            self.model.set_checked(rows, not all(self.model.checked[r] for r in rows))

    def _row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.show_proposal(self.proxy.mapToSource(current).row())

    def show_proposal(self, row: int) -> None:
        """Show the image of proposal ``row`` and the (shown) proposals on it."""
        assert self.index is not None
        proposal = self.model.proposals[row]
        layers = next((lay for lay in index_layers(self.viewer)
                       if lay.index.path == self.index.path), None)
        if layers is None:
            layers = open_index(self.viewer, self.index)
        layers.show_image(proposal.image_id)
        plane = layers.plane(proposal.image_id)
        visible = set(self.visible_rows())
        self._shown_rows = [r for r in self._by_image[proposal.image_id] if r in visible]
        self._shown_current = row
        self._draw(plane)

    def _draw(self, plane: int) -> None:
        rows = self._shown_rows
        boxes = [proposal_bounds(self.model.proposals[r]) for r in rows]
        shapes = [box_vertices(plane, box) for box in boxes]
        layer = self._layer(PROPOSALS_LAYER)
        if layer is None:  # same pixel-corner convention as the index's own layers
            layer = self.viewer.add_shapes(
                shapes, shape_type="rectangle", name=PROPOSALS_LAYER, face_color="transparent",
                edge_width=2, translate=HALF_PIXEL,
            )
        else:
            layer.data = shapes
        points = [
            (plane, y, x)
            for r in rows
            for x, y, v in (self.model.proposals[r].keypoints or ())
            if v > 0
        ]
        kp_layer = self._layer(PROPOSAL_KEYPOINTS_LAYER)
        if points and kp_layer is None:
            self.viewer.add_points(points, name=PROPOSAL_KEYPOINTS_LAYER, size=5,
                                   face_color="#ffff00", translate=HALF_PIXEL)
        elif kp_layer is not None:
            kp_layer.data = np.array(points).reshape(-1, 3)
        self._update_layer_colours()

    def _update_layer_colours(self) -> None:
        layer = self._layer(PROPOSALS_LAYER)
        if layer is None or not self._shown_rows or len(layer.data) != len(self._shown_rows):
            return
        layer.edge_color = [_CHECKED if self.model.checked[r] else _UNCHECKED
                            for r in self._shown_rows]
        layer.edge_width = [4 if r == self._shown_current else 2 for r in self._shown_rows]

    def _layer(self, name: str) -> Any:
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    def _remove_layers(self) -> None:
        self._shown_rows = []
        self._shown_current = -1
        for name in (PROPOSALS_LAYER, PROPOSAL_KEYPOINTS_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)


def proposal_bounds(proposal: Proposal) -> tuple[float, float, float, float]:
    """The proposal's box, or the bounds of its labelled keypoints when it has no box."""
    box = proposal.box or keypoint_extent(proposal.keypoints or ()) or (0.0, 0.0, 0.0, 0.0)
    return tuple(float(v) for v in box)


def _thumbnail(pixels: np.ndarray, proposal: Proposal) -> QPixmap:
    """A small RGB preview of the proposal's box with a margin of half its size,
    contrast-stretched, with the box outlined and its labelled keypoints dotted on it."""
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = proposal_bounds(proposal)
    margin = max(x1 - x0, y1 - y0, 8) / 2
    left, top = max(int(x0 - margin), 0), max(int(y0 - margin), 0)
    right, bottom = min(int(np.ceil(x1 + margin)), width), min(int(np.ceil(y1 + margin)), height)
    crop = to_rgb_uint8(pixels[top:max(bottom, top + 1), left:max(right, left + 1)])
    image = QImage(crop.data, crop.shape[1], crop.shape[0], crop.strides[0],
                   QImage.Format.Format_RGB888).copy()
    pixmap = QPixmap.fromImage(image).scaled(
        THUMB_PX, THUMB_PX, Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )
    scale = pixmap.width() / crop.shape[1]  # image pixels to thumbnail pixels (edges at 0)
    painter = QPainter(pixmap)
    try:
        painter.setPen(QPen(QColor(_OUTLINE), 1))
        if proposal.box is not None:
            painter.drawRect(QRectF((x0 - left) * scale, (y0 - top) * scale,
                                    (x1 - x0) * scale, (y1 - y0) * scale))
        painter.setPen(QPen(QColor(_KEYPOINT), 3))
        for x, y, v in proposal.keypoints or ():
            if v > 0:  # same pixel-corner coordinates as the box
                painter.drawPoint(QPointF((x - left) * scale, (y - top) * scale))
    finally:
        painter.end()
    return pixmap


def show_review(
    viewer: napari.Viewer, index: Index, category: str, proposals: Sequence[Proposal],
    *, beside: QWidget | None = None,
) -> ReviewWidget:
    """Open (or reuse) the viewer's review dock with these proposals; used after a category
    Complete, so the user sees the review instead of results being saved. A new review dock is
    tabbed with the dock of ``beside`` (the Index panel): stacked under it, it would squeeze the
    image table."""
    window = real_viewer(viewer).window
    widget = next((w for w in window.dock_widgets.values() if isinstance(w, ReviewWidget)), None)
    if widget is not None:
        widget.set_proposals(index, category, proposals)
    else:
        widget = ReviewWidget(viewer, index, proposals, category)
        dock = window.add_dock_widget(widget, name="Review proposals", area="right")
        if beside is not None:  # napari's own tabify joins whichever dock came last
            window._qt_window.tabifyDockWidget(beside.parent(), dock)
    dock = widget.parent()
    dock.show()
    dock.raise_()
    return widget
