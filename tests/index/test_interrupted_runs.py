"""Runs whose process is gone (killed, out of memory) and Learns serialised on one index: a killed
run becomes 'interrupted' when the index is next opened or a run next starts, and can be undone;
a second Learn is refused while one runs with a live process."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Change, Index
from napari_learn_complete.index.runs import process_alive
from napari_learn_complete.index.schema import MIGRATIONS, SCHEMA_VERSION
from napari_learn_complete.index.store import DB_NAME, STALE_S

# A Complete with "Remove existing first" as engine/complete.py records it: the run, then a batch
# that deletes a human box and journals it; then the process dies before finishing the run.
_RUN = """
import os, sys
from napari_learn_complete.index import Index
index = Index(sys.argv[1])
operation = sys.argv[2]
run = index.runs.start(operation, model_id=None, kind="roi", scope={}, settings={})
if operation == "complete":
    obs = index.observations(category="disc")[0]
    with index.transaction():
        before = {obs.id: index.runs.snapshot(obs.id)}
        index.delete_observations([obs.id])
        index.runs.journal(run, before)
print(run, flush=True)
sys.stdin.read()
os._exit(9)
"""


@contextmanager
def run_in_process(index: Index, operation: str) -> Iterator[tuple[int, int]]:
    """Another process starts a run and keeps it running meanwhile (yields run id and pid); on
    leaving, the process dies without finishing it."""
    child = subprocess.Popen([sys.executable, "-c", _RUN, str(index.path), operation],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield int(child.stdout.readline()), child.pid
    finally:
        child.stdin.close()
        assert child.wait(timeout=20) == 9


def _start(index: Index, operation: str) -> int:
    return index.runs.start(operation, model_id=None, kind="roi", scope={}, settings={})


def _without_runs(dump):
    return {k: v for k, v in dump.items() if k not in ("runs", "run_changes")}


def test_a_killed_complete_is_interrupted_on_open_and_undone(sample_index, db_dump):
    before = db_dump(sample_index)
    with run_in_process(sample_index, "complete") as (run, pid):
        reopened = Index(sample_index.path)  # its process is alive: the run is left alone
        assert (reopened.runs.get(run).status, reopened.runs.get(run).pid) == ("running", pid)
        reopened.close()
    assert sample_index.count_observations() == len(before["observations"]) - 1
    with Index(sample_index.path) as index:
        recorded = index.runs.get(run)
        assert (recorded.status, recorded.host) == ("interrupted", socket.gethostname())
        assert index.runs.undo(run) == 1
    assert _without_runs(db_dump(sample_index)) == _without_runs(before)


def test_starting_a_run_ends_the_killed_ones_and_announces_it(sample_index):
    with run_in_process(sample_index, "complete") as (run, _):
        pass
    heard: list[Change] = []
    sample_index.subscribe(heard.append)  # opened before the kill: the next start sweeps
    assert sample_index.runs.get(run).status == "running"
    mine = _start(sample_index, "complete")
    assert heard[:2] == [Change("runs", "updated", (run,)), Change("runs", "added", (mine,))]
    assert sample_index.runs.get(run).undoable
    assert sample_index.runs.get(mine).status == "running"  # this process's own run stays


def test_a_second_learn_is_refused_while_one_runs_in_another_process(sample_index, db_dump):
    with run_in_process(sample_index, "learn") as (run, pid):
        before = db_dump(sample_index)
        with pytest.raises(RefusedError, match=rf"a Learn is already running on this index "
                                               rf"\(run {run}, process {pid}\): wait for it"):
            _start(sample_index, "train")
        assert db_dump(sample_index) == before
        _start(sample_index, "complete")  # Completes are not serialised
    learn = _start(sample_index, "learn")  # its process is gone: the killed Learn no longer holds
    assert sample_index.runs.get(run).status == "interrupted"
    assert sample_index.runs.get(learn).status == "running"


def test_two_indexes_on_one_folder_learn_one_at_a_time(sample_index):
    other = Index(sample_index.path)
    try:
        first = _start(sample_index, "learn")
        with pytest.raises(RefusedError, match=f"run {first}, process {os.getpid()}"):
            _start(other, "learn")
        sample_index.runs.finish(first, "done", seconds=1)
        _start(other, "learn")
    finally:
        other.close()


def test_a_learn_on_another_machine_is_not_ended_and_holds_the_index(sample_index):
    run = _start(sample_index, "learn")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=20)  # a process id that here would be gone
    conn = sqlite3.connect(sample_index.path / DB_NAME)
    conn.execute("UPDATE runs SET host = 'elsewhere', pid = ? WHERE id = ?", (gone.pid, run))
    conn.commit()
    conn.close()
    with Index(sample_index.path) as index:
        assert index.runs.get(run).status == "running"
        with pytest.raises(RefusedError, match=f"run {run}, process {gone.pid} on elsewhere"):
            _start(index, "learn")


def test_a_locked_index_still_opens_and_the_next_start_ends_the_run(sample_index, write_locked):
    with run_in_process(sample_index, "complete") as (run, _):
        pass
    with write_locked(sample_index), Index(sample_index.path, lock_timeout=0.1) as index:
        assert index.runs.get(run).status == "running"
    _start(sample_index, "complete")
    assert sample_index.runs.get(run).status == "interrupted"


def test_a_version_2_index_migrates_and_leaves_its_running_runs(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(MIGRATIONS[1] + ";" + MIGRATIONS[2])
    conn.execute("INSERT INTO runs(operation) VALUES ('complete')")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Index(folder) as index:
        assert index.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        [run] = index.runs.list()
        assert (run.status, run.pid, run.host) == ("running", None, None)  # nobody can tell
        new = index.runs.get(_start(index, "learn"))  # an old run does not hold Learns
        assert (new.pid, new.host) == (os.getpid(), socket.gethostname())


def test_stale_temporary_model_files_are_removed_on_open(sample_index, tmp_path):
    versions = sample_index.models_dir / "default" / "versions"
    versions.mkdir(parents=True)
    old = time.time() - STALE_S - 60
    stale = [versions / ".0002.pt.k3j2.tmp", versions.parent / ".config.json.x1.tmp"]
    kept = [versions / ".0003.pt.a9.tmp", versions / "0001.pt"]  # being written; a version
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (sample_index.models_dir / "linked").mkdir()
    (sample_index.models_dir / "linked" / "versions").symlink_to(outside)
    for file in [*stale, *kept, outside / ".0001.pt.zz.tmp"]:
        file.write_bytes(b"w")
        if file not in kept[:1]:
            os.utime(file, (old, old))
    # a model being created and a COCO import's staging folder, both killed long ago; and one
    # import still under way
    folders = [sample_index.models_dir / ".model-3fa9.tmp" / "versions",
               sample_index.images_dir / ".import-k2x9", sample_index.images_dir / ".import-live"]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "0001.pt").write_bytes(b"w")
    for folder in (folders[0].parent, folders[1]):
        os.utime(folder, (old, old))
    Index(sample_index.path).close()
    assert [f.exists() for f in stale] == [False, False]
    assert all(f.exists() for f in kept) and (outside / ".0001.pt.zz.tmp").exists()
    assert [f.exists() for f in (folders[0].parent, folders[1], folders[2])] == [
        False, False, True]


def test_a_killed_process_not_yet_reaped_counts_as_gone(process_gone):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert process_alive(child.pid) and process_alive(os.getpid())
        child.stdin.close()
        assert process_gone(child.pid)  # a zombie until its parent waits for it
        assert not process_alive(child.pid)
    finally:
        child.wait(timeout=10)
    assert not process_alive(child.pid)


def test_the_supervisor_says_why_a_run_found_interrupted_ended(sample_index):
    with run_in_process(sample_index, "complete") as (run, _):
        pass
    assert sample_index.runs.end_orphaned() == [run]  # the engine's supervisor opens the index
    assert sample_index.runs.end_interrupted([run], "cancelled") == [run]  # then ends its runs
    assert sample_index.runs.get(run).status == "cancelled"
    assert sample_index.runs.end_interrupted([run], "failed") == []
