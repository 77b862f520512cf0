"""Complete from images: the write rules, the captured target, refusals, cancel and undo.

Most tests inject a :class:`ScriptedDetector` so each rule is checked against known detections;
the last ones run a real (untrained) model from the registry end to end.
"""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
import torch

from doubles import ScriptedDetector
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.errors import BadInputError, Cancelled, RefusedError, StoppedPartWay
from napari_learn_complete.index import Index
from napari_learn_complete.index.store import DB_NAME
from untrained import untrained_model

KPS = ((60.0, 40.0, 2), (50.0, 66.0, 2), (80.0, 66.0, 2))  # apex, left, right on sample_000


def det(category: str, box, score: float, keypoints=None) -> Detection:
    return Detection(category, tuple(float(v) for v in box), score, keypoints)


def without_runs(dump: dict) -> dict:
    """The annotation state: everything but the run history."""
    return {k: v for k, v in dump.items() if k not in ("runs", "run_changes")}


def run_row(index: Index, run_id: int) -> sqlite3.Row:
    return index.query("SELECT * FROM runs WHERE id = ?", (run_id,))[0]


def test_defaults_keep_the_best_detection_of_the_target_category(sample_index):
    assert CompleteSettings() == CompleteSettings(min_score=0.0, max_detections=1,
                                                  remove_existing=False)
    detector = ScriptedDetector(sample_index, {"sample_006.png": [
        det("disc", (10, 10, 30, 30), 0.5), det("disc", (50, 50, 80, 80), 0.9),
        det("square", (5, 60, 40, 95), 0.99), det("disc", (90, 10, 100, 20), 0.01),
    ]})
    result = complete(sample_index, ["sample_006.png"], "disc", predictor=detector)
    [obs] = sample_index.observations(images=[sample_index.image("sample_006.png").id])
    assert (result.images, result.written, result.removed) == (1, 1, 0)
    assert result.observation_ids == [obs.id]
    assert obs.box == (50.0, 50.0, 80.0, 80.0)
    assert sample_index.category(obs.category_id).name == "disc"
    assert (obs.source, obs.score, obs.model_version, obs.run_id) == (
        "model", 0.9, "scripted:v1", result.run_id)
    assert obs.keypoints is None
    run = run_row(sample_index, result.run_id)
    assert (run["operation"], run["kind"], run["status"]) == ("complete", "roi", "done")
    assert json.loads(run["settings"])["max_detections"] == 1


@pytest.mark.parametrize(("min_score", "max_detections", "expected"), [
    (0.0, 2, [0.9, 0.5]),
    (0.4, 5, [0.9, 0.5]),
    (0.0, 5, [0.9, 0.5, 0.01]),
    (0.95, 5, []),
])
def test_min_score_and_max_detections(sample_index, min_score, max_detections, expected):
    detector = ScriptedDetector(sample_index, {"sample_006.png": [
        det("disc", (10, 10, 30, 30), 0.5), det("disc", (50, 50, 80, 80), 0.9),
        det("disc", (90, 10, 100, 20), 0.01),
    ]})
    settings = CompleteSettings(min_score=min_score, max_detections=max_detections)
    complete(sample_index, ["sample_006.png"], "disc", settings=settings, predictor=detector)
    scores = [o.score for o in sample_index.observations(images=[7])]
    assert sorted(scores, reverse=True) == expected


def test_remove_existing_off_adds_but_does_not_stack_duplicates(sample_index):
    before = sample_index.observations(images=[3])  # a human disc at (102, 4, 122, 24)
    detector = ScriptedDetector(sample_index, {"sample_002.png": [
        det("disc", (103, 5, 122, 25), 0.9),  # the same disc: IoU ~0.86
        det("disc", (20, 60, 50, 90), 0.8),   # a new one
    ]})
    result = complete(sample_index, ["sample_002.png"], "disc",
                      settings=CompleteSettings(max_detections=5), predictor=detector)
    after = sample_index.observations(images=[3])
    assert after[0] == before[0]  # the human box is untouched
    assert [o.box for o in after[1:]] == [(20.0, 60.0, 50.0, 90.0)]
    assert (result.written, result.removed) == (1, 0)


def test_remove_existing_on_roi_clears_boxes_of_the_category_only(sample_index, db_dump):
    # sample_000: a human triangle with box and keypoints; add a box-only triangle and a disc.
    extra = sample_index.add_observation("sample_000.png", "triangle", box=(100, 100, 120, 120))
    disc = sample_index.add_observation("sample_000.png", "disc", box=(10, 100, 30, 120))
    human = sample_index.observation(1)
    before = db_dump(sample_index)
    detector = ScriptedDetector(sample_index, {"sample_000.png": [
        det("triangle", (50, 38, 81, 69), 0.7)]})
    result = complete(sample_index, ["sample_000.png"], "triangle",
                      settings=CompleteSettings(remove_existing=True), predictor=detector)
    by_id = {o.id: o for o in sample_index.observations(images=[1])}
    assert extra.id not in by_id  # box-only: deleted
    assert by_id[disc.id] == disc  # another category: untouched
    # the new box lies on the keypoints whose box was removed: it goes to their observation
    assert result.observation_ids == [1] and set(by_id) == {1, disc.id}
    assert by_id[1].box == (50.0, 38.0, 81.0, 69.0) and by_id[1].keypoints == human.keypoints
    assert (by_id[1].source, by_id[1].score) == ("model", 0.7)
    assert (result.written, result.removed) == (1, 2)
    assert sample_index.runs.undo(result.run_id) == 2  # observation 1 and the box-only one
    assert without_runs(db_dump(sample_index)) == without_runs(before)


@pytest.mark.parametrize(("box", "kept_together"), [
    ((52, 36, 84, 70), True),  # over the keypoints: the same triangle
    ((90, 90, 125, 125), False),  # elsewhere: another triangle
])
def test_remove_existing_roi_never_orphans_keypoints(sample_index, db_dump, box, kept_together):
    """One human triangle with box and keypoints, ROI Complete with remove existing: the counts
    reported and undone are exact, and a new box over the keypoints joins them."""
    human = sample_index.observation(1)
    before = db_dump(sample_index)
    detector = ScriptedDetector(sample_index, {"sample_000.png": [det("triangle", box, 0.8)]})
    result = complete(sample_index, ["sample_000.png"], "triangle",
                      settings=CompleteSettings(remove_existing=True), predictor=detector)
    after = sample_index.observations(images=[1])
    assert (result.written, result.removed) == (1, 1)
    new_box = tuple(float(v) for v in box)
    if kept_together:
        [obs] = after
        assert (obs.id, obs.box, obs.keypoints) == (1, new_box, human.keypoints)
        undone = 1
    else:  # the keypoints stay where they were, without the box that was removed
        kept, new = after
        assert (kept.id, kept.box, kept.keypoints) == (1, None, human.keypoints)
        assert kept.source == "human"
        assert (new.box, new.keypoints) == (new_box, None)
        undone = 2
    assert sample_index.runs.undo(result.run_id) == undone
    assert without_runs(db_dump(sample_index)) == without_runs(before)


def test_remove_existing_on_keypoints_clears_keypoints_never_boxes(sample_index, db_dump):
    human = sample_index.observation(1)  # triangle with box (49, 37, 81, 69) and keypoints
    loose = sample_index.add_observation("sample_000.png", "triangle", keypoints=KPS)
    boxed = sample_index.add_observation("sample_000.png", "triangle", box=(100, 100, 120, 120))
    before = db_dump(sample_index)
    detector = ScriptedDetector(sample_index, {"sample_000.png": [
        det("triangle", (45, 30, 85, 70), 0.6, KPS)]})
    result = complete(sample_index, ["sample_000.png"], "triangle", kind="keypoints",
                      settings=CompleteSettings(remove_existing=True), predictor=detector)
    after = {o.id: o for o in sample_index.observations(images=[1])}
    assert loose.id not in after  # keypoints-only: deleted with its keypoints
    assert after[boxed.id] == boxed  # a box without keypoints: untouched
    assert after[1].box == human.box  # the box is never changed...
    assert after[1].keypoints == KPS  # ...the new keypoints attach to it
    assert (after[1].source, after[1].score, after[1].run_id) == ("model", 0.6, result.run_id)
    assert (result.written, result.removed, result.observation_ids) == (1, 2, [1])
    assert sample_index.runs.undo(result.run_id) == 2  # observation 1 and the loose keypoints
    assert without_runs(db_dump(sample_index)) == without_runs(before)


def test_roi_completion_never_fills_or_changes_keypoints(sample_index):
    human = sample_index.observation(1)
    detector = ScriptedDetector(sample_index, {"sample_000.png": [
        det("triangle", (90, 90, 130, 130), 0.8, KPS)]})  # a keypoint model's detection
    result = complete(sample_index, ["sample_000.png"], "triangle", predictor=detector)
    assert sample_index.observation(1) == human
    [new] = sample_index.observations(ids=result.observation_ids)
    assert new.keypoints is None and new.box == (90.0, 90.0, 130.0, 130.0)


def test_keypoint_completion_never_changes_boxes(sample_index):
    boxed = sample_index.add_observation("sample_007.png", "triangle", box=(10, 10, 50, 50))
    detector = ScriptedDetector(sample_index, {
        "sample_007.png": [
            det("triangle", (12, 8, 52, 48), 0.9, ((30.0, 10.0, 2), (12.0, 48.0, 2),
                                                   (50.0, 48.0, 2))),
            det("triangle", (70, 70, 100, 100), 0.8, ((85.0, 70.0, 2), (70.0, 99.0, 2),
                                                      (99.0, 99.0, 2))),
        ],
        "sample_000.png": [det("triangle", (49, 37, 81, 69), 0.9, KPS)],
    })
    human = sample_index.observation(1)
    result = complete(sample_index, ["sample_007.png", "sample_000.png"], "triangle",
                      kind="keypoints", settings=CompleteSettings(max_detections=2),
                      predictor=detector)
    attached, created = sample_index.observations(images=[8])
    assert attached.id == boxed.id and attached.box == boxed.box  # box as drawn
    assert attached.keypoints == ((30.0, 10.0, 2), (12.0, 48.0, 2), (50.0, 48.0, 2))
    assert created.box is None and created.keypoints[0] == (85.0, 70.0, 2)
    assert sample_index.observation(1) == human  # had keypoints already: not overwritten
    assert result.written == 2


def test_keypoints_attach_to_the_nearest_box_when_none_overlaps(sample_index):
    boxed = sample_index.add_observation("sample_007.png", "triangle", box=(10, 10, 30, 30))
    kps = ((42.0, 20.0, 2), (32.0, 40.0, 2), (52.0, 40.0, 2))
    detector = ScriptedDetector(sample_index, {"sample_007.png": [
        det("triangle", (32, 20, 52, 40), 0.9, kps),  # no overlap; centres 24 px apart
        det("triangle", (80, 80, 100, 100), 0.8, kps),  # far away: keypoints-only
    ]})
    complete(sample_index, ["sample_007.png"], "triangle", kind="keypoints", predictor=detector,
             settings=CompleteSettings(max_detections=2))
    obs, loose = sample_index.observations(images=[8])
    assert obs.id == boxed.id and obs.keypoints == kps and obs.box == boxed.box
    assert loose.box is None and loose.score == 0.8


def test_the_category_is_captured_when_the_run_starts(sample_index):
    """Renaming the category and making a new one with its old name mid-run (from another
    thread, as the UI would) does not move where the results go."""
    names = ["sample_006.png", "sample_007.png", "sample_008.png"]
    detector = ScriptedDetector(sample_index, {n: [det("disc", (5, 5, 25, 25), 0.9)]
                                               for n in names})
    disc_id = sample_index.category("disc").id

    def rename_elsewhere() -> None:
        with sqlite3.connect(sample_index.path / DB_NAME) as conn:
            conn.execute("UPDATE categories SET name = 'old disc' WHERE name = 'disc'")
        Index(sample_index.path).add_category("disc")

    def on_batch(ids: list[int]) -> None:
        if len(sample_index.categories()) == 3:
            thread = threading.Thread(target=rename_elsewhere)
            thread.start()
            thread.join()

    result = complete(sample_index, names, "disc", predictor=detector, on_batch=on_batch,
                      settings=CompleteSettings(batch_size=1))
    written = sample_index.observations(ids=result.observation_ids)
    assert len(written) == 3
    assert {o.category_id for o in written} == {disc_id}
    assert sample_index.observations(category="disc") == []  # the new category got nothing


def test_video_in_the_selection_is_refused_before_anything_changes(
        sample_index, db_dump, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    sample_index.add_video(clip, width=64, height=64)
    detector = ScriptedDetector(sample_index, {"sample_006.png": [det("disc", (1, 1, 9, 9), 1)]})
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match=r"video item\(s\): clip\.mp4"):
        complete(sample_index, ["sample_006.png", "clip.mp4"], "disc", predictor=detector)
    assert db_dump(sample_index) == before
    assert detector.calls == 0


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    ([], {}, RefusedError, "none were selected"),
    (["sample_006.png"], {"kind": "keypoints"}, RefusedError,
     "keypoints are not enabled for category 'disc'"),
    (["sample_006.png"], {"kind": "boxes"}, BadInputError, "kind must be"),
    (["sample_006.png"], {"settings": {"max_detections": 0}}, BadInputError,
     "max_detections: must be greater than or equal to 1, not 0"),
    (["sample_006.png"], {"settings": {"min_score": 2}}, BadInputError,
     "min_score: must be less than or equal to 1, not 2"),
    (["nope.png"], {}, BadInputError, "no image 'nope.png'"),
])
def test_bad_requests_are_refused_and_change_nothing(
        sample_index, db_dump, args, kwargs, error, message):
    detector = ScriptedDetector(sample_index, {}, kinds=("roi",))
    before = db_dump(sample_index)
    with pytest.raises(error, match=message):
        if "settings" in kwargs:  # the dialog's values, refused when the settings are made
            kwargs = {"settings": CompleteSettings(**kwargs["settings"])}
        complete(sample_index, args, "disc", predictor=detector, **kwargs)
    assert db_dump(sample_index) == before


def test_a_model_without_the_kind_or_no_model_is_refused(sample_index, db_dump):
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match="does not predict keypoints"):
        complete(sample_index, ["sample_000.png"], "triangle", kind="keypoints",
                 predictor=ScriptedDetector(sample_index, {}, kinds=("roi",)))
    with pytest.raises(RefusedError, match="no model yet"):
        complete(sample_index, ["sample_000.png"], "triangle")
    assert db_dump(sample_index) == before


def _two_per_image(index: Index, names: list[str]) -> ScriptedDetector:
    return ScriptedDetector(index, {n: [det("square", (2, 2, 20, 20), 0.9),
                                        det("square", (40, 40, 60, 60), 0.8)] for n in names})


def test_cancel_keeps_committed_batches_and_no_half_image(sample_index):
    names = [f"sample_{i:03d}.png" for i in range(6, 12)]
    detector = _two_per_image(sample_index, names)
    batches: list[list[int]] = []
    with pytest.raises(Cancelled, match="after 4 of 6 images") as caught:
        complete(sample_index, names, "square", predictor=detector, on_batch=batches.append,
                 settings=CompleteSettings(max_detections=2, batch_size=2),
                 cancel=lambda: len(batches) == 2)
    run_id = int(str(caught.value).split("(run ")[1].split(":")[0])
    assert run_row(sample_index, run_id)["status"] == "cancelled"
    per_image = [len(sample_index.observations(images=[sample_index.image(n).id],
                                               category="square")) for n in names]
    assert per_image == [2, 2, 2, 2, 0, 0]
    assert [len(b) for b in batches] == [4, 4]


def test_a_failure_mid_batch_rolls_back_that_batch_only(sample_index):
    names = [f"sample_{i:03d}.png" for i in range(6, 10)]
    scripted = {n: [det("square", (2, 2, 20, 20), 0.9)] for n in names}
    scripted["sample_009.png"] = [det("square", (2, 2, 900, 20), 0.9)]  # outside the image
    detector = ScriptedDetector(sample_index, scripted)
    with pytest.raises(StoppedPartWay, match=r"sample_009.png: box .* lies outside the image .*; "
                       r"Complete stopped part-way, after 2 of 4 images: the 2 result\(s\) saved"
                       ) as caught:
        complete(sample_index, names, "square", predictor=detector,
                 settings=CompleteSettings(batch_size=2))
    assert isinstance(caught.value.__cause__, BadInputError)
    written = [len(sample_index.observations(images=[sample_index.image(n).id]))
               for n in names]
    assert written == [1, 1, 0, 0]  # sample_008 shared the failing batch: not written either
    [run] = sample_index.query("SELECT status FROM runs")
    assert run["status"] == "failed"


def test_a_failure_before_any_change_is_raised_as_it_is(sample_index, db_dump):
    """Part-way means the index changed: a corrupt first image stops Complete before that."""
    names = [f"sample_{i:03d}.png" for i in range(6, 10)]
    detector = _two_per_image(sample_index, names)
    (sample_index.path / sample_index.image(names[0]).path).write_bytes(b"not a png")
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match=r"sample_006\.png"):
        complete(sample_index, names, "square", predictor=detector,
                 settings=CompleteSettings(batch_size=2))
    assert without_runs(db_dump(sample_index)) == without_runs(before)


def test_progress_and_on_batch_report_every_batch(sample_index):
    names = [f"sample_{i:03d}.png" for i in range(6, 11)]
    events, batches = [], []
    result = complete(sample_index, names, "square", predictor=_two_per_image(sample_index, names),
                      settings=CompleteSettings(batch_size=2), progress=events.append,
                      on_batch=batches.append)
    assert [(e.stage, e.done, e.total) for e in events] == [("complete", i, 3) for i in (1, 2, 3)]
    assert [i for b in batches for i in b] == result.observation_ids
    assert result.images == 5


def test_undo_restores_the_exact_previous_state(sample_index, db_dump):
    sample_index.update_observation(1, attributes={"checked": "yes"})
    sample_index.add_observation("sample_000.png", "triangle", box=(100, 100, 120, 120),
                                 attributes={"note": "mine"})
    before = db_dump(sample_index)
    detector = ScriptedDetector(sample_index, {
        "sample_000.png": [det("triangle", (48, 36, 80, 70), 0.9, KPS)],
        "sample_006.png": [det("triangle", (5, 5, 40, 40), 0.9, KPS)],
    })
    for kind in ("roi", "keypoints"):
        result = complete(sample_index, ["sample_000.png", "sample_006.png"], "triangle",
                          kind=kind, settings=CompleteSettings(remove_existing=True),
                          predictor=detector)
        assert db_dump(sample_index) != before
        changed = []
        sample_index.subscribe(changed.append)
        assert sample_index.runs.undo(result.run_id) > 0
        assert without_runs(db_dump(sample_index)) == without_runs(before)
        assert {c.table for c in changed} == {"observations", "runs"}  # runs: "undone"
        assert run_row(sample_index, result.run_id)["status"] == "undone"
        with pytest.raises(RefusedError, match="is undone"):
            sample_index.runs.undo(result.run_id)


def test_undo_restores_an_observation_whose_id_a_later_image_reused(sample_index, db_dump):
    # Removing the newest observation frees its id; the next image's new box takes it. The run's
    # journal then holds that id twice, and undo must put both back in order.
    newest = sample_index.add_observation("sample_007.png", "disc", box=(3, 3, 30, 30),
                                          attributes={"note": "mine"})
    before = db_dump(sample_index)
    detector = ScriptedDetector(sample_index, {"sample_008.png": [det("disc", (5, 5, 40, 40), 1)]})
    result = complete(sample_index, ["sample_007.png", "sample_008.png"], "disc",
                      settings=CompleteSettings(remove_existing=True), predictor=detector)
    assert result.observation_ids == [newest.id]  # the freed id, on the other image
    assert sample_index.observation(newest.id).image_id == sample_index.image("sample_008.png").id
    sample_index.runs.undo(result.run_id)
    assert without_runs(db_dump(sample_index)) == without_runs(before)


def test_undo_is_refused_after_a_later_edit(sample_index, db_dump):
    detector = ScriptedDetector(sample_index, {"sample_006.png": [det("disc", (5, 5, 40, 40), 1)]})
    result = complete(sample_index, ["sample_006.png"], "disc", predictor=detector)
    sample_index.update_observation(result.observation_ids[0], box=(6, 6, 40, 40))
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match=f"observation {result.observation_ids[0]} was changed"):
        sample_index.runs.undo(result.run_id)
    with pytest.raises(BadInputError, match="no run 99"):
        sample_index.runs.undo(99)
    assert db_dump(sample_index) == before


# ---------------------------------------------------------------- with a real model
# An untrained model that keeps every detection (tests/untrained.py): Complete writes exactly its
# maximum per image, and what it writes must be the model's own best detections of the category.
def best_detections(predictor, index: Index, names: list[str], category: str, count: int,
                    kind: str = "roi") -> dict[str, list[Detection]]:
    """The model's ``count`` best ``category`` detections per image (keypoint work: those with
    keypoints), predicted in one batch as Complete batches them."""
    found = predictor.predict([index.read_image(name) for name in names])
    return {
        name: sorted((d for d in dets if d.category == category
                      and (kind == "roi" or d.keypoints is not None)),
                     key=lambda d: -d.score)[:count]
        for name, dets in zip(names, found, strict=True)
    }


def assert_written(index: Index, result, expected: dict[str, list[Detection]], category: str,
                   kind: str = "roi") -> None:
    """Complete wrote exactly ``expected`` (boxes or keypoints, scores) on each image, into
    ``category``, from the model, recorded under its run."""
    written = index.observations(ids=result.observation_ids)
    assert len(written) == result.written == sum(map(len, expected.values()))
    for name, detections in expected.items():
        on_image = sorted((o for o in written if o.image_id == index.image(name).id),
                          key=lambda o: -o.score)
        assert [o.score for o in on_image] == pytest.approx([d.score for d in detections])
        for obs, detection in zip(on_image, detections, strict=True):
            if kind == "roi":
                assert obs.box == pytest.approx(detection.box) and obs.keypoints is None
            else:
                assert obs.box is None
                assert [p for kp in obs.keypoints for p in kp] == pytest.approx(
                    [p for kp in detection.keypoints for p in kp])
    for obs in written:
        assert index.category(obs.category_id).name == category
        assert (obs.source, obs.model_version, obs.run_id) == ("model", "default:v1",
                                                               result.run_id)


def test_end_to_end_writes_the_models_best_boxes(sample_index):
    handle = untrained_model(sample_index, min_size=64)
    predictor = Predictor.from_index(sample_index)
    names = ["sample_006.png", "sample_007.png"]
    expected = best_detections(predictor, sample_index, names, "square", 2)
    result = complete(sample_index, names, "square", settings=CompleteSettings(max_detections=2),
                      predictor=predictor)
    assert (result.images, result.written, result.removed) == (2, 4, 0)
    assert_written(sample_index, result, expected, "square")
    run = run_row(sample_index, result.run_id)
    assert (run["model_id"], run["operation"], run["status"]) == (handle.id, "complete", "done")


def test_end_to_end_keypoints_in_category_order(sample_index):
    untrained_model(sample_index, keypoints=True, min_size=64, max_detections=4)  # a quick head
    predictor = Predictor.from_index(sample_index)
    heads = predictor.model.roi_heads
    with torch.no_grad():  # untrained, every class scores alike: make it see triangles
        heads.box_predictor.cls_score.bias[predictor.config.categories.index("triangle") + 1] += 5
    expected = best_detections(predictor, sample_index, ["sample_007.png"], "triangle", 1,
                               kind="keypoints")
    assert len(expected["sample_007.png"][0].keypoints) == 3  # apex, left, right
    result = complete(sample_index, ["sample_007.png"], "triangle", kind="keypoints",
                      predictor=predictor)
    assert (result.images, result.written) == (1, 1)  # no triangle there: keypoints only
    assert_written(sample_index, result, expected, "triangle", kind="keypoints")


def test_predictor_is_loaded_from_the_index_when_not_given(sample_index):
    handle = untrained_model(sample_index, min_size=64)
    expected = best_detections(Predictor.from_index(sample_index, "cpu"), sample_index,
                               ["sample_006.png"], "square", 1)
    result = complete(sample_index, ["sample_006.png"], "square", device="cpu")
    assert (result.images, result.written, result.removed) == (1, 1, 0)
    assert_written(sample_index, result, expected, "square")  # the active model's best box
    assert run_row(sample_index, result.run_id)["model_id"] == handle.id
