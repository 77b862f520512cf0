"""Model versions and model creation under concurrency: two threads, each with its own
:class:`Index` on one folder (its own SQLite connection, as two processes have), one paused at
a chosen moment while the other runs to the end; two processes Learning at once; two processes
Completing, then Learning, at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model import active_model, build, create_model
from untrained import untrained_model

WAIT_S = 60


def _paused_in(monkeypatch: pytest.MonkeyPatch, name: str, thread: str) -> tuple[
        threading.Event, threading.Event]:
    """Make ``build.<name>`` stop in the thread called ``thread`` until released: returns the
    events (paused, release)."""
    paused, release = threading.Event(), threading.Event()
    real: Callable = getattr(build, name)

    def pausing(*args, **kwargs):
        if threading.current_thread().name == thread:
            paused.set()
            assert release.wait(WAIT_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(build, name, pausing)
    return paused, release


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="paused")
    thread.start()
    return thread, outcome


def _check_versions(index: Index) -> list[int]:
    """The database is sound and every version row's weight file exists; returns the numbers."""
    assert [tuple(r) for r in index.query("PRAGMA integrity_check")] == [("ok",)]
    rows = index.query("SELECT number, file FROM model_versions ORDER BY number")
    assert all((index.path / r["file"]).is_file() for r in rows), "a version lost its file"
    numbers = [r["number"] for r in rows]
    assert len(numbers) == len(set(numbers))
    return numbers


def test_concurrent_commits_get_distinct_numbers_and_keep_their_files(sample_index,
                                                                       monkeypatch):
    torch.manual_seed(0)
    handle = create_model(sample_index, weights="none", min_size=96)
    model, config = handle.load()
    paused, release = _paused_in(monkeypatch, "save_weights", "paused")
    other = Index(sample_index.path)  # its own connection: another Learn on the same folder
    try:
        thread, outcome = _in_thread(lambda: active_model(other).commit_version(
            model, config, note="first"))
        assert paused.wait(WAIT_S)  # the first commit has its weights, not yet its number
        second = handle.commit_version(model, config, note="second")
        release.set()
        thread.join(WAIT_S)
    finally:
        release.set()
        other.close()
    assert "error" not in outcome, outcome.get("error")
    assert sorted([second, outcome["value"]]) == [2, 3]
    assert _check_versions(sample_index) == [1, 2, 3]
    versions = handle.folder / "versions"
    assert sorted(p.name for p in versions.iterdir()) == [
        f"000{n}{suffix}" for n in (1, 2, 3) for suffix in (".json", ".pt")]  # nothing staged
    assert active_model(sample_index).active_version == 3
    assert {v.note for v in handle.versions()} >= {"first", "second"}


def test_failed_commit_removes_only_its_own_files(sample_index, monkeypatch, db_dump):
    """A commit whose transaction fails after it moved its files into place removes them, and
    never a file of a version another run has registered."""
    handle = create_model(sample_index, weights="none", min_size=96)
    model, config = handle.load()
    handle.commit_version(model, config, note="kept")
    before = db_dump(sample_index)
    models = type(sample_index.models)
    real_set = models._set_version

    def fail(self, *args):
        raise OSError("disk full")

    monkeypatch.setattr(models, "_set_version", fail)  # after the files took their NNNN names
    with pytest.raises(OSError, match="disk full"):
        handle.commit_version(model, config, note="doomed")
    monkeypatch.setattr(models, "_set_version", real_set)
    assert db_dump(sample_index) == before
    assert _check_versions(sample_index) == [1, 2]


def test_cleanup_spares_the_number_another_run_took_meanwhile(sample_index, monkeypatch):
    """Between a failed commit's rollback and its clean-up, another run registers the same
    number (its files now have the names this one had used): the clean-up leaves them."""
    handle = create_model(sample_index, weights="none", min_size=96)
    model, config = handle.load()
    models = type(sample_index.models)
    real_set, real_transaction = models._set_version, sample_index.transaction
    other = Index(sample_index.path)

    def fail(self, *args):
        raise OSError("disk full")

    def other_commits_first():
        monkeypatch.setattr(models, "_set_version", real_set)
        assert active_model(other).commit_version(model, config, note="other") == 2
        return real_transaction()

    monkeypatch.setattr(models, "_set_version", fail)
    monkeypatch.setattr(sample_index, "transaction", other_commits_first)
    try:
        with pytest.raises(OSError, match="disk full"):
            handle.commit_version(model, config, note="doomed")
    finally:
        other.close()
    assert _check_versions(sample_index) == [1, 2]
    assert handle.versions()[-1].note == "other"


def test_same_name_created_twice_at_once_keeps_the_winner(sample_index, monkeypatch, db_dump):
    """The loser passed the early name check, paused, and finds the name taken when it writes:
    it is refused, and the winner's folder, files and rows are untouched."""
    paused, release = _paused_in(monkeypatch, "build_model", "paused")
    other = Index(sample_index.path)
    try:
        thread, outcome = _in_thread(
            lambda: create_model(other, weights="none", name="m", min_size=96))
        assert paused.wait(WAIT_S)  # past the check that the name is free
        winner = create_model(sample_index, weights="none", name="m", min_size=96)
        after_winner = db_dump(sample_index)
        release.set()
        thread.join(WAIT_S)
    finally:
        release.set()
        other.close()
    error = outcome.get("error")
    assert isinstance(error, RefusedError), outcome
    assert str(error).startswith("a model named 'm' already exists in the index")
    assert db_dump(sample_index) == after_winner  # nothing of the loser left, not even staging
    assert sorted(p.name for p in sample_index.models_dir.iterdir()) == ["m"]
    assert active_model(sample_index).id == winner.id
    assert _check_versions(sample_index) == [1]
    active_model(sample_index).load()  # the winner's weights are whole


# The start of each child's script: ``meet(step)`` waits until both processes reach ``step``, or
# the other has ended (refused, failed); ``me`` is the child's number, 0 or 1.
MEET = """
import json, sys, time
from pathlib import Path
import torch

folder, me = Path(sys.argv[2]), int(sys.argv[3])


def meet(step):
    (folder / f"{step}-{me}").touch()
    end = time.monotonic() + 60
    while len(list(folder.glob(f"{step}-*"))) < 2 and not list(folder.glob("end-*")):
        assert time.monotonic() < end, f"the other process never reached {step}"
        time.sleep(0.01)
"""

LEARN = MEET + """
from napari_learn_complete.engine.train import LearnSettings, learn
from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model import build

def saving(*args, real=build.save_weights):
    meet("saving")  # both Learns are past training: their commits overlap
    return real(*args)


build.save_weights = saving
torch.set_num_threads(1)
try:
    index = Index(sys.argv[1])
    meet("start")
    result = learn(index, images=["sample_000.png", "sample_001.png"],
                   settings=LearnSettings(epochs=1, test_percent=0))
    print("version", result.version)
except RefusedError as exc:
    print("refused", exc)
finally:
    (folder / f"end-{me}").touch()
"""


def _small_batches(handle) -> None:
    """Learn in batches of 2 (the sample's two images in one step)."""
    config = handle.config.replace(training=handle.config.training.replace(batch_size=2))
    config.save(handle.folder / "config.json")


def _run_two(script: str, index: Index, tmp_path: Path) -> list[str]:
    """Run ``script`` in two processes at once on ``index``; the last stdout line of each."""
    (tmp_path / "script.py").write_text(script)
    (tmp_path / "meet").mkdir()
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "script.py"), str(index.path),
                               str(tmp_path / "meet"), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    return [out.strip().splitlines()[-1] for out, _ in results]


def test_two_processes_learning_at_once_keep_the_index_consistent(sample_index, tmp_path):
    """Both commit distinct versions, or (when concurrent runs are refused) one is refused
    with a message and leaves nothing; never a lost version or a version without its file."""
    handle = create_model(sample_index, weights="none", min_size=96)
    _small_batches(handle)
    outs = _run_two(LEARN, sample_index, tmp_path)
    versions = sorted(int(o.split()[1]) for o in outs if o.startswith("version"))
    refused = [o for o in outs if o.startswith("refused")]
    assert versions in ([2, 3], [2]), outs
    assert len(refused) == 2 - len(versions), outs
    assert all("already running" in o for o in refused), outs
    assert _check_versions(sample_index) == [1, *versions]
    assert active_model(sample_index).active_version == versions[-1]
    assert not list(Path(handle.folder, "versions").glob(".*")), "staging files left"
    runs = sample_index.query("SELECT status, version FROM runs ORDER BY id")
    assert sorted(r["version"] for r in runs if r["status"] == "done") == versions


BOTH = MEET + """
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.engine.train import LearnSettings, learn
from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Index

torch.set_num_threads(1)
out = {}
try:
    index = Index(sys.argv[1])
    meet("start")
    first = []
    result = complete(
        index, [r.name for r in index.images()], ["disc", "square"][me],
        settings=CompleteSettings(max_detections=3, batch_size=1, remove_existing=me == 0),
        # after its first batch, each waits for the other's: their batches interleave
        on_batch=lambda ids: first or (first.append(1), meet("batch")))
    out["complete"] = [result.run_id, result.written, result.removed]
    meet("learn")
    try:
        out["version"] = learn(index, images=["sample_000.png", "sample_001.png"],
                               settings=LearnSettings(epochs=1, test_percent=0)).version
    except RefusedError as exc:
        out["refused"] = str(exc)
finally:
    (folder / f"end-{me}").touch()
print(json.dumps(out))
"""


def test_two_processes_completing_and_learning_at_once_keep_the_index_consistent(
        sample_index, tmp_path, db_dump):
    """Two processes each run a Complete (one removing the human discs first) with their
    batches interleaved, then a Learn at the same moment: the database stays sound, every
    version keeps its file, each Complete wrote exactly what it reports, and undoing both puts
    every observation back as it was."""
    handle = untrained_model(sample_index, min_size=96)
    _small_batches(handle)
    before = db_dump(sample_index)
    humans = {name: len(sample_index.observations(category=name, source="human"))
              for name in ("disc", "square")}
    assert humans["disc"] > 0
    outs = [json.loads(out) for out in _run_two(BOTH, sample_index, tmp_path)]
    images = len(sample_index.images())
    (run0, written0, removed0), (run1, written1, removed1) = (o["complete"] for o in outs)
    assert (written0, removed0) == (3 * images, humans["disc"])
    assert (written1, removed1) == (3 * images, 0)
    for name, run, humans_left in (("disc", run0, 0), ("square", run1, humans["square"])):
        assert len(sample_index.observations(category=name, source="human")) == humans_left
        assert len(sample_index.observations(category=name, run_id=run)) == 3 * images
        assert sample_index.runs.get(run).status == "done"
    versions = sorted(o["version"] for o in outs if "version" in o)
    assert versions in ([2, 3], [2]), outs
    assert all("already running" in o["refused"] for o in outs if "refused" in o), outs
    assert _check_versions(sample_index) == [1, *versions]
    sample_index.runs.undo(run0)
    sample_index.runs.undo(run1)
    after = db_dump(sample_index)
    for table in ("observations", "attributes"):
        assert after[table] == before[table], table
