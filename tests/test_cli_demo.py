"""``napari-learn-complete demo``: a whole Learn & Complete cycle on the sample index."""

from __future__ import annotations

import json

from napari_learn_complete.cli import main
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import active_model
from napari_learn_complete.sample import GROUND_TRUTH_FILE


def test_demo_learns_completes_the_unlabelled_images_and_scores_them(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--images", "8", "--labelled", "4", "--epochs", "1",
            "--min-score", "0"]
    assert main(args) == 0
    captured = capsys.readouterr()
    stdout = captured.out
    assert "epoch 1/1 loss" in captured.err  # progress of each epoch while Learn runs
    facts = json.loads(stdout.strip().splitlines()[-1])
    assert "triangle" in stdout  # the table of what the sample holds

    index = Index(out)
    assert (out / GROUND_TRUTH_FILE).is_file()
    assert facts["labelled"] == 4 and facts["completed_images"] == 4
    assert facts["learn"]["version"] == 2 == active_model(index).active_version
    assert len(facts["learn"]["losses"]) == 1
    made = index.observations(source="model")
    # min score 0 and up to 3 detections per image and category: the model wrote something,
    # only on images nobody labelled, and the summary counts exactly what is in the index.
    assert made and sum(facts["written"].values()) == len(made)
    labelled = {o.image_id for o in index.observations(source="human")}
    assert not labelled & {o.image_id for o in made}
    assert 0.0 <= facts["box_AP50"] <= 1.0 and 0.0 <= facts["box_AP"] <= facts["box_AP50"]

    assert main(args) == 2  # never overwrites an index
    assert "already exists" in capsys.readouterr().err
