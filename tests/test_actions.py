"""The specification's enablement rules for Learn and Complete, one test per condition."""

from __future__ import annotations

import pytest

from napari_learn_complete.actions import (
    category_action_availability,
    image_action_availability,
)
from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import create_model


@pytest.fixture
def boxes_index(sample_index: Index) -> Index:
    """The sample index with a box-only (Faster R-CNN) active model."""
    create_model(sample_index, weights="none")
    return sample_index


@pytest.fixture
def keypoints_index(sample_index: Index) -> Index:
    """The sample index with a keypoint (Keypoint R-CNN) active model."""
    create_model(sample_index, keypoints=True, weights="none")
    return sample_index


def test_no_selection_is_the_first_reason(boxes_index: Index) -> None:
    found = image_action_availability(boxes_index, [], "roi", "disc")
    assert not found and found.reason == "Select at least one image"


def test_no_model(sample_index: Index) -> None:
    found = image_action_availability(sample_index, [1], "roi", "disc")
    assert not found.enabled
    assert found.reason == "No active model: create one in the Model panel"


def test_box_model_does_not_support_keypoints(boxes_index: Index) -> None:
    found = image_action_availability(boxes_index, [1], "keypoints", "triangle")
    assert not found.enabled
    assert found.reason == "The active model does not support keypoints"
    assert image_action_availability(boxes_index, [1], "roi", "triangle").enabled


def test_roi_disabled_on_category(boxes_index: Index) -> None:
    boxes_index.update_category("disc", roi_enabled=False)
    found = image_action_availability(boxes_index, [1, 2], "roi", "disc")
    assert not found.enabled
    assert found.reason == "ROI is not enabled for category 'disc'"


def test_keypoints_not_enabled_for_category(keypoints_index: Index) -> None:
    found = image_action_availability(keypoints_index, [1], "keypoints", "disc")
    assert not found.enabled
    assert found.reason == "Keypoints are not enabled for category 'disc'"


def test_all_conditions_met(keypoints_index: Index) -> None:
    assert image_action_availability(keypoints_index, [1], "keypoints", "triangle") == (
        image_action_availability(keypoints_index, [1, 3], "roi", "square")
    )
    found = image_action_availability(keypoints_index, [1], "keypoints", "triangle")
    assert found.enabled and found.reason == ""


def test_no_active_category(boxes_index: Index) -> None:
    found = image_action_availability(boxes_index, [1], "roi", None)
    assert not found.enabled and found.reason == "Choose an active category first"


def test_bad_kind_is_refused(boxes_index: Index) -> None:
    with pytest.raises(BadInputError, match="'boxes'"):
        image_action_availability(boxes_index, [1], "boxes", "disc")


def test_category_needs_an_observation(sample_index: Index) -> None:
    assert category_action_availability(sample_index, "disc", "roi").enabled
    sample_index.add_category("empty")
    found = category_action_availability(sample_index, "empty", "roi")
    assert not found.enabled
    assert found.reason == "Category 'empty' has no observations yet"


def test_category_needs_the_kind_switched_on(sample_index: Index) -> None:
    assert category_action_availability(sample_index, "triangle", "keypoints").enabled
    found = category_action_availability(sample_index, "disc", "keypoints")
    assert not found.enabled
    assert found.reason == "Keypoints are not enabled for category 'disc'"


def test_unknown_category(sample_index: Index) -> None:
    found = category_action_availability(sample_index, "nope", "roi")
    assert not found.enabled and found.reason == "Category 'nope' is not in the index"
