"""Exit statuses that mean what they say (README "Command line"): 2 refused or bad input, a full
disk included, with the index unchanged; 3 stopped part-way, naming what was kept and the undo
command; 1 a failure that is not the user's; propose names the images it skipped."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch

from doubles import ScriptedDetector
from napari_learn_complete.cli import main
from napari_learn_complete.engine import complete as complete_module
from napari_learn_complete.engine import proposals as proposals_module
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.errors import EngineError
from napari_learn_complete.index import Index
from napari_learn_complete.index.coco import export_coco
from napari_learn_complete.model import active_model, create_model

NAMES = [f"sample_{i:03d}.png" for i in range(6, 12)]  # the unlabelled images
FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def scripted_model(sample_index, monkeypatch) -> Index:
    """Complete and propose run a scripted detector in place of the active model."""
    detector = ScriptedDetector(sample_index, {
        **{n: [Detection("square", (2.0, 2.0, 20.0, 20.0), 0.9)] for n in NAMES},
        "sample_003.png": [Detection("disc", (10.0, 10.0, 40.0, 40.0), 0.4)],
        "sample_005.png": [Detection("disc", (5.0, 5.0, 30.0, 30.0), 0.7)],
    })
    for module in (complete_module, proposals_module):
        monkeypatch.setattr(module, "load_predictor", lambda index, device: detector)
    return sample_index


def test_complete_stopped_part_way_exits_3_naming_what_was_kept_and_the_undo(
        scripted_model, capsys, db_dump):
    index = scripted_model
    before = db_dump(index)
    (index.path / index.image("sample_010.png").path).write_bytes(b"not a png")  # third batch
    path = str(index.path)
    code = main(["complete", path, "--images", *NAMES, "--category", "square",
                 "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    [run] = index.query("SELECT id, status FROM runs")
    assert run["status"] == "failed"
    assert "sample_010.png" in err
    assert "Complete stopped part-way, after 4 of 6 images: the 4 result(s) saved so far are " \
           f"kept (run {run['id']}: undo it to take them back)" in err
    assert err.endswith(f"undo it with: napari-learn-complete undo {path} {run['id']}\n")
    assert len(index.observations(source="model")) == 4  # the two committed batches, whole
    assert main(["undo", path, str(run["id"])]) == 0
    after = db_dump(index)
    assert {k: v for k, v in after.items() if k not in ("runs", "run_changes", "_files")} == \
        {k: v for k, v in before.items() if k not in ("runs", "run_changes", "_files")}


def test_complete_with_a_missing_image_file_is_refused_before_writing(
        scripted_model, capsys, db_dump):
    index = scripted_model
    (index.path / index.image("sample_010.png").path).unlink()
    before = db_dump(index)
    assert main(["complete", str(index.path), "--images", *NAMES, "--category", "square",
                 "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "image file not found for 1 selected image(s), so nothing was written: " \
           "sample_010.png" in err
    assert db_dump(index) == before


def test_propose_names_the_images_it_skipped(scripted_model, capsys, tmp_path):
    index = scripted_model
    gone = index.path / index.image("sample_003.png").path
    gone.unlink()
    out = tmp_path / "proposals.json"
    assert main(["propose", str(index.path), "--category", "disc", "--out", str(out)]) == 0
    stdout, err = capsys.readouterr()
    reason = f"image file not found: {gone.resolve()}"
    assert f"skipped sample_003.png: {reason}\n" in err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["skipped"] == {"sample_003.png": reason}
    assert summary["proposals"] == 1  # sample_005's disc


def test_an_engine_failure_exits_1(scripted_model, capsys, monkeypatch):
    def died(*args, **kwargs):
        raise EngineError("the engine process died during complete (killed by SIGKILL)")

    monkeypatch.setattr("napari_learn_complete.cli.complete_cmds.complete", died)
    assert main(["complete", str(scripted_model.path), "--images", "sample_006.png",
                 "--category", "square"]) == 1
    assert capsys.readouterr().err == ("napari-learn-complete complete failed: the engine "
                                       "process died during complete (killed by SIGKILL)\n")


def test_a_full_disk_during_import_copy_exits_2_and_changes_nothing(
        sample_index, empty_index, tmp_path, capsys, db_dump, monkeypatch):
    coco = tmp_path / "sample.json"
    export_coco(sample_index, coco)
    copy2, copies = shutil.copy2, []

    def fills_up(source, target, **kwargs):
        if len(copies) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        copies.append(target)
        return copy2(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copy2", fills_up)
    before = db_dump(empty_index)
    assert main(["import-coco", str(empty_index.path), str(coco), "--images",
                 str(sample_index.path / "images"), "--copy"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("napari-learn-complete import-coco: no space left on device while "
                           f"writing {empty_index.path / 'images'}")
    assert db_dump(empty_index) == before  # no staged copy left either


def test_a_full_disk_during_model_create_exits_2_and_changes_nothing(
        sample_index, capsys, db_dump, monkeypatch):
    def fills_up(*args, **kwargs):
        raise FULL

    monkeypatch.setattr(torch, "save", fills_up)
    before = db_dump(sample_index)
    assert main(["model", "create", str(sample_index.path), "--weights", "none"]) == 2
    assert capsys.readouterr().err == ("napari-learn-complete model: no space left on device "
                                       f"while writing in {sample_index.path}\n")
    assert db_dump(sample_index) == before
    assert not list((sample_index.path / "models").iterdir())  # no staging folder either


def test_a_full_disk_at_learns_weight_save_exits_2_keeping_the_version(
        sample_index, capsys, db_dump, monkeypatch):
    handle = create_model(sample_index, weights="none", min_size=64)
    config = handle.config.replace(training=handle.config.training.replace(batch_size=2))
    config.save(handle.folder / "config.json")
    before = db_dump(sample_index)

    def fills_up(*args, **kwargs):
        raise FULL

    monkeypatch.setattr(torch, "save", fills_up)
    assert main(["learn", str(sample_index.path), "--images", "sample_000.png", "--epochs",
                 "1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("napari-learn-complete learn: no space left on device while "
                                    f"writing in {sample_index.path}")
    assert active_model(sample_index).active_version == 1
    [run] = sample_index.query("SELECT operation, status, version FROM runs")
    assert tuple(run) == ("learn", "failed", None)
    after = db_dump(sample_index)
    assert after["_files"] == before["_files"]  # no temporary weight file left
    assert after["model_versions"] == before["model_versions"]
