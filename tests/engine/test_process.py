"""The engine process (engine/process.py) as napari's side uses it: jobs in a spawned, warm
process; progress and committed changes streamed back; refusals as our own errors; cancel that
stops a stuck engine; a dead engine reported, its run closed and the index intact; idle and
orphaned engines exiting. Qt-free: the GUI flows are tests/gui/test_user_flow.py."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from napari_learn_complete.engine.jobs import InProcessRunner, Job
from napari_learn_complete.engine.process import EngineProcess
from napari_learn_complete.engine.progress import Progress
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.errors import Cancelled, EngineError, RefusedError
from napari_learn_complete.index import Change, Index
from napari_learn_complete.model.registry import CONFIG_FILE, active_model
from napari_learn_complete.sample import make_sample_index


@pytest.fixture
def engine():
    engine = EngineProcess(grace_s=2.0)
    yield engine
    engine.close()


@pytest.fixture
def modelled(tmp_path: Path) -> Index:
    """24 sample images and a tiny model that keeps its detections (a box on every image)."""
    index = make_sample_index(tmp_path / "index", n_images=24, labelled=6, seed=0)
    InProcessRunner().run(Job(str(index.path), "create_model",
                              {"weights": "none", "min_size": 128}))
    handle = active_model(index)
    handle.config.inference.score_threshold = 0.0
    handle.config.inference.max_detections = 1000
    handle.config.save(handle.folder / CONFIG_FILE)
    yield index
    index.close()


def _statuses(index: Index) -> list[tuple[str, str]]:
    return [(r["operation"], r["status"]) for r in index.query(
        "SELECT operation, status FROM runs ORDER BY id")]


def _integrity(index: Index) -> str:
    conn = sqlite3.connect(index.path / "index.sqlite")
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_jobs_stream_progress_and_changes_and_the_engine_stays_warm(engine, modelled) -> None:
    path = str(modelled.path)
    events: list[Progress] = []
    changes: list[Change] = []
    result = engine.run(Job(path, "learn", {"images": [1, 2], "settings": LearnSettings(epochs=2)}),
                        progress=events.append, changed=changes.append)
    assert result.version == 2 and len(result.losses) == 2
    assert [e.epoch for e in events if e.stage == "learn"] == [1, 2]  # one step per epoch
    assert all(isinstance(e.loss, float) and e.eta_s is not None for e in events
               if e.stage == "learn")
    assert Change("runs", "added", (result.run_id,)) in changes
    assert Change("models", "updated", (active_model(modelled).id,)) in changes
    pid = engine.pid
    changes.clear()
    done = engine.run(Job(path, "complete", {"images": [7, 8, 9], "category": "disc",
                                             "settings": CompleteSettings(batch_size=2)}),
                      changed=changes.append)
    assert done.written == 3 and engine.pid == pid  # the same warm process
    written = [i for c in changes if c.table == "observations" for i in c.ids]
    assert sorted(written) == sorted(done.observation_ids)  # every commit was announced
    assert {o.id for o in modelled.observations(source="model")} == set(written)


def test_refusals_arrive_as_our_errors_and_change_nothing(engine, modelled, db_dump) -> None:
    path = str(modelled.path)
    before = db_dump(modelled)
    with pytest.raises(RefusedError, match="keypoints are not enabled for category 'disc'"):
        engine.run(Job(path, "complete", {"images": [7], "category": "disc",
                                          "kind": "keypoints"}))
    pid = engine.pid
    with pytest.raises(EngineError, match=r"^TypeError: .*unexpected keyword argument 'bogus'"):
        engine.run(Job(path, "learn", {"bogus": 1}))  # not ours: named with its type
    assert db_dump(modelled) == before
    assert engine.pid == pid  # an error in a job does not end the engine


def test_cancel_is_cooperative_and_keeps_committed_batches(engine, modelled) -> None:
    path = str(modelled.path)
    stop = threading.Event()

    def progress(event: Progress) -> None:
        if event.stage == "complete":  # not "starting": once the first batch is committed
            stop.set()

    with pytest.raises(Cancelled, match=r"the (\d+) result\(s\) saved so far are kept") as caught:
        engine.run(Job(path, "complete", {"images": list(range(7, 25)), "category": "square",
                                          "settings": CompleteSettings(batch_size=1)}),
                   progress=progress, cancel=stop.is_set)
    kept = int(re.search(r"the (\d+) result", str(caught.value)).group(1))
    assert 1 <= kept < 18 and len(modelled.observations(source="model")) == kept
    assert _statuses(modelled) == [("complete", "cancelled")]
    assert engine.alive  # it stopped by itself: no need to kill it


def test_a_stuck_engine_is_stopped_after_the_grace_period(engine, modelled) -> None:
    path = str(modelled.path)
    asked: list[float] = []

    def progress(event: Progress) -> None:
        if event.stage == "complete" and not asked:
            os.kill(engine.pid, signal.SIGSTOP)  # the engine hangs mid-run
            asked.append(time.monotonic())

    with pytest.raises(Cancelled, match="did not stop within 2 s and was stopped"):
        engine.run(Job(path, "complete", {"images": list(range(7, 25)), "category": "square",
                                          "settings": CompleteSettings(batch_size=1)}),
                   progress=progress, cancel=lambda: bool(asked))
    assert time.monotonic() - asked[0] < 5
    assert not engine.alive
    assert _statuses(modelled) == [("complete", "cancelled")]  # closed for it, so undoable
    assert _integrity(modelled) == "ok"
    result = engine.run(Job(path, "complete", {"images": [7], "category": "square"}))
    assert result.images == 1  # the next job starts a fresh engine


def test_a_killed_engine_is_an_error_and_the_index_keeps_its_batches(engine, modelled) -> None:
    path = str(modelled.path)
    killed: list[int] = []

    def progress(event: Progress) -> None:
        if event.stage == "complete" and not killed:
            killed.append(engine.pid)
            os.kill(engine.pid, signal.SIGKILL)

    with pytest.raises(EngineError, match=r"died during complete \(killed by SIGKILL\); the "
                                          "work saved before is kept and the index is intact"):
        engine.run(Job(path, "complete", {"images": list(range(7, 25)), "category": "disc",
                                          "settings": CompleteSettings(batch_size=2)}),
                   progress=progress)
    assert _statuses(modelled) == [("complete", "failed")]
    assert 2 <= len(modelled.observations(source="model")) < 18  # committed batches stay
    assert _integrity(modelled) == "ok"

    run_id = modelled.query("SELECT id FROM runs")[0]["id"]
    assert modelled.runs.undo(run_id) >= 2 and not modelled.observations(source="model")
    assert engine.run(Job(path, "complete", {"images": [7], "category": "disc"})).written == 1
    assert engine.pid != killed[0]


def test_an_idle_engine_exits_and_the_next_job_starts_another(modelled) -> None:
    engine = EngineProcess(idle_s=1.0)
    try:
        engine.run(Job(str(modelled.path), "complete", {"images": [7], "category": "disc"}))
        first = engine._proc
        first.wait(timeout=30)  # exits by itself once idle
        assert first.returncode == 0
        engine.run(Job(str(modelled.path), "complete", {"images": [8], "category": "disc"}))
        assert engine._proc is not first and engine.alive
    finally:
        engine.close()


_ORPHAN = """
import os, sys
from napari_learn_complete.engine.jobs import Job
from napari_learn_complete.engine.process import EngineProcess
engine = EngineProcess()
engine.run(Job(sys.argv[1], "complete", {"images": [7], "category": "disc"}))
print(engine.pid, flush=True)
os._exit(0)  # the parent vanishes without closing anything (as a crash or kill -9 would)
"""


def test_an_engine_whose_parent_is_gone_exits(modelled, process_gone) -> None:
    out = subprocess.run([sys.executable, "-c", _ORPHAN, str(modelled.path)],
                         capture_output=True, text=True, timeout=300, check=True)
    pid = int(out.stdout.split()[-1])
    if not process_gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the engine outlived its parent")
