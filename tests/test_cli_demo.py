"""``napari-learn-complete demo``: a whole Learn & Complete cycle on the sample index.

Nothing here depends on what a briefly trained model finds (that varies with torch versions and
thread counts): the real cycle is checked for what it writes and reports, and the scoring is
checked with a scripted detector whose answer is known.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from doubles import ScriptedDetector
from napari_learn_complete.cli import demo_cmds, main
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.metrics import evaluate_coco
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import active_model
from napari_learn_complete.sample import GROUND_TRUTH_FILE

ARGS = ["--images", "8", "--labelled", "4", "--epochs", "1", "--min-score", "0"]
SUMMARY_KEYS = {"index", "labelled", "completed_images", "seed", "learn", "written", "box_AP",
                "box_AP50", "box_AP75", "seconds"}


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _truth(index: Index, image_ids: set[int]) -> dict:
    truth = json.loads((index.path / GROUND_TRUTH_FILE).read_text())
    truth["images"] = [i for i in truth["images"] if i["id"] in image_ids]
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in image_ids]
    return truth


@pytest.mark.slow  # a real Learn from random weights
def test_demo_writes_and_reports_what_it_did(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    captured = capsys.readouterr()
    facts = _summary(captured.out)
    assert "triangle" in captured.out  # the table of what the sample holds
    assert "learn: 100%" in captured.err and "complete: 100%" in captured.err  # progress bars

    index = Index(out)
    assert set(facts) == SUMMARY_KEYS and facts["index"] == str(index.path)
    assert len(index.images()) == 8 and [c.name for c in index.categories()] == [
        "disc", "square", "triangle"]
    labelled = {o.image_id for o in index.observations(source="human")}
    rest = {i.id for i in index.images()} - labelled
    assert (facts["labelled"], facts["completed_images"]) == (len(labelled), len(rest)) == (4, 4)
    assert facts["learn"]["version"] == 2 == active_model(index).active_version
    assert len(facts["learn"]["losses"]) == 1

    made = index.observations(source="model")
    names = {c.id: c.name for c in index.categories()}
    assert facts["written"] == {name: sum(names[o.category_id] == name for o in made)
                                for name in names.values()}
    assert {o.image_id for o in made} <= rest  # only images nobody labelled
    per_image = Counter((o.image_id, o.category_id) for o in made)
    assert max(per_image.values(), default=0) <= 3  # the demo's max detections

    runs = sorted((r.operation, r.status, r.scope.get("category")) for r in index.runs.list())
    assert runs == [("complete", "done", name) for name in sorted(names.values())] + [
        ("learn", "done", None)]

    detections = [{"image_id": o.image_id, "category_id": o.category_id, "score": o.score,
                   "bbox": [o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1]]}
                  for o in made]
    expected = evaluate_coco(_truth(index, rest), detections)
    assert {k: facts[k] for k in expected} == {k: round(v, 4) for k, v in expected.items()}

    assert main(["demo", "--out", str(out), *ARGS]) == 2  # never overwrites an index
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow  # three real Learns from random weights
def test_the_same_seed_repeats_the_demo_to_the_figure(tmp_path, capsys):
    """A newcomer who runs the demo twice sees the same numbers (its AP varied from run to run
    while the random weights were unseeded); another seed is another model."""

    def figures(name: str, seed: int) -> dict:
        torch.seed()  # each run starts as a new process would, from a random global state
        assert main(["demo", "--out", str(tmp_path / name), *ARGS, "--epochs", "2",
                     "--seed", str(seed)]) == 0
        facts = _summary(capsys.readouterr().out)
        return {"seed": facts["seed"], "losses": facts["learn"]["losses"],
                "written": facts["written"], "AP": [facts[k] for k in SUMMARY_KEYS
                                                    if k.startswith("box_")]}

    first = figures("a", 3)
    assert first["seed"] == 3 and figures("b", 3) == first
    assert figures("c", 4)["losses"] != first["losses"]


@pytest.mark.parametrize(("scale", "aps"), [
    (1.0, (1.0, 1.0, 1.0)),  # every object exactly
    (0.8, (0.3, 1.0, 0.0)),  # IoU 0.64: counted at IoU 0.5, 0.55 and 0.6 of COCO's ten
    (0.25, (0.0, 0.0, 0.0)),  # IoU 0.0625: nothing found
])
def test_demo_scores_the_completed_boxes_against_the_ground_truth(tmp_path, capsys, monkeypatch,
                                                                   scale, aps):
    """Complete by a detector that finds every object of the ground truth, its box scaled by
    ``scale`` from its top-left corner: the AP the demo reports follows the overlap."""

    def scripted_complete(index, images, category, **kwargs):
        ids = {i.id: i.name for i in index.images()}
        found: dict[str, list[Detection]] = {}
        names = {c.id: c.name for c in index.categories()}
        for a in json.loads((index.path / GROUND_TRUTH_FILE).read_text())["annotations"]:
            x, y, w, h = a["bbox"]
            found.setdefault(ids[a["image_id"]], []).append(
                Detection(names[a["category_id"]], (x, y, x + scale * w, y + scale * h), 0.9))
        kwargs["predictor"] = ScriptedDetector(index, found)  # in place of the demo's model
        return complete(index, images, category, **kwargs)

    monkeypatch.setattr(demo_cmds, "learn", lambda index, **kwargs: SimpleNamespace(
        version=1, seconds=0.0, losses=[]))
    monkeypatch.setattr(demo_cmds, "complete", scripted_complete)
    assert main(["demo", "--out", str(tmp_path / "demo"), *ARGS]) == 0
    facts = _summary(capsys.readouterr().out)

    index = Index(tmp_path / "demo")
    rest = {i.id for i in index.images()} - {o.image_id for o in index.observations(
        source="human")}
    truth = _truth(index, rest)["annotations"]
    names = {c.id: c.name for c in index.categories()}
    assert facts["written"] == dict(Counter(names[a["category_id"]] for a in truth))
    assert (facts["box_AP"], facts["box_AP50"], facts["box_AP75"]) == aps


@pytest.mark.parametrize(("argv", "named"), [
    (["--epochs", "0"], "--epochs: must be at least 1, not 0"),
    (["--images", "0"], "--images: must be at least 2"),
    (["--images", "4", "--labelled", "10"], "--labelled: must be from 1 to 3"),
    (["--labelled", "0"], "--labelled: must be from 1 to 47"),
    (["--min-score", "1.5"], "--min-score: must be from 0 to 1"),
])
def test_meaningless_demo_settings_are_refused_before_anything_is_built(
        tmp_path, capsys, argv, named):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *argv]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_the_model_reads_each_image_once_for_every_category(tmp_path, monkeypatch):
    """The three categories' Completes share one predictor and its prediction cache."""
    read: list[int] = []
    predict = Predictor.predict

    def counted(self, images):
        read.append(len(images))
        return predict(self, images)

    monkeypatch.setattr(Predictor, "predict", counted)
    monkeypatch.setattr(demo_cmds, "learn", lambda index, **kwargs: SimpleNamespace(
        version=1, seconds=0.0, losses=[]))
    assert main(["demo", "--out", str(tmp_path / "demo"), *ARGS]) == 0
    assert sum(read) == 4  # the 4 unlabelled images, not 4 per category


@pytest.mark.slow  # a real Learn from random weights
def test_without_out_the_demo_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    """Each demo run writes tens of MB of weight versions: kept only where --out asks."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp makes its folders
    assert main(["demo", *ARGS]) == 0
    captured = capsys.readouterr()
    assert _summary(captured.out)["index"] is None and "--out DIR keeps it" in captured.err
    assert str(tmp_path) in captured.out  # it did work under the temporary folder
    assert list(tmp_path.iterdir()) == []
