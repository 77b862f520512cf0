"""An index in a folder that cannot be written (a shared dataset on a read-only mount) reads as
any other; every write is refused naming the folder, and opening it writes nothing.

The folder is made read-only for real, in a fresh process: as root (which ignores permission
bits) through a read-only bind mount in a mount namespace of that process's own, otherwise by
taking the write permissions away.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from napari_learn_complete.index import Index
from napari_learn_complete.index.schema import MIGRATIONS
from napari_learn_complete.index.store import DB_NAME
from napari_learn_complete.model import create_model


def run_read_only(folder: Path, script: str, *args: str) -> dict:
    """Run ``script`` in a fresh Python that sees ``folder`` read-only, with ``sys.argv[1:]``
    = ``args``; returns what the script printed last as JSON. Skips where neither way works."""
    command = [sys.executable, "-c", script, *args]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("as root a read-only folder needs unshare (a private read-only mount)")
        where = shlex.quote(str(folder))
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"mount --bind {where} {where} && mount -o remount,ro,bind {where} {where} "
                   f"&& exec {shlex.join(command)}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode and done.stderr.startswith(("unshare:", "mount:")):
            pytest.skip(f"no private read-only mount here: {done.stderr.strip()}")
    else:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path, mode in modes.items():
            path.chmod(mode & ~0o222)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def files(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


_READ_AND_WRITE = """
import json, sys
from pathlib import Path
from napari_learn_complete.cli import main
from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model import active_model, create_model

folder, out = sys.argv[1], sys.argv[2]
codes = [main(["info", folder]), main(["export-coco", folder, out]),
         main(["model", "versions", folder])]
with Index(folder) as index:
    handle = active_model(index)
    writes = {
        "category": lambda: index.add_category("new"),
        "observation": lambda: index.delete_observations([1]),
        "run": lambda: index.runs.start("complete", model_id=None, kind="roi", scope={},
                                        settings={}),
        "model": lambda: create_model(index, weights="none", name="other"),
        "version": lambda: handle.commit_version(None, handle.config),
        "rollback": lambda: handle.rollback(1),
    }
    refusals = {}
    for what, write in writes.items():
        try:
            write()
        except RefusedError as exc:
            refusals[what] = str(exc)
    print(json.dumps({"codes": codes, "read_only": index.read_only,
                      "pixels": list(index.read_image(1).shape),
                      "categories": [c.name for c in index.categories()],
                      "refusals": refusals}))
"""


def test_a_read_only_index_reads_and_refuses_every_write(sample_index, tmp_path):
    create_model(sample_index, weights="none")
    # a run left 'running' by a killed process: opening it must not try to end it (a write)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn = sqlite3.connect(sample_index.path / DB_NAME)
    conn.execute("INSERT INTO runs(operation, status, pid, host) "
                 "VALUES ('complete', 'running', ?, ?)", (dead.pid, socket.gethostname()))
    conn.commit()
    conn.close()
    sample_index.close()
    folder = sample_index.path
    assert not (folder / f"{DB_NAME}-wal").exists()  # all in the database file, as when shared
    listing = files(folder)
    out = tmp_path / "out.json"

    found = run_read_only(folder, _READ_AND_WRITE, str(folder), str(out))

    assert found["codes"] == [0, 0, 0]  # info, export-coco, model versions
    assert found["read_only"]
    assert len(json.loads(out.read_text())["images"]) == 12
    assert found["pixels"][2] == 3
    assert "disc" in found["categories"]
    assert set(found["refusals"]) == {"category", "observation", "run", "model", "version",
                                      "rollback"}
    for message in found["refusals"].values():
        assert message.startswith("the index folder is read-only")
        assert str(folder) in message
    assert files(folder) == listing  # not even a -wal or -shm file


_CATEGORIES = """
import json, sys
from napari_learn_complete.index import Index
with Index(sys.argv[1]) as index:
    print(json.dumps([index.read_only, [c.name for c in index.categories()]]))
"""


def test_commits_still_in_the_write_ahead_log_are_read(empty_index):
    """A writer elsewhere still has the index open: its last commit is only in the -wal file."""
    empty_index.add_category("late")
    assert (empty_index.path / f"{DB_NAME}-wal").stat().st_size > 0
    assert run_read_only(empty_index.path, _CATEGORIES, str(empty_index.path)) \
        == [True, ["late"]]


_OLD = """
import json, sys
from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Index
with Index(sys.argv[1]) as index:
    found = [index.query("PRAGMA user_version")[0][0], [str(r) for r in index.image_roots()],
             list(index.read_image("a.png").shape)]
try:
    Index(sys.argv[2])
except RefusedError as exc:
    found.append(str(exc))
print(json.dumps(found))
"""


def _old_index(folder: Path, version: int, image_path: str | None = None) -> Path:
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(";".join(MIGRATIONS[v] for v in range(1, version + 1)))
    if image_path:
        conn.execute("INSERT INTO images(name, path, width, height) VALUES ('a.png', ?, 4, 3)",
                     (image_path,))
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return folder


def test_an_older_read_only_index_reads_as_upgraded_or_is_refused_by_name(tmp_path, db_dump):
    shared = tmp_path / "shared"
    (shared / "photos").mkdir(parents=True)
    Image.new("RGB", (4, 3)).save(shared / "photos" / "a.png")
    v3 = _old_index(shared / "v3", 3, os.path.join("..", "photos", "a.png"))
    v2 = _old_index(shared / "v2", 2)
    before = db_dump(v3)

    found = run_read_only(shared, _OLD, str(v3), str(v2))

    # schema 4 only adds a table: made for the reading process alone, the file stays at 3
    assert found[:3] == [3, [str(shared / "photos")], [3, 4, 3]]
    assert found[3].startswith("the index folder is read-only and the index was written by an "
                               "older napari-learn-complete (schema 2")
    assert found[3].endswith(str(v2))
    assert db_dump(v3) == before
    with Index(v3) as index:  # where it can be written, the upgrade is made for good
        assert index.query("PRAGMA user_version")[0][0] == 4
        assert index.image_roots() == [shared / "photos"]
