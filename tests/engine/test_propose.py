"""Complete from a category: proposals are never saved before accept; accept writes exactly the
accepted ones, only for the target category; proposals files; the CLI contract."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest

from doubles import ScriptedDetector
from napari_learn_complete.cli import main
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.proposals import accept, load_proposals, propose, save_proposals
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.errors import BadInputError, RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model import create_model
from untrained import untrained_model

KPS = ((20.0, 10.0, 2), (10.0, 30.0, 2), (30.0, 30.0, 2))

FIVE = CompleteSettings(max_detections=5)  # up to five proposals per image


def scripted(index: Index) -> ScriptedDetector:
    """Discs on two images of other categories that have none (a square, a triangle), on one
    that has one, and on one without any observation."""
    return ScriptedDetector(index, {
        "sample_001.png": [Detection("disc", (0.0, 0.0, 10.0, 10.0), 0.99)],  # has a disc
        "sample_003.png": [Detection("disc", (10.0, 10.0, 40.0, 40.0), 0.4, KPS),
                           Detection("disc", (60.0, 60.0, 90.0, 90.0), 0.3)],
        "sample_005.png": [Detection("disc", (5.0, 5.0, 30.0, 30.0), 0.7),
                           Detection("square", (49.0, 41.0, 92.0, 84.0), 0.9)],
        "sample_006.png": [Detection("disc", (10.0, 10.0, 40.0, 40.0), 0.95)],  # unlabelled
    })


def test_propose_saves_nothing_and_covers_images_of_other_categories(sample_index, db_dump):
    """The specification: it "looks across the other categories in the active index for images
    that do not yet belong to the category": an image with no observation at all is not one."""
    before = db_dump(sample_index)
    events = []
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=scripted(sample_index),
                        progress=events.append)
    assert db_dump(sample_index) == before
    assert [(p.id, p.image_name, p.score) for p in proposals] == [
        (1, "sample_003.png", 0.4), (2, "sample_003.png", 0.3), (3, "sample_005.png", 0.7)]
    assert {p.category for p in proposals} == {"disc"} and proposals[0].kind == "roi"
    assert proposals[0].keypoints is None  # ROI proposals carry boxes only
    assert events[-1].stage == "propose" and events[-1].done == events[-1].total


def test_propose_leaves_out_video_and_refuses_an_unlabelled_category(
        sample_index, db_dump, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    sample_index.add_video(clip, width=32, height=32)
    detector = scripted(sample_index)
    assert {p.image_name for p in propose(sample_index, "disc", predictor=detector)} == {
        "sample_003.png", "sample_005.png"}
    sample_index.add_category("star")
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match="category 'star' has no observations yet"):
        propose(sample_index, "star", predictor=detector)
    assert db_dump(sample_index) == before


def test_propose_skips_an_image_whose_file_is_gone_and_names_it(sample_index, db_dump):
    detector = scripted(sample_index)
    gone = sample_index.path / sample_index.image("sample_003.png").path
    gone.unlink()
    before = db_dump(sample_index)
    events = []
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=detector,
                        progress=events.append)
    assert [(p.image_name, p.score) for p in proposals] == [("sample_005.png", 0.7)]
    assert proposals.skipped == {"sample_003.png": f"image file not found: {gone.resolve()}"}
    assert events[-1].message.endswith("1 proposals, 1 skipped (file not found)")
    back = pickle.loads(pickle.dumps(proposals))  # as the engine process sends it
    assert back == proposals and back.skipped == proposals.skipped
    assert db_dump(sample_index) == before


def test_accept_writes_only_the_target_category(sample_index, db_dump):
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=scripted(sample_index))
    others = [o for o in sample_index.observations() if o.category_id != 1]
    result = accept(sample_index, [proposals[2], proposals[1]])
    written = sample_index.observations(ids=result.observation_ids)
    assert [(o.box, o.score, o.source, o.model_version) for o in written] == [
        ((5.0, 5.0, 30.0, 30.0), 0.7, "model", "scripted:v1"),
        ((60.0, 60.0, 90.0, 90.0), 0.3, "model", "scripted:v1")]
    assert {o.category_id for o in written} == {sample_index.category("disc").id}
    assert [o for o in sample_index.observations() if o.category_id != 1] == others
    run = sample_index.query("SELECT operation, status FROM runs WHERE id = ?", (result.run_id,))
    assert tuple(run[0]) == ("accept", "done")


def test_accept_all_above_a_score_in_one_call_and_twice_is_not_stacked(sample_index, db_dump):
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=scripted(sample_index))
    result = accept(sample_index, proposals, min_score=0.35)
    assert [o.score for o in sample_index.observations(ids=result.observation_ids)] == [0.4, 0.7]
    again = accept(sample_index, proposals, min_score=0.35)
    assert again.written == 0  # the same boxes are there already
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match=r"with a score of at least 0\.95$"):
        accept(sample_index, proposals, min_score=0.95)
    assert db_dump(sample_index) == before


def test_accept_is_undoable_and_all_or_nothing(sample_index, db_dump):
    before = db_dump(sample_index)
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=scripted(sample_index))
    result = accept(sample_index, proposals)
    sample_index.runs.undo(result.run_id)
    after = db_dump(sample_index)
    assert {k: v for k, v in after.items() if k not in ("runs", "run_changes")} == {
        k: v for k, v in before.items() if k not in ("runs", "run_changes")}
    bad = [proposals[0], replace(proposals[1], box=(0.0, 0.0, 9999.0, 5.0))]
    with pytest.raises(BadInputError, match=r"sample_003\.png: box .* lies outside"):
        accept(sample_index, bad)
    assert db_dump(sample_index) == after


def test_accept_keypoint_proposals_attaches_to_a_box_drawn_since(sample_index):
    detector = ScriptedDetector(sample_index, {"sample_005.png": [
        Detection("triangle", (8.0, 8.0, 32.0, 32.0), 0.8, KPS)]})
    [proposal] = propose(sample_index, "triangle", kind="keypoints", predictor=detector)
    assert proposal.keypoints == KPS and proposal.kind == "keypoints"
    drawn = sample_index.add_observation("sample_005.png", "triangle", box=(9, 9, 31, 31))
    result = accept(sample_index, [proposal])
    obs = sample_index.observation(drawn.id)
    assert result.observation_ids == [drawn.id]
    assert obs.box == drawn.box and obs.keypoints == KPS


def test_accept_refuses_inconsistent_proposals(sample_index, db_dump):
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=scripted(sample_index))
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match="proposal 1 is given twice"):
        accept(sample_index, [proposals[0], proposals[0]])
    renamed = replace(proposals[2], image_name="other.png")
    with pytest.raises(BadInputError, match=r"image 6 is 'sample_005\.png' in this index"):
        accept(sample_index, [renamed])
    square = replace(proposals[1], category="square")
    with pytest.raises(BadInputError, match="must share one category"):
        accept(sample_index, [proposals[0], square])
    assert db_dump(sample_index) == before


def test_proposals_file_round_trip_and_refusals(sample_index, tmp_path):
    proposals = propose(sample_index, "disc", settings=FIVE, predictor=scripted(sample_index))
    path = tmp_path / "p.json"
    save_proposals(path, proposals, index=sample_index, category="disc", kind="roi")
    data = json.loads(path.read_text())
    assert (data["category"], data["kind"], data["model_version"]) == ("disc", "roi",
                                                                       "scripted:v1")
    assert load_proposals(path, index=sample_index, category="disc") == proposals
    with pytest.raises(BadInputError, match="are for category 'disc', not 'square'"):
        load_proposals(path, index=sample_index, category="square")
    other = Index.create(tmp_path / "other")
    with pytest.raises(BadInputError, match="were made for the index"):
        load_proposals(path, index=other)
    path.write_text("{}")
    with pytest.raises(BadInputError, match="not a proposals file"):
        load_proposals(path)


# ---------------------------------------------------------------- CLI
def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_complete_propose_accept_undo(sample_index, tmp_path, capsys, db_dump):
    untrained_model(sample_index, min_size=64)  # keeps every detection: the counts are exact
    path = str(sample_index.path)
    before = db_dump(sample_index)
    assert main(["complete", path, "--images", "sample_00[67].png", "--category", "square",
                 "--max-detections", "2"]) == 0
    summary = _last_json(capsys)
    assert set(summary) == {"images", "written", "removed", "seconds", "run_id"}
    assert (summary["images"], summary["written"], summary["removed"]) == (2, 4, 0)
    written = sample_index.observations(source="model")
    assert sorted(sample_index.image(o.image_id).name for o in written) == [
        "sample_006.png", "sample_006.png", "sample_007.png", "sample_007.png"]
    assert {(sample_index.category(o.category_id).name, o.run_id) for o in written} == {
        ("square", summary["run_id"])}
    assert main(["undo", path, str(summary["run_id"])]) == 0
    assert _last_json(capsys)["restored"] == 4
    after_undo = db_dump(sample_index)
    assert {k: v for k, v in after_undo.items() if k not in ("runs", "run_changes")} == {
        k: v for k, v in before.items() if k not in ("runs", "run_changes")}

    out = tmp_path / "proposals.json"
    assert main(["propose", path, "--category", "disc", "--out", str(out)]) == 0
    proposals = load_proposals(out)
    without_disc = {o.image_id for o in sample_index.observations()} - {
        o.image_id for o in sample_index.observations(category="disc")}
    assert _last_json(capsys)["proposals"] == len(proposals) == len(without_disc)
    assert sorted(p.image_id for p in proposals) == sorted(without_disc)  # the best one each
    assert {p.category for p in proposals} == {"disc"}
    assert main(["accept", path, str(out), "--ids", "1"]) == 0
    assert _last_json(capsys)["written"] == 1
    [accepted] = sample_index.observations(source="model")
    first = next(p for p in proposals if p.id == 1)
    assert (accepted.image_id, accepted.box, accepted.score) == (
        first.image_id, pytest.approx(first.box), pytest.approx(first.score))
    assert sample_index.category(accepted.category_id).name == "disc"
    assert main(["accept", path, str(out), "--ids", "999"]) == 2
    assert "no proposal with id 999" in capsys.readouterr().err


def test_cli_refusals_exit_2_and_change_nothing(sample_index, tmp_path, capsys, db_dump):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    sample_index.add_video(clip, width=32, height=32)
    path = str(sample_index.path)
    before = db_dump(sample_index)
    assert main(["complete", path, "--images", "sample_000.png", "--category", "disc"]) == 2
    assert "no model yet" in capsys.readouterr().err
    create_model(sample_index, weights="none", min_size=64)
    before = db_dump(sample_index)
    assert main(["complete", path, "--images", "sample_000.png", "clip.mp4",
                 "--category", "disc"]) == 2
    assert "video item(s): clip.mp4" in capsys.readouterr().err
    assert main(["complete", path, "--images", "sample_000.png", "--category", "disc",
                 "--kind", "keypoints"]) == 2
    assert main(["undo", path, "7"]) == 2
    assert db_dump(sample_index) == before
