"""The review table of "Complete from a category" on the real viewer: rows, sorting, filtering,
accept-above, Confirm saves only the checked rows, Cancel saves nothing, selection shows the image.

Proposals are made by hand (as ``propose`` returns them) so the tests need no trained model.
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap

from napari_learn_complete._qt.review import (
    PROPOSAL_KEYPOINTS_LAYER,
    PROPOSALS_LAYER,
    THUMB_PX,
    ProposalTableModel,
    ReviewWidget,
    show_review,
)
from napari_learn_complete.engine.results import Proposal
from napari_learn_complete.index import Index

pytestmark = pytest.mark.gui

SCORES = (0.9, 0.2, 0.7, 0.4, 0.95, 0.6)


def _proposals(index: Index) -> list[Proposal]:
    """Six "square" proposals on the unlabelled images (7..12), two on image 8."""
    images = index.images()[6:]
    placed = [images[0], images[1], images[1], images[2], images[3], images[4]]
    return [
        Proposal(id=n, image_id=img.id, image_name=img.name, category="square",
                 box=(10.0 + 5 * n, 12.0, 40.0 + 5 * n, 44.0), keypoints=None, score=score)
        for n, (img, score) in enumerate(zip(placed, SCORES, strict=True))
    ]


@pytest.fixture
def review(make_napari_viewer, sample_index: Index):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer, sample_index, _proposals(sample_index), "square")
    viewer.window.add_dock_widget(widget)
    return widget


def _shown(widget: ReviewWidget, column: int = ProposalTableModel.SCORE) -> list[str]:
    proxy = widget.proxy
    return [proxy.index(r, column).data() for r in range(proxy.rowCount())]


def _square_boxes(index: Index) -> list[tuple]:
    return sorted(o.box for o in index.observations(category="square", source="model"))


def test_one_row_per_proposal_sorted_by_score(review: ReviewWidget) -> None:
    assert review.model.rowCount() == len(SCORES)
    assert _shown(review) == [f"{s:.3f}" for s in sorted(SCORES, reverse=True)]
    names = {p.image_name for p in review.model.proposals}
    assert set(_shown(review, ProposalTableModel.IMAGE)) == names
    # checked by default exactly when the score reaches the threshold (0.5)
    assert review.threshold.value() == 0.5
    assert [p.score for p in review.accepted()] == [s for s in SCORES if s >= 0.5]
    assert review.confirm_button.text() == "Confirm (4)"


def test_thumbnails_are_small_and_made_lazily(sample_index: Index) -> None:
    proposals = _proposals(sample_index) * 500  # 3000 rows
    model = ProposalTableModel()
    model.set_proposals(sample_index, proposals, 0.5)
    assert model.rowCount() == 3000 and not model._thumbs
    pixmap = model.data(model.index_of(2999, ProposalTableModel.PREVIEW),
                        Qt.ItemDataRole.DecorationRole)
    assert isinstance(pixmap, QPixmap) and not pixmap.isNull()
    assert max(pixmap.width(), pixmap.height()) == THUMB_PX
    assert list(model._thumbs) == [2999]


def test_sort_by_any_column(review: ReviewWidget, qtbot) -> None:
    header = review.table.horizontalHeader()
    review.table.sortByColumn(ProposalTableModel.SCORE, Qt.SortOrder.AscendingOrder)
    assert _shown(review) == [f"{s:.3f}" for s in sorted(SCORES)]
    review.table.sortByColumn(ProposalTableModel.IMAGE, Qt.SortOrder.AscendingOrder)
    names = _shown(review, ProposalTableModel.IMAGE)
    assert names == sorted(names)
    review.table.sortByColumn(ProposalTableModel.ACCEPT, Qt.SortOrder.DescendingOrder)
    checked = [review.proxy.index(r, 0).data(Qt.ItemDataRole.CheckStateRole)
               for r in range(review.proxy.rowCount())]
    assert checked == [Qt.CheckState.Checked] * 4 + [Qt.CheckState.Unchecked] * 2
    assert header.sortIndicatorSection() == ProposalTableModel.ACCEPT


def test_filter_by_min_score_hides_rows_and_keeps_them_out(review: ReviewWidget) -> None:
    review.min_score.setValue(0.65)
    assert _shown(review) == ["0.950", "0.900", "0.700"]
    assert [p.score for p in review.accepted()] == [0.9, 0.7, 0.95]  # 0.6 is hidden
    review.min_score.setValue(0.0)
    assert review.proxy.rowCount() == len(SCORES)


def test_accept_all_above_checks_exactly_those_rows(review: ReviewWidget, qtbot) -> None:
    review.threshold.setValue(0.8)
    qtbot.mouseClick(review.accept_above, Qt.MouseButton.LeftButton)
    assert sorted(p.score for p in review.accepted()) == [0.9, 0.95]
    review.threshold.setValue(0.3)
    qtbot.mouseClick(review.accept_above, Qt.MouseButton.LeftButton)
    assert sorted(p.score for p in review.accepted()) == [0.4, 0.6, 0.7, 0.9, 0.95]


def test_confirm_saves_only_the_checked(review: ReviewWidget, sample_index: Index, qtbot,
                                        db_dump) -> None:
    before = db_dump(sample_index)
    # the user unchecks the top row (0.95) with a click on its check box
    top = review.proxy.index(0, ProposalTableModel.ACCEPT)
    review.proxy.setData(top, Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    review.table.selectRow(1)
    assert db_dump(sample_index) == before  # nothing written before Confirm
    expected = sorted(p.box for p in review.model.proposals if p.score in (0.9, 0.7, 0.6))
    with qtbot.waitSignal(review.confirmed) as signal:
        qtbot.mouseClick(review.confirm_button, Qt.MouseButton.LeftButton)
    assert signal.args[0].written == 3
    assert _square_boxes(sample_index) == expected
    assert review.model.rowCount() == 0 and "Saved 3 of 6" in review.summary.text()
    assert PROPOSALS_LAYER not in review.viewer.layers


def test_cancel_saves_nothing(review: ReviewWidget, sample_index: Index, qtbot,
                              db_dump) -> None:
    before = db_dump(sample_index)
    review.table.selectRow(0)
    assert PROPOSALS_LAYER in review.viewer.layers
    with qtbot.waitSignal(review.cancelled):
        qtbot.mouseClick(review.cancel_button, Qt.MouseButton.LeftButton)
    assert db_dump(sample_index) == before
    assert review.model.rowCount() == 0 and not review.confirm_button.isEnabled()
    assert PROPOSALS_LAYER not in review.viewer.layers


def test_selecting_a_row_shows_its_image_and_proposals(review: ReviewWidget) -> None:
    from napari_learn_complete._napari.layers import index_layers

    two = [p for p in review.model.proposals if p.score in (0.2, 0.7)]  # same image
    review.table.selectRow(_shown(review).index("0.700"))
    layers = index_layers(review.viewer)[0]
    assert layers.current_image_id() == two[0].image_id
    shapes = review.viewer.layers[PROPOSALS_LAYER]
    assert len(shapes.data) == 2  # both proposals on that image
    plane = layers.image_ids().index(two[0].image_id)
    assert {int(s[0, 0]) for s in shapes.data} == {plane}
    widths = sorted(shapes.edge_width)
    assert widths == [2, 4]  # the selected proposal stands out
    review.min_score.setValue(0.5)  # the 0.2 proposal is filtered out: not drawn
    review.table.selectRow(0)
    review.table.selectRow(_shown(review).index("0.700"))
    assert len(review.viewer.layers[PROPOSALS_LAYER].data) == 1


def test_show_review_reuses_the_dock(make_napari_viewer, sample_index: Index) -> None:
    viewer = make_napari_viewer()
    first = show_review(viewer, sample_index, "square", _proposals(sample_index))
    second = show_review(viewer, sample_index, "disc", _proposals(sample_index)[:2])
    assert first is second and second.model.rowCount() == 2 and second.category == "disc"


def test_confirm_with_nothing_checked_saves_nothing(review: ReviewWidget, sample_index: Index,
                                                    qtbot, db_dump) -> None:
    before = db_dump(sample_index)
    review.threshold.setValue(1.0)
    qtbot.mouseClick(review.accept_above, Qt.MouseButton.LeftButton)
    assert review.confirm_button.text() == "Confirm (0)"
    with qtbot.waitSignal(review.confirmed) as signal:
        qtbot.mouseClick(review.confirm_button, Qt.MouseButton.LeftButton)
    assert signal.args[0] is None and db_dump(sample_index) == before
    assert "Saved 0 of 6" in review.summary.text()


def test_space_toggles_the_selected_rows(review: ReviewWidget, qtbot) -> None:
    review.table.setFocus()
    review.table.selectRow(0)  # 0.95 and 0.9, both checked
    review.table.selectionModel().select(
        review.proxy.index(1, 0),
        review.table.selectionModel().SelectionFlag.Select
        | review.table.selectionModel().SelectionFlag.Rows,
    )
    qtbot.keyClick(review.table, Qt.Key.Key_Space)
    assert [p.score for p in review.accepted()] == [0.7, 0.6]
    qtbot.keyClick(review.table, Qt.Key.Key_Space)
    assert [p.score for p in review.accepted()] == [0.9, 0.7, 0.95, 0.6]


def test_keypoint_proposals_are_drawn_as_points(make_napari_viewer, sample_index: Index) -> None:
    image = sample_index.images()[6]
    proposal = Proposal(id=1, image_id=image.id, image_name=image.name, category="triangle",
                        box=(10.0, 10.0, 50.0, 40.0), score=0.8, kind="keypoints",
                        keypoints=((30.0, 10.0, 2), (10.0, 40.0, 2), (50.0, 40.0, 0)))
    widget = ReviewWidget(make_napari_viewer(), sample_index, [proposal], "triangle")
    widget.table.selectRow(0)
    points = widget.viewer.layers[PROPOSAL_KEYPOINTS_LAYER].data
    assert sorted(map(tuple, points[:, 1:])) == [(10.0, 30.0), (40.0, 10.0)]  # (y, x), v > 0
    widget.cancel()
    assert PROPOSAL_KEYPOINTS_LAYER not in widget.viewer.layers


def test_review_opens_tabbed_with_the_index_panel_and_sized_columns(opened, qtbot) -> None:
    viewer, panel = opened.viewer, opened.panel
    viewer.window._qt_window.resize(1400, 900)
    viewer.show()
    qtbot.waitExposed(panel.table)
    review = show_review(viewer, opened.index, "square", _proposals(opened.index), beside=panel)
    qtbot.waitExposed(review.table)
    tabbed = viewer.window._qt_window.tabifiedDockWidgets(panel.parent())
    assert review.parent() in tabbed  # not stacked under the panel, squeezing its table
    # the review's tab is the one shown (Qt moves the other tab's dock out of sight)
    assert panel.visibleRegion().isEmpty() and not review.visibleRegion().isEmpty()
    assert review.parent().height() > 0.8 * viewer.window._qt_window.height()  # all the height

    table, header = review.table, review.table.horizontalHeader()
    metrics = table.fontMetrics()
    longest = max(metrics.horizontalAdvance(p.image_name) for p in review.model.proposals)
    assert table.columnWidth(ProposalTableModel.IMAGE) >= longest + 8
    for column in (ProposalTableModel.ACCEPT, ProposalTableModel.SCORE):
        fitted = max(header.sectionSizeHint(column), table.sizeHintForColumn(column))
        assert table.columnWidth(column) == fitted


def test_an_accepted_review_is_undone_from_the_index_panel(opened, qtbot) -> None:
    viewer, panel, index = opened.viewer, opened.panel, opened.index
    before = {o.id for o in index.observations()}
    assert not panel.undo_button.isEnabled()
    review = show_review(viewer, index, "square", _proposals(index), beside=panel)
    result = review.confirm()  # the proposals checked by default: those above the threshold
    assert result.written == 4 and len(index.observations()) == len(before) + 4
    qtbot.waitUntil(panel.undo_button.isEnabled)  # the viewer's session remembers the accept
    panel.undo_button.click()
    assert {o.id for o in index.observations()} == before
    assert not panel.undo_button.isEnabled()
