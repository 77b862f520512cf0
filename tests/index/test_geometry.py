"""The annotation geometry rules shared by Complete, the layers, Learn and COCO."""

from __future__ import annotations

from dataclasses import replace

import pytest

from napari_learn_complete.index import Observation, attach_target, iou, keypoint_extent

_BASE = Observation(id=0, image_id=1, category_id=1, box=None, keypoints=None, iscrowd=False,
                    source="human", score=None, model_version=None, run_id=None, created_at="",
                    updated_at="")


def _obs(obs_id: int, box=None, keypoints=None) -> Observation:
    return replace(_BASE, id=obs_id, box=box, keypoints=keypoints)


def test_keypoint_extent_spans_the_labelled_keypoints_only():
    assert keypoint_extent([(5, 9, 2), (100, 100, 0), (1, 3, 1)]) == (1, 3, 5, 9)
    assert keypoint_extent([(5, 9, 0)]) is None
    assert _obs(1, keypoints=((5, 9, 2), (1, 3, 2))).extent == (1, 3, 5, 9)
    assert _obs(1, box=(0, 0, 2, 2), keypoints=((5, 9, 2),)).extent == (0, 0, 2, 2)


def test_iou():
    assert list(iou((0, 0, 10, 10), [(0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30)])) == \
        pytest.approx([1.0, 1 / 3, 0.0])


def test_attach_target_prefers_overlap_then_the_nearest_box_within_reach():
    left, right = _obs(1, box=(0, 0, 10, 10)), _obs(2, box=(20, 0, 30, 10))
    boxless = _obs(3, keypoints=((50, 50, 2),))
    candidates = [left, right, boxless]
    assert attach_target((18, 0, 29, 10), candidates) is right  # overlaps right most
    assert attach_target((25, 5, 25, 5), candidates) is right  # a point inside right's box
    assert attach_target((12, 5, 12, 5), candidates) is left  # nearest centre, within reach
    assert attach_target((80, 80, 80, 80), candidates) is None  # too far from every box
    assert attach_target((5, 5, 5, 5), [boxless]) is None  # only boxes are matched
