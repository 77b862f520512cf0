"""The specification's enablement rules for Learn and Complete, one test per condition."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_learn_complete.actions import (
    category_action_availability,
    image_action_availability,
)
from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import create_model
from napari_learn_complete.sample import make_sample_index


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


NO_MODEL = "No model yet: run Learn (it offers to create one) or create one in the Model panel"


def test_no_selection_is_the_first_reason(boxes_index: Index) -> None:
    found = image_action_availability(boxes_index, [], "roi", "disc", action="learn")
    assert not found and found.reason == "Select at least one image"


@pytest.mark.parametrize("kind", ["roi", "keypoints"])
def test_no_model_learn_is_available_complete_is_not(sample_index: Index, kind: str) -> None:
    """Learn offers to create a model first; Complete has nothing to run and says where to go."""
    assert image_action_availability(sample_index, [1], kind, "triangle", action="learn")
    assert category_action_availability(sample_index, "triangle", kind, action="learn")
    for found in (
        image_action_availability(sample_index, [1], kind, "triangle", action="complete"),
        category_action_availability(sample_index, "triangle", kind, action="complete"),
    ):
        assert not found.enabled and found.reason == NO_MODEL


@pytest.mark.parametrize("action", ["learn", "complete"])
def test_box_model_does_not_support_keypoints(boxes_index: Index, action: str) -> None:
    for found in (
        image_action_availability(boxes_index, [1], "keypoints", "triangle", action=action),
        category_action_availability(boxes_index, "triangle", "keypoints", action=action),
    ):
        assert not found.enabled
        assert found.reason == "The active model does not support keypoints"
    assert image_action_availability(boxes_index, [1], "roi", "triangle", action=action)
    assert category_action_availability(boxes_index, "triangle", "roi", action=action)


def test_the_rules_never_load_torch(sample_index: Index) -> None:
    """napari's process asks these rules on every selection; it must not import torch for it."""
    other = make_sample_index(sample_index.path.parent / "with_model", n_images=2, labelled=2)
    create_model(other, weights="none")
    script = (
        "import sys\n"
        "from napari_learn_complete.actions import "
        "category_action_availability, image_action_availability\n"
        "from napari_learn_complete.index import Index\n"
        "for path in sys.argv[1:]:\n"
        "    index = Index(path)\n"
        "    for action in ('learn', 'complete'):\n"
        "        image_action_availability(index, [1], 'roi', 'disc', action=action)\n"
        "        category_action_availability(index, 'triangle', 'keypoints', action=action)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(sample_index.path), str(other.path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_roi_disabled_on_category(boxes_index: Index) -> None:
    boxes_index.update_category("disc", roi_enabled=False)
    found = image_action_availability(boxes_index, [1, 2], "roi", "disc", action="complete")
    assert not found.enabled
    assert found.reason == "ROI is not enabled for category 'disc'"


def test_keypoints_not_enabled_for_category(keypoints_index: Index) -> None:
    found = image_action_availability(keypoints_index, [1], "keypoints", "disc", action="complete")
    assert not found.enabled
    assert found.reason == "Keypoints are not enabled for category 'disc'"


@pytest.mark.parametrize("action", ["learn", "complete"])
def test_all_conditions_met(keypoints_index: Index, action: str) -> None:
    found = image_action_availability(keypoints_index, [1], "keypoints", "triangle",
                                      action=action)
    assert found == image_action_availability(keypoints_index, [1, 3], "roi", "square",
                                              action=action)
    assert found.enabled and found.reason == ""


def test_no_active_category(boxes_index: Index) -> None:
    found = image_action_availability(boxes_index, [1], "roi", None, action="complete")
    assert not found.enabled and found.reason == "Choose an active category first"


def test_bad_kind_or_action_is_refused(boxes_index: Index) -> None:
    with pytest.raises(BadInputError, match="'boxes'"):
        image_action_availability(boxes_index, [1], "boxes", "disc", action="complete")
    with pytest.raises(BadInputError, match="'train'"):
        category_action_availability(boxes_index, "disc", "roi", action="train")


def test_category_needs_an_observation(sample_index: Index) -> None:
    assert category_action_availability(sample_index, "disc", "roi", action="learn").enabled
    sample_index.add_category("empty")
    found = category_action_availability(sample_index, "empty", "roi", action="learn")
    assert not found.enabled
    assert found.reason == "Category 'empty' has no observations yet"


def test_category_needs_the_kind_switched_on(sample_index: Index) -> None:
    assert category_action_availability(sample_index, "triangle", "keypoints", action="learn")
    found = category_action_availability(sample_index, "disc", "keypoints", action="learn")
    assert not found.enabled
    assert found.reason == "Keypoints are not enabled for category 'disc'"


def test_unknown_category(sample_index: Index) -> None:
    found = category_action_availability(sample_index, "nope", "roi", action="learn")
    assert not found.enabled and found.reason == "Category 'nope' is not in the index"
