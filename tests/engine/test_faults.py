"""Faults in the middle of long work: a full disk, the write lock taken by another process, a
diverging loss, a dead engine. Committed batches stay whole and undoable and the error says so;
a Learn that cannot save leaves the active version as it was and no file behind."""

from __future__ import annotations

import errno
import sqlite3
import time

import pytest
import torch

from doubles import ScriptedDetector
from napari_learn_complete.engine import complete as complete_module
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.jobs import InProcessRunner, Job
from napari_learn_complete.engine.process import EngineProcess
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.engine.train import learn
from napari_learn_complete.engine.write_rules import ObservationWriter
from napari_learn_complete.errors import BadInputError, StoppedPartWay
from napari_learn_complete.index import Index
from napari_learn_complete.index.runs import Runs
from napari_learn_complete.model import active_model, create_model

NAMES = [f"sample_{i:03d}.png" for i in range(6, 12)]
ONE_EPOCH = LearnSettings(epochs=1, test_percent=0)


def _detector(index: Index) -> ScriptedDetector:
    return ScriptedDetector(index, {n: [Detection("square", (2.0, 2.0, 20.0, 20.0), 0.9)]
                                    for n in NAMES})


def _per_image(index: Index) -> list[int]:
    return [len(index.observations(images=[index.image(n).id], category="square"))
            for n in NAMES]


def _small_model(index: Index) -> None:
    handle = create_model(index, weights="none", min_size=64)
    config = handle.config.replace(training=handle.config.training.replace(batch_size=2))
    config.save(handle.folder / "config.json")


def _status(index: Index) -> tuple:
    [run] = index.query("SELECT operation, status, version FROM runs")
    return tuple(run)


def test_a_full_index_database_mid_complete_keeps_committed_batches(sample_index, monkeypatch):
    write = complete_module.ObservationWriter.write
    writes: list[str] = []

    def fills_up(self, image, detections):
        writes.append(image.name)
        if len(writes) == 4:  # the second image of the second batch
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise error
        return write(self, image, detections)

    monkeypatch.setattr(complete_module.ObservationWriter, "write", fills_up)
    with pytest.raises(StoppedPartWay) as caught:
        complete(sample_index, NAMES, "square", predictor=_detector(sample_index),
                 settings=CompleteSettings(batch_size=2))
    run_id = caught.value.run_id
    assert str(caught.value) == (
        "no space left on device while writing the index database; Complete stopped part-way, "
        "after 2 of 6 images: the 2 result(s) saved so far are kept "
        f"(run {run_id}: undo it to take them back)")
    assert _per_image(sample_index) == [1, 1, 0, 0, 0, 0]  # the failing batch wrote nothing
    assert _status(sample_index) == ("complete", "failed", None)
    assert sample_index.runs.undo(run_id) == 2


def test_the_write_lock_taken_mid_complete_keeps_committed_batches(sample_index, write_locked):
    """The lock outlasts the run: its end is recorded once the lock is free, in this still
    living process (the engine's case), so the run becomes undoable without waiting for it."""
    index = Index(sample_index.path, lock_timeout=0.3)
    detector = _detector(index)
    predict, lock = detector.predict, write_locked(index)

    def locked_at_third_batch(arrays):
        if detector.calls == 2:
            lock.__enter__()
        return predict(arrays)

    detector.predict = locked_at_third_batch
    try:
        with pytest.raises(StoppedPartWay, match=r"^the index is locked for writing by another "
                           r"process .*; Complete stopped part-way, after 4 of 6 images: the 4 "
                           r"result\(s\) saved so far are kept \(run \d+: undo it"):
            complete(index, NAMES, "square", predictor=detector,
                     settings=CompleteSettings(batch_size=2))
        assert _status(sample_index) == ("complete", "running", None)  # the lock holds
    finally:
        lock.__exit__(None, None, None)
        index.close()
    deadline = time.monotonic() + 20
    while _status(sample_index)[1] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status(sample_index) == ("complete", "failed", None)
    assert _per_image(sample_index) == [1, 1, 1, 1, 0, 0]
    [run_id] = [r[0] for r in sample_index.query("SELECT id FROM runs")]
    assert sample_index.runs.undo(run_id) == 4


def test_a_full_disk_at_the_weight_save_keeps_the_active_version(
        sample_index, db_dump, monkeypatch):
    _small_model(sample_index)
    before = db_dump(sample_index)

    def fills_up(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fills_up)
    job = Job(str(sample_index.path), "learn", {"images": ["sample_000.png"],
                                                 "settings": ONE_EPOCH})
    with pytest.raises(BadInputError, match=r"^no space left on device while writing in "):
        InProcessRunner().run(job)  # as the engine reports it to the panel
    assert active_model(sample_index).active_version == 1
    assert _status(sample_index) == ("learn", "failed", None)
    after = db_dump(sample_index)
    assert after["_files"] == before["_files"]  # no temporary weight file left
    assert after["model_versions"] == before["model_versions"]


def test_a_run_record_that_cannot_be_closed_does_not_hide_the_full_disk(
        sample_index, monkeypatch):
    _small_model(sample_index)
    finish = Runs.finish

    def full(self, run_id, status, **kwargs):
        if status == "failed":
            raise sqlite3.OperationalError("database or disk is full")
        return finish(self, run_id, status, **kwargs)

    def fills_up(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Runs, "finish", full)
    monkeypatch.setattr(torch, "save", fills_up)
    with pytest.raises(OSError) as caught:
        learn(sample_index, images=["sample_000.png"], settings=ONE_EPOCH)
    assert caught.value.errno == errno.ENOSPC
    assert active_model(sample_index).active_version == 1


def test_a_non_finite_loss_saves_no_version(sample_index, db_dump, monkeypatch):
    _small_model(sample_index)
    load = type(active_model(sample_index)).load

    def diverging(self, device="cpu"):
        model, config = load(self, device)
        model.register_forward_hook(lambda module, args, out: (
            {k: v * float("inf") for k, v in out.items()} if module.training else out))
        return model, config

    monkeypatch.setattr(type(active_model(sample_index)), "load", diverging)
    before = db_dump(sample_index)
    with pytest.raises(FloatingPointError, match=r"^training diverged: the loss became (nan|inf) "
                       r"at epoch 1, so no version was saved; lower the learning rate"):
        learn(sample_index, images=["sample_000.png"], settings=ONE_EPOCH)
    assert active_model(sample_index).active_version == 1
    assert _status(sample_index) == ("learn", "failed", None)
    assert db_dump(sample_index)["_files"] == before["_files"]


def test_a_dead_engine_names_the_run_that_undoes_what_it_saved(sample_index):
    """What the engine's supervisor does when the engine died during a job: the job's runs
    become failed and the message names the one with saved results."""
    index = sample_index
    square = index.category("square")
    empty, saving = (index.runs.start("complete", model_id=None, kind="roi", scope={},
                                      settings={}) for _ in range(2))
    writer = ObservationWriter(index, saving, square, "roi", "scripted:v1", False)
    with index.transaction():  # a batch the engine committed before it died
        for name in NAMES[:3]:
            writer.write(index.image(name), [Detection("square", (2.0, 2.0, 20.0, 20.0), 0.9)])
    kept = EngineProcess._end_runs(Job(str(index.path), "complete"), [empty, saving], "failed")
    assert kept == f": 3 result(s) of run {saving} were saved (undo it to take them back)"
    assert [index.runs.get(r).status for r in (empty, saving)] == ["failed", "failed"]
    assert index.runs.undo(saving) == 3
