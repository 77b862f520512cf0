"""benchmarks/run.py measures every figure of issue 14 (tiny sizes here: a smoke test, not a
measurement)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmark_scripts import benchmark_script


@pytest.fixture(scope="module")
def run_module():
    with benchmark_script("run") as module:
        yield module


def test_every_figure_is_measured_and_numeric(run_module, tmp_path, capsys):
    sizes = run_module.Sizes(train=2, held_out=2, complete=3, image=64, epochs=1, memory=1,
                             repeats=1, min_size=64)
    figures = run_module.benchmark(tmp_path, sizes)
    numbers = ["learn_heads_ratio", "learn_full_ratio", "learn_ap_ours", "learn_ap_baseline",
               "learn_full_ap_ours", "learn_full_ap_baseline", "complete_ratio",
               "complete_rss_growth_mb", "complete_images_per_s_ours",
               "complete_images_per_s_baseline", "complete_max_difference",
               "complete_mirror_images_per_s", "complete_views_images_per_s"]
    for name in numbers:
        assert isinstance(figures[name], float) and math.isfinite(figures[name]), name
    for name in ("learn_heads_ratio", "complete_ratio"):  # timings: positive, spread ordered
        spread = figures["spread"][name]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"], (name, spread)
    assert 0 <= figures["learn_ap_ours"] <= 1
    # The same model over the same pixels: Complete writes what the per-image loop finds.
    assert figures["complete_outputs_match"] is True
    assert isinstance(figures["complete_batched_outputs_match"], bool)
    assert (figures["complete_batched_images_differing"] == 0) == figures[
        "complete_batched_outputs_match"]
    assert figures["complete_detections_per_image"] > 0
    # Both sides keep every detection, so a learned model that scores little still gives rows.
    assert figures["complete_score_threshold"] == 0
    json.dumps(figures, allow_nan=False)  # one valid JSON object
    assert "learn heads" in capsys.readouterr().err  # it says what it does as it goes


def test_differences_count_the_images_beyond_the_tolerance(run_module):
    same = np.array([[10, 10, 20, 20, 0.9]])
    moved = np.array([[10, 10, 20, 25, 0.9]])  # a box edge 5 px off
    gap, images = run_module.differences([same, same, same], [same, moved, same[:0]])
    assert math.isinf(gap) and images == 2  # the moved box, and the image with a box missing
    gap, images = run_module.differences([same], [same + 1e-4])  # within float tolerance
    assert 0 < gap < 1 and images == 0


def test_a_failed_match_shows_the_rows_without_a_partner(run_module):
    expected = np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8], [5, 5, 9, 9, 0.06]])
    got = np.array([[20, 20, 30, 30.0002, 0.8], [0, 0, 10, 12, 0.9]])  # one moved, one lost
    assert run_module.unmatched(expected, got) == {
        "loop": [[0, 0, 10, 10, 0.9], [5, 5, 9, 9, 0.06]], "complete": [[0, 0, 10, 12, 0.9]]}
    assert run_module.unmatched(expected, expected) == {"loop": [], "complete": []}
    assert run_module.unmatched(expected[:0], got[:1])["complete"] == [[20, 20, 30, 30.0002, 0.8]]


def test_difference_pairs_detections_regardless_of_order(run_module):
    expected = np.array([[0, 0, 10, 10, 0.5], [5, 5, 20, 20, 0.5]], float)
    swapped = expected[::-1] + 1e-4
    assert run_module.difference(expected, swapped) < 1  # within tolerance
    assert run_module.difference(expected, expected[:1]) == math.inf
    moved = expected.copy()
    moved[1, 2] += 0.003
    three = run_module.difference(expected, moved)
    assert three > 1
    # pairing each with the closest one left would pair 10 with 10.0019 and leave 10.002 with
    # 10.004 (twice the gap)
    crowded = np.array([[0, 0, 10, 10, 0.5], [0, 0, 10, 10.002, 0.5]], float)
    moved = np.array([[0, 0, 10, 10.0019, 0.5], [0, 0, 10, 10.004, 0.5]], float)
    assert run_module.difference(crowded, moved) == pytest.approx(
        run_module.difference(crowded[1:], moved[1:]))
    # at Complete's max detections (2), another detection tied at the cut made it in: the same
    # list within float tolerance; a difference above the cut still counts
    tied = np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.5 + 1e-5]], float)
    best = np.array([[0, 0, 10, 10, 0.9], [5, 5, 20, 20, 0.5]], float)
    assert run_module.difference(best, tied) > 1
    assert run_module.difference(best, tied, cap=2) == 0
    assert run_module.difference(best, tied + np.array([0, 0, 0.003, 0, 0]), cap=2) > 1
    assert run_module.difference(best, tied, cap=3) > 1  # not at the cut


def test_the_tolerance_is_float32_error_relative_to_the_coordinate(run_module):
    """The mismatch the benchmark once reported: one box, the same on both sides up to float32
    rounding on a 204 px coordinate (6e-6 of it). A gap that size on a 2 px coordinate, or a
    tenth of a pixel anywhere, is a real difference."""
    loop = np.array([[0.1979, 102.0653, 51.1999, 204.3431, 0.242]])
    ours = np.array([[0.1979, 102.065, 51.2, 204.3418, 0.242]])
    assert run_module.difference(loop, ours) <= 1
    assert run_module.unmatched(loop, ours) == {"loop": [], "complete": []}
    small = np.array([[0.1979, 1.0, 2.0, 2.0013, 0.242]])
    assert run_module.difference(small, small + np.array([0, 0, 0, 0.0013, 0])) > 1
    assert run_module.difference(loop, loop + np.array([0, 0, 0, 0.1, 0])) > 1
    assert run_module.difference(loop, loop + np.array([0, 0, 0, 0, 0.002])) > 1  # the score too
