"""What a reviewer sees in a review row: the thumbnail outlines the proposed box (and dots its
keypoints), and a click anywhere in the Accept cell toggles it."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtGui import QColor

from napari_learn_complete._qt.review import ProposalTableModel, ReviewWidget
from napari_learn_complete.engine.results import Proposal
from napari_learn_complete.index import Index

pytestmark = pytest.mark.gui
OUTLINE, KEYPOINT = QColor("#00e5ff"), QColor("#ffff00")


def _proposal(index: Index, keypoints=None) -> Proposal:
    # box 20 x 16 in the middle of an image (96-160 px): the thumbnail crops 10 px around it
    # (half the box's longer side), 40 x 36 px, scaled to 64 px wide: 1.6 thumbnail px per px
    image = index.images()[6]
    return Proposal(id=1, image_id=image.id, image_name=image.name, category="triangle",
                    box=(40.0, 40.0, 60.0, 56.0), keypoints=keypoints, score=0.8,
                    kind="keypoints" if keypoints else "roi")


def _near(image, x: float, y: float, colour: QColor) -> bool:
    """The thumbnail has ``colour`` within a pixel of (x, y)."""
    return any(image.pixelColor(int(x) + dx, int(y) + dy) == colour
               for dx in (-1, 0, 1) for dy in (-1, 0, 1))


def _thumbnail(index: Index, proposal: Proposal):
    model = ProposalTableModel()
    model.set_proposals(index, [proposal], 0.5)
    return model.data(model.index_of(0, ProposalTableModel.PREVIEW),
                      Qt.ItemDataRole.DecorationRole).toImage()


def test_the_thumbnail_outlines_the_proposed_box(sample_index: Index, qapp) -> None:
    image = _thumbnail(sample_index, _proposal(sample_index))
    assert (image.width(), image.height()) == (64, 57)
    left, top, right, bottom = 16.0, 16.0, 48.0, 41.6  # the box, 10 px in, times 1.6
    for t in (0.25, 0.5, 0.75):  # along each side
        x, y = left + t * (right - left), top + t * (bottom - top)
        assert _near(image, x, top, OUTLINE) and _near(image, x, bottom, OUTLINE)
        assert _near(image, left, y, OUTLINE) and _near(image, right, y, OUTLINE)
    assert not _near(image, 32, 29, OUTLINE)  # an outline, not a filled box
    assert not _near(image, 4, 4, OUTLINE) and not _near(image, 60, 53, OUTLINE)


def test_the_thumbnail_dots_the_labelled_keypoints(sample_index: Index, qapp) -> None:
    proposal = _proposal(sample_index, keypoints=((50.0, 40.0, 2), (40.0, 56.0, 2),
                                                  (60.0, 48.0, 0)))
    image = _thumbnail(sample_index, proposal)
    assert _near(image, 32, 16, KEYPOINT) and _near(image, 16, 41.6, KEYPOINT)
    assert not _near(image, 48, 28.8, KEYPOINT)  # not labelled (v = 0): not drawn


def test_a_click_anywhere_in_the_accept_cell_toggles_it(make_napari_viewer, sample_index: Index,
                                                        qtbot) -> None:
    viewer = make_napari_viewer()
    review = ReviewWidget(viewer, sample_index, [_proposal(sample_index)], "triangle")
    viewer.window.add_dock_widget(review)
    viewer.show()
    qtbot.waitExposed(review.table)
    cell = review.table.visualRect(review.proxy.index(0, ProposalTableModel.ACCEPT))
    assert cell.width() > 40  # room beside the indicator
    away = QPoint(cell.right() - 4, cell.center().y())  # middle-right, off the indicator
    qtbot.mouseClick(review.table.viewport(), Qt.MouseButton.LeftButton, pos=away)
    assert review.accepted() == []
    qtbot.mouseClick(review.table.viewport(), Qt.MouseButton.LeftButton, pos=away)
    assert [p.id for p in review.accepted()] == [1]
