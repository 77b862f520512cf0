"""``napari-learn-complete learn`` / ``train``: exit codes, progress on stderr, JSON summary."""

from __future__ import annotations

import json
import re

import pytest

from napari_learn_complete.cli import main
from napari_learn_complete.model import active_model, create_model


@pytest.fixture
def small_model(sample_index):
    handle = create_model(sample_index, weights="none", min_size=96)
    config = handle.config.replace(training=handle.config.training.replace(
        batch_size=2, epochs=1, test_percent=0.0))
    config.save(handle.folder / "config.json")
    return sample_index


def test_learn_prints_progress_and_a_json_summary_last(small_model, capsys):
    index = small_model
    code = main(["learn", str(index.path), "--images", "sample_00[0-3].png", "--epochs", "1",
                 "--test-percent", "25", "--mode", "full"])
    out, err = capsys.readouterr()
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["version"] == 2 == active_model(index).active_version
    assert summary["images"] == 3 and len(summary["losses"]) == 1
    assert set(summary) >= {"seconds", "metrics", "run_id"} and "box_AP50" in summary["metrics"]
    # a progress bar on stderr, run to its end, with the epoch and the loss of the last step
    assert re.search(r"\rlearn: 100%\|[^\r]*\| (\d+)/\1 \[[^\r]*epoch 1/1, loss \d+\.\d{4}\]\n$",
                     err)
    assert summary["notes"] == []


def test_learn_prints_its_notes(small_model, capsys):
    assert main(["learn", str(small_model.path), "--images", "sample_000.png", "--epochs", "1",
                 "--test-percent", "50"]) == 0
    out, err = capsys.readouterr()
    note = "1 image: nothing held out for testing (50% test data needs at least 2 images)"
    assert f"note: {note}\n" in err
    assert json.loads(out.strip().splitlines()[-1])["notes"] == [note]


def test_train_command(small_model, capsys):
    assert main(["train", str(small_model.path)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["version"] == 2
    assert re.search(r"\rtrain: +\d+%\|[^\r]*\| \d+/\d+ \[[^\r]*, loss \d+\.\d{4}\]\n$", err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--category", "disc", "--kind", "keypoints"], "keypoints"),
        (["--images", "nothing_*.png"], "no image in the index matches 'nothing_*.png'"),
        (["--images", "sample_011.png"], "have no boxes"),
        (["--images", "sample_000.png", "--test-percent", "100"],
         "test_percent: must be less than 100, not 100.0"),
        (["--images", "sample_000.png", "--epochs", "0"],
         "epochs: must be greater than or equal to 1, not 0"),
    ],
)
def test_refused_exits_2_with_the_reason(small_model, capsys, db_dump, args, message):
    before = db_dump(small_model)
    assert main(["learn", str(small_model.path), *args]) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""
    assert db_dump(small_model) == before


def test_failure_exits_1(small_model, capsys, monkeypatch):
    from napari_learn_complete.engine import train as train_module

    def broken(*args, **kwargs):
        raise FloatingPointError("the training loss became nan")

    monkeypatch.setattr(train_module, "_fit", broken)
    assert main(["learn", str(small_model.path), "--images", "sample_000.png"]) == 1
    assert "the training loss became nan" in capsys.readouterr().err


def test_images_and_category_are_exclusive(small_model):
    with pytest.raises(SystemExit) as exc:
        main(["learn", str(small_model.path), "--images", "a.png", "--category", "disc"])
    assert exc.value.code == 2
