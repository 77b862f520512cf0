"""Complete's suggested settings after a Learn: the min score and max detections that would have
cost the fewest corrections on the images the Learn judged (engine/suggest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_learn_complete.engine.suggest import suggest


def boxes(*rows) -> np.ndarray:
    return np.array(rows, float).reshape(-1, 4)


def found(*pairs) -> tuple[np.ndarray, np.ndarray]:
    """(box, score) pairs as the model's arrays."""
    return boxes(*(box for box, _ in pairs)), np.array([score for _, score in pairs], float)


OBJECT_A, OBJECT_B = (10, 10, 40, 40), (60, 60, 90, 90)
NEAR_A = (12, 12, 42, 42)  # IoU 0.77 with A: found, but to adjust
FAR = (100, 0, 120, 20)  # nothing there


def test_the_min_score_keeps_exactly_the_detections_that_save_corrections():
    truth = [boxes(OBJECT_A, OBJECT_B), boxes(OBJECT_A)]
    model = [found((OBJECT_A, 0.9), (FAR, 0.8), (OBJECT_B, 0.85), (FAR, 0.3)),
             found((OBJECT_A, 0.6), (FAR, 0.5))]
    # max detections 2 (the most objects on an image) keeps A .9, B .85 and A .6, false .5:
    # corrections -1, -1, -1, +1 from the best down, lowest after 0.6
    suggestion = suggest(truth, model, held_out=False)
    assert (suggestion.min_score, suggestion.max_detections) == (0.6, 2)
    assert (suggestion.images, suggestion.held_out) == (2, False)


def test_a_box_to_adjust_saves_nothing_and_a_false_box_costs_one():
    truth = [boxes(OBJECT_A)]
    assert suggest(truth, [found((NEAR_A, 0.9))], held_out=True).min_score == 1.0
    assert suggest(truth, [found((OBJECT_A, 0.4), (FAR, 0.9))],
                   held_out=True).min_score == 1.0  # the false box comes first: 0 at best
    assert suggest(truth, [found((FAR, 0.2), (OBJECT_A, 0.4))],
                   held_out=True).min_score == 0.4


def test_of_equally_cheap_min_scores_the_lowest_is_suggested():
    # On the Learn's own images the model scores its objects higher than on new ones: where
    # keeping more detections costs nothing there, they are kept.
    truth = [boxes(OBJECT_A)] * 3
    # -1 at 0.9, +1 at 0.8, -1 at 0.6: as cheap at 0.9 as at 0.6
    model = [found((OBJECT_A, 0.9)), found((FAR, 0.8)), found((OBJECT_A, 0.6))]
    assert suggest(truth, model, held_out=False).min_score == 0.6
    # a box to adjust (0) after the best: as cheap with it as without
    model = [found((OBJECT_A, 0.9)), found((NEAR_A, 0.7)), found((FAR, 0.5))]
    assert suggest(truth, model, held_out=False).min_score == 0.7


def test_each_object_is_found_once():
    # two detections on the same object (B missed): the second is a false box
    truth = [boxes(OBJECT_A, OBJECT_B)]
    model = [found((OBJECT_A, 0.9), ((11, 11, 40, 40), 0.8))]
    assert suggest(truth, model, held_out=True).min_score == 0.9


@pytest.mark.parametrize("model", [[found()], [found((FAR, 0.9))]])
def test_a_model_that_saves_nothing_suggests_writing_nothing(model):
    assert suggest([boxes(OBJECT_A)], model, held_out=True).min_score == 1.0


def test_no_object_of_the_category_no_suggestion():
    assert suggest([boxes(), boxes()], [found((FAR, 0.9)), found()], held_out=False) is None
