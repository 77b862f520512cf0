"""The Qt-free controller (session.py): the specification's rules through one object, tasks
that capture their target when created, changes announced on the captured index, and Undo of the
last Complete or accept, a cancelled or failed one included. Runners are injected."""

from __future__ import annotations

from typing import Any

import pytest

from doubles import ScriptedDetector
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.jobs import InProcessRunner, Job
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.engine.ray_runner import RayEngine
from napari_learn_complete.engine.results import Proposal
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.errors import Cancelled, EngineError, RefusedError
from napari_learn_complete.index import Change, Index
from napari_learn_complete.model.registry import create_model
from napari_learn_complete.session import Session

FOUND = {f"sample_{n:03d}.png": [Detection("square", (10.0, 10.0, 30.0, 30.0), 0.8)]
         for n in range(6, 12)}


@pytest.fixture
def scripted(sample_index: Index, monkeypatch) -> Index:
    """The sample index with a model whose detections are ``FOUND`` (a square per image)."""
    create_model(sample_index, weights="none", min_size=128)
    detector = ScriptedDetector(sample_index, FOUND)
    monkeypatch.setattr(Predictor, "from_index", classmethod(lambda cls, *a, **k: detector))
    return sample_index


def test_rules_come_from_the_specification(scripted: Index) -> None:
    session = Session(InProcessRunner())
    assert not session.image_availability(None, [1], "roi", "disc", action="learn")
    assert session.image_availability(scripted, [], "roi", "disc", action="learn").reason == \
        "Select at least one image"
    assert session.image_availability(scripted, [1], "roi", "disc", action="complete")
    assert session.image_availability(scripted, [1], "keypoints", "disc",
                                      action="learn").reason == \
        "The active model does not support keypoints"
    assert session.category_availability(scripted, "disc", "roi", action="complete")
    assert session.category_availability(scripted, "triangle", "keypoints",
                                         action="learn").reason == \
        "The active model does not support keypoints"
    assert session.category_availability(scripted, "disc", "keypoints",
                                         action="learn").reason == \
        "Keypoints are not enabled for category 'disc'"


def test_without_a_model_learn_is_offered_and_complete_says_where_to_start(
        sample_index: Index) -> None:
    session = Session(InProcessRunner())
    assert not session.category_availability(None, "disc", "roi", action="learn")
    assert session.image_availability(sample_index, [1], "roi", "disc", action="learn")
    assert session.category_availability(sample_index, "disc", "roi", action="learn")
    for found in (session.image_availability(sample_index, [1], "roi", "disc", action="complete"),
                  session.category_availability(sample_index, "disc", "roi", action="complete")):
        assert found.reason.startswith("No model yet: run Learn (it offers to create one)")


def test_a_task_captures_its_target_and_announces_its_changes(scripted: Index) -> None:
    session = Session(InProcessRunner())
    task = session.complete_images(scripted, [7, 8], "square", "roi", CompleteSettings())
    assert task.job == Job(str(scripted.path), "complete", {
        "images": [7, 8], "category": "square", "kind": "roi", "settings": CompleteSettings()})
    assert (task.index, task.category, task.kind) == (scripted, "square", "roi")
    heard: list[Change] = []
    scripted.subscribe(heard.append)
    result = session.run(task)
    assert result.written == 2
    assert {o.category_id for o in scripted.observations(ids=result.observation_ids)} == \
        {scripted.category("square").id}
    added = [i for c in heard if (c.table, c.action) == ("observations", "added") for i in c.ids]
    assert sorted(added) == sorted(result.observation_ids)  # the layers hear each commit
    assert task.runs == [result.run_id] and session.last_run == (scripted, result.run_id)
    with pytest.raises(RefusedError, match="Choose an active category first"):
        session.complete_images(scripted, [7], None, "roi")
    # the model on Ray workers: the same job with the engine (torch and Ray load where it runs)
    ray = RayEngine(address="ray://head:10001", workers=3)
    for task in (session.complete_images(scripted, [7], "square", "roi", engine=ray),
                 session.complete_category(scripted, "square", "roi", engine=ray)):
        assert task.job.args["engine"] == ray and task.title.endswith(" on Ray (3 worker(s))")
    assert "engine" not in session.complete_category(scripted, "square", "roi").job.args


def test_learn_tasks_carry_the_dialog_settings(scripted: Index) -> None:
    session = Session(InProcessRunner())
    settings = LearnSettings(epochs=3, mode="full")
    assert session.learn_images(scripted, [1, 2], "roi", settings).job.args == {
        "images": [1, 2], "kind": "roi", "settings": settings}
    task = session.learn_category(scripted, "triangle", "keypoints")
    assert task.job.args == {"category": "triangle", "kind": "keypoints",
                             "settings": LearnSettings()}
    assert (task.category, task.kind) == ("triangle", "keypoints")
    assert session.last_run is None  # Learn is not undone by Undo


def test_a_cancelled_complete_can_be_undone(scripted: Index, db_dump) -> None:
    before = db_dump(scripted)
    session = Session(InProcessRunner())
    batches: list[int] = []
    with pytest.raises(Cancelled):
        session.run(session.complete_images(scripted, [7, 8, 9, 10], "square", "roi",
                                            CompleteSettings(batch_size=1)),
                    progress=lambda e: batches.append(e.done), cancel=lambda: len(batches) >= 2)
    assert len(scripted.observations(source="model")) == 2  # two batches were committed
    assert session.can_undo
    assert session.undo_last() == 2
    assert not scripted.observations(source="model") and not session.can_undo
    history = ("runs", "run_changes")  # the run and what it did stay on record
    after = db_dump(scripted)
    assert {k: v for k, v in after.items() if k not in history} == \
        {k: v for k, v in before.items() if k not in history}
    with pytest.raises(RefusedError, match="nothing to undo"):
        session.undo_last()


def test_an_accepted_review_can_be_undone(scripted: Index) -> None:
    session = Session(InProcessRunner())
    image = scripted.image(8)
    proposal = Proposal(id=1, image_id=8, image_name=image.name, category="square",
                        box=(5.0, 5.0, 25.0, 25.0), keypoints=None, score=0.9)
    result = session.accept(scripted, [proposal])
    assert result.written == 1 and session.last_run == (scripted, result.run_id)
    assert session.undo_last() == 1 and not scripted.observations(source="model")


class _DyingEngine:
    """A runner whose engine commits one batch, then dies before reporting it."""

    def run(self, job: Job, *, progress: Any = None, cancel: Any = None,
            changed: Any = None) -> Any:
        index = Index(job.index)
        seen: list[Change] = []
        unsubscribe = index.subscribe(seen.append)
        detector = ScriptedDetector(index, FOUND)
        from napari_learn_complete.engine.complete import complete

        with pytest.raises(Cancelled):
            complete(index, job.args["images"], job.args["category"], predictor=detector,
                     settings=CompleteSettings(batch_size=1), cancel=lambda: bool(
                         [c for c in seen if c.table == "observations"]))
        unsubscribe()
        changed(next(c for c in seen if c.table == "runs"))  # only the run's start arrived
        raise EngineError("the engine process died during complete (killed by SIGKILL)")

    def close(self) -> None:
        """Nothing to stop."""


def test_after_an_engine_death_committed_work_is_announced(scripted: Index) -> None:
    session = Session(_DyingEngine())
    heard: list[Change] = []
    scripted.subscribe(heard.append)
    with pytest.raises(EngineError, match="killed by SIGKILL"):
        session.run(session.complete_images(scripted, [7, 8, 9], "square", "roi"))
    written = [o.id for o in scripted.observations(source="model")]
    assert len(written) == 1
    assert Change("observations", "updated", tuple(written)) in heard  # read back, shown
    assert session.can_undo
