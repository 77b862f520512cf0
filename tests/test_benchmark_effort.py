"""benchmarks/effort.py counts a person's edits by the rules of issue 12; each rule is checked on
hand-made annotations, then one tiny loop (a smoke test, not a measurement) gives every figure."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from benchmark_scripts import benchmark_script
from napari_learn_complete.index import Index
from napari_learn_complete.model.config import Suggested
from napari_learn_complete.model.registry import CONFIG_FILE, active_model
from napari_learn_complete.sample import GROUND_TRUTH_FILE
from untrained import untrained_model

BOX = (10.0, 10.0, 50.0, 50.0)  # diagonal 56.6 px: a point may be off by 2.83 px
POINTS = ((30.0, 10.0, 2), (10.0, 50.0, 2), (50.0, 50.0, 2))


@pytest.fixture(scope="module")
def effort():
    with benchmark_script("effort") as module:
        yield module


def triangle(effort, box=BOX, points=POINTS):
    return effort.Annotation("triangle", box, points)


def disc(effort, box=BOX):
    return effort.Annotation("disc", box, None)


def test_the_truth_itself_needs_no_edit(effort):
    truth = [triangle(effort), disc(effort, (60.0, 60.0, 90.0, 90.0))]
    assert effort.count_edits(truth, list(reversed(truth))) == effort.Edits(0, 0)


def test_manual_costs_a_box_per_object_and_a_point_per_labelled_keypoint(effort):
    hidden = ((30.0, 10.0, 2), (10.0, 50.0, 0), (50.0, 50.0, 2))
    truth = [triangle(effort, points=hidden), disc(effort)]
    assert effort.manual_edits(truth) == effort.Edits(2, 2)


def test_missing_box_is_one_draw_and_its_points_are_placed(effort):
    edits = effort.count_edits([triangle(effort)], [])
    assert edits == effort.Edits(1, 3)
    assert edits.kinds == {"box draw": 1, "point place": 3}


def test_false_box_is_one_delete_and_its_points_are_deleted(effort):
    edits = effort.count_edits([], [triangle(effort)])
    assert edits == effort.Edits(1, 3)
    assert edits.kinds == {"box delete": 1, "point delete": 3}


def test_box_below_adjust_iou_is_one_adjust(effort):
    loose = (10.0, 10.0, 50.0, 56.0)  # IoU 40/46 = 0.87: kept
    off = (10.0, 10.0, 50.0, 58.0)  # IoU 40/48 = 0.83: adjusted
    assert effort.count_edits([disc(effort)], [disc(effort, loose)]).roi == 0
    assert effort.count_edits([disc(effort)], [disc(effort, off)]).kinds == {"box adjust": 1}


def test_box_too_far_to_be_the_object_is_a_delete_and_a_draw(effort):
    apart = (40.0, 10.0, 80.0, 50.0)  # IoU 10/70 < MATCH_IOU
    assert effort.count_edits([disc(effort)], [disc(effort, apart)]).kinds == {
        "box draw": 1, "box delete": 1}


def test_matching_is_per_category(effort):
    assert effort.count_edits([disc(effort)], [triangle(effort)]) == effort.Edits(2, 3)


def test_matching_is_one_to_one_with_the_best_total(effort):
    a, b = (0.0, 0.0, 40.0, 40.0), (20.0, 0.0, 60.0, 40.0)
    # p overlaps a most (IoU 0.72) and b enough (0.54); q overlaps a only (0.67). A greedy match
    # would give a to p and leave b and q unpaired (3 edits); the best total pairs a-q and b-p,
    # two adjusts.
    p, q = (4.0, 0.0, 50.0, 40.0), (-16.0, 0.0, 32.0, 40.0)
    pairs = effort.match([a, b], [p, q])
    assert sorted((t, found) for t, found, _ in pairs) == [(0, 1), (1, 0)]
    assert effort.count_edits([disc(effort, a), disc(effort, b)],
                              [disc(effort, p), disc(effort, q)]).roi == 2


def test_point_beyond_tolerance_is_one_move(effort):
    within = ((32.5, 10.0, 2), *POINTS[1:])  # 2.5 px off
    beyond = ((33.0, 10.0, 2), *POINTS[1:])  # 3 px off
    assert effort.count_edits([triangle(effort)], [triangle(effort, points=within)]).kp == 0
    assert effort.count_edits([triangle(effort)], [triangle(effort, points=beyond)]).kinds == {
        "point move": 1}


def test_missing_and_false_points_of_a_paired_object(effort):
    missing = ((30.0, 10.0, 0), *POINTS[1:])
    hidden_truth = ((30.0, 10.0, 0), *POINTS[1:])
    assert effort.count_edits([triangle(effort)], [triangle(effort, points=missing)]).kinds == {
        "point place": 1}
    assert effort.count_edits([triangle(effort, points=hidden_truth)],
                              [triangle(effort)]).kinds == {"point delete": 1}


def test_keypoints_count_apart_from_boxes(effort):
    """A keypoints-only prediction pairs with its object by the box around its points: the box
    is missing (1 draw), the points are right (no edit)."""
    assert effort.count_edits([triangle(effort)], [triangle(effort, box=None)]) == \
        effort.Edits(1, 0)


def test_batches_grow_and_cover_every_image(effort):
    plan = effort.Plan(images=40, first=4, batch=4, max_batch=10, size_range=(64, 64))
    assert effort.batches(plan) == [(4, 8), (8, 16), (16, 26), (26, 36), (36, 40)]


def test_small_sets_learn_at_least_the_recipes_steps(effort):
    """docs/learn.md's advice for a model from random weights; 0 keeps the dialog's epochs."""
    recipe = effort.Recipe(effort.LearnSettings(epochs=10), effort.CompleteSettings(),
                           effort.choose_device("cpu"), min_steps=100)
    assert recipe.epochs(8, batch_size=4) == 50  # 2 steps an epoch
    assert recipe.epochs(9, batch_size=4) == 34  # 3 steps an epoch, the last one short
    assert recipe.epochs(48, batch_size=4) == 10  # 12 steps an epoch: the dialog's 10 suffice
    assert replace(recipe, min_steps=0).epochs(8, batch_size=4) == 10
    # the first Learn, on a backbone that learned nothing yet, takes the first set's steps
    first = replace(recipe, first_steps=200)
    assert first.epochs(16, batch_size=4, untrained=True) == 50
    assert first.epochs(16, batch_size=4) == 25  # later Learns: min_steps
    assert replace(first, first_steps=0).epochs(16, batch_size=4, untrained=True) == 25


def test_tiny_loop_reports_every_figure(effort, tmp_path):
    plan = effort.Plan(images=5, first=2, batch=1, max_batch=2, size_range=(64, 64),
                       min_size=64, detections=5)
    recipe = effort.Recipe(effort.LearnSettings(epochs=1, mode="full", mix_in=1),
                           effort.CompleteSettings(max_detections=3), effort.choose_device("cpu"),
                           min_steps=3, first_steps=5)
    figures = effort.benchmark(tmp_path, plan, recipe)
    for kind in ("roi", "kp"):
        manual, loop = figures[f"{kind}_edits_manual"], figures[f"{kind}_edits_loop"]
        assert manual > 0 and loop > 0
        assert figures[f"{kind}_edit_ratio"] == pytest.approx(manual / loop, abs=1e-3)
    cycles = figures["cycles"]
    assert [c["images"] for c in cycles] == [2, 1, 2]  # by hand, then batches of 1 and 2
    assert sum(c["roi_edits"] for c in cycles) == figures["roi_edits_loop"]
    # the edits by kind add up to the totals, per cycle and over the loop; the first set is drawn
    kinds = figures["edit_kinds_loop"]
    assert kinds["box draw"] + kinds["box delete"] + kinds["box adjust"] == \
        figures["roi_edits_loop"]
    assert kinds["point place"] + kinds["point delete"] + kinds["point move"] == \
        figures["kp_edits_loop"]
    assert cycles[0]["edit_kinds"]["box draw"] == cycles[0]["roi_edits"]
    assert all(sum(c["edit_kinds"].values()) == c["roi_edits"] + c["kp_edits"] for c in cycles)
    assert cycles[0]["learn_seconds"] > 0 and cycles[1]["complete_seconds"] > 0
    assert cycles[-1]["learn_seconds"] == 0  # nothing left to Complete after the last batch
    # 2 images (the first set; then 1 with 1 mixed in) make one step of 4: the first Learn, from
    # random weights, 5 epochs for 5 steps, the next 3 for 3
    assert [c["learn_epochs"] for c in cycles] == [5, 3, 0]
    index = Index(tmp_path / "index")
    learns = reversed(index.runs.list(operations=["learn"]))  # oldest first
    assert [r.settings["epochs"] for r in learns] == [5, 3]
    # each Complete's settings per category: the Learn's suggestion when it offered one
    suggested = active_model(Index(tmp_path / "index")).config.suggested
    for name, (min_score, most) in cycles[-1]["complete_settings"].items():
        expected = suggested.get(name) or effort.CompleteSettings(max_detections=3)
        assert (min_score, most) == (round(expected.min_score, 4), expected.max_detections)
    assert set(cycles[-1]["complete_settings"]) == {"disc", "square", "triangle"}
    assert figures["compute_seconds"] > 0
    json.dumps(figures, allow_nan=False)
    # the ground truth only ever reached the index as saved human observations, never as a file
    assert not (tmp_path / "index" / GROUND_TRUTH_FILE).exists()


def test_the_annotator_presses_use_suggested_when_the_dialog_offers_it(effort, sample_index):
    handle = untrained_model(sample_index, keypoints=True, min_size=64, max_detections=50)
    nothing = Suggested(min_score=1.0, max_detections=1, images=1, held_out=True)
    handle.config.replace(suggested={"disc": nothing}).save(handle.folder / CONFIG_FILE)
    images = sample_index.images()[6:8]  # unlabelled
    fixed = effort.CompleteSettings(max_detections=2)

    def written(suggested: bool) -> dict[str, int]:
        recipe = effort.Recipe(effort.LearnSettings(), fixed, effort.choose_device("cpu"),
                               suggested=suggested)
        runs = effort.complete_all(sample_index, images, recipe)
        counts = {name: len(sample_index.observations(category=name, source="model"))
                  for name in ("disc", "square")}
        for run_id in reversed(runs):
            sample_index.runs.undo(run_id)
        return counts

    # offered for disc only (nothing scores 1.0: no disc); square keeps the recipe's 2 per image
    assert written(True) == {"disc": 0, "square": 4}
    assert written(False) == {"disc": 4, "square": 4}
