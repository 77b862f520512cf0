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
               "complete_images_per_s_baseline", "complete_max_difference"]
    for name in numbers:
        assert isinstance(figures[name], float) and math.isfinite(figures[name]), name
    for name in ("learn_heads_ratio", "complete_ratio"):  # timings: positive, spread ordered
        spread = figures["spread"][name]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"], (name, spread)
    assert 0 <= figures["learn_ap_ours"] <= 1
    # The same model over the same pixels: Complete writes what the per-image loop finds.
    assert figures["complete_outputs_match"] is True
    assert isinstance(figures["complete_batched_outputs_match"], bool)
    assert figures["complete_detections_per_image"] > 0
    json.dumps(figures, allow_nan=False)  # one valid JSON object
    assert "learn heads" in capsys.readouterr().err  # it says what it does as it goes


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
    assert run_module.difference(expected, swapped) == pytest.approx(1e-4)
    assert run_module.difference(expected, expected[:1]) == math.inf
    moved = expected.copy()
    moved[1, 2] += 3
    assert run_module.difference(expected, moved) == pytest.approx(3)
    # pairing each with the closest one left would pair 10 with 11.9 and leave 12 with 8 (4 px)
    crowded = np.array([[0, 0, 10, 10, 0.5], [0, 0, 10, 12, 0.5]], float)
    moved = np.array([[0, 0, 10, 11.9, 0.5], [0, 0, 10, 8, 0.5]], float)
    assert run_module.difference(crowded, moved) == pytest.approx(2)
    # at Complete's max detections (2), another detection tied at the cut made it in: the same
    # list within float tolerance; a difference above the cut still counts
    tied = np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.5 + 1e-5]], float)
    best = np.array([[0, 0, 10, 10, 0.9], [5, 5, 20, 20, 0.5]], float)
    assert run_module.difference(best, tied) == pytest.approx(45)
    assert run_module.difference(best, tied, cap=2) == 0
    assert run_module.difference(best, tied + np.array([0, 0, 3, 0, 0]), cap=2) == pytest.approx(3)
    assert run_module.difference(best, tied, cap=3) == pytest.approx(45)  # not at the cut
