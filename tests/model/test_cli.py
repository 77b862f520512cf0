"""``napari-learn-complete model create | versions | rollback`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest
import torch

from napari_learn_complete import cli
from napari_learn_complete.model import active_model, models


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_create_versions_rollback(sample_index, capsys):
    path = str(sample_index.path)
    assert cli.main(["model", "create", path, "--keypoints", "--input-size", "352",
                     "--weights", "none"]) == 0
    created = _last_json(capsys.readouterr().out)
    assert created["architecture"] == "keypointrcnn" and created["min_size"] == 352
    assert created["keypoint_names"] == ["apex", "left", "right"] and created["version"] == 1

    handle = active_model(sample_index)
    handle.commit_version(*handle.load(), note="learn on 3 images")
    assert cli.main(["model", "versions", path]) == 0
    out = capsys.readouterr().out
    table = out.splitlines()
    assert any(line.startswith("*") and "learn on 3 images" in line for line in table)
    listed = _last_json(out)
    assert listed["active_version"] == 2
    assert [v["number"] for v in listed["versions"]] == [1, 2]

    assert cli.main(["model", "rollback", path, "1"]) == 0
    assert _last_json(capsys.readouterr().out) == {
        "model": "default", "active_version": 1, "previous_version": 2}
    assert active_model(sample_index).active_version == 1


def test_create_draws_random_weights_from_its_seed(sample_index, capsys):
    path = str(sample_index.path)
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert cli.main(["model", "create", path, "--weights", "none", "--name", name,
                         "--seed", seed]) == 0
    weights = {m.name: m.load()[0].roi_heads.box_predictor.cls_score.weight
               for m in models(sample_index)}
    assert torch.equal(weights["a"], weights["b"]) and not torch.equal(weights["a"], weights["c"])


def test_refusals_exit_2_with_the_reason(sample_index, empty_index, db_dump, capsys):
    before = db_dump(empty_index)
    assert cli.main(["model", "versions", str(empty_index.path)]) == 2
    assert "no model yet: create one in the Model panel" in capsys.readouterr().err
    assert cli.main(["model", "create", str(empty_index.path), "--keypoints",
                     "--weights", "none"]) == 2
    assert "needs a category with keypoints enabled" in capsys.readouterr().err
    assert db_dump(empty_index) == before

    assert cli.main(["model", "create", str(sample_index.path), "--weights", "none"]) == 0
    before = db_dump(sample_index)
    assert cli.main(["model", "rollback", str(sample_index.path), "9"]) == 2
    assert "has no version 9" in capsys.readouterr().err
    assert db_dump(sample_index) == before
    with pytest.raises(SystemExit) as exit_:
        cli.main(["model", "create", str(sample_index.path), "--backbone", "vgg16"])
    assert exit_.value.code == 2


def test_create_picks_a_choice_and_starts_from_coco_by_default(sample_index, db_dump, capsys):
    path = str(sample_index.path)
    before = db_dump(sample_index)
    assert cli.main(["model", "create", path]) == 2  # COCO weights by default: offline here
    err = capsys.readouterr().err
    assert "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth is missing" in err
    assert "--weights none" in err
    assert db_dump(sample_index) == before

    assert cli.main(["model", "create", path, "--choice", "keypoints", "--weights", "none",
                     "--input-size", "96"]) == 0
    created = _last_json(capsys.readouterr().out)
    assert (created["architecture"], created["backbone"]) == ("keypointrcnn", "resnet50_fpn")
    assert not active_model(sample_index).config.backbone_trained
