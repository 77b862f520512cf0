"""Shared fixtures: small indexes and a full dump of an index to prove "nothing changed"."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import URLError

import pytest
import torch
import torchvision.ops  # noqa: F401  (see in_process_runner)

from napari_learn_complete.engine.jobs import InProcessRunner
from napari_learn_complete.index import Index
from napari_learn_complete.index.store import DB_NAME
from napari_learn_complete.model import pretrained
from napari_learn_complete.sample import make_sample_index
from napari_learn_complete.session import set_default_runner

TESTS = Path(__file__).parent
DISPLAY_DIRS = ("gui", "napari")  # every test under these drives the real viewer or Qt widgets


def pytest_configure(config: pytest.Config) -> None:
    """torch's weight cache is an empty folder of the run's own (engine processes inherit it):
    no test reads the user's downloaded weights or leaves files there; tests that need
    torchvision's pretrained files place stand-ins in a cache of their own."""
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="nlc-torch-home-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's weight cache goes with the run (one folder per run piled up in /tmp)."""
    shutil.rmtree(os.environ["TORCH_HOME"], ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``gui`` every test that needs a display, so ``-m "not gui"`` is a headless run: the
    tests under tests/gui and tests/napari, and any other that uses a Qt application (``qapp``,
    which ``qtbot`` and ``make_napari_viewer`` build on)."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) \
            else None
        if folder in DISPLAY_DIRS or "qapp" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def in_process_runner() -> Iterator[None]:
    """Jobs started from widgets and the console run in this process (in a thread worker), so
    tests can inject models and are fast. That loads torch here, which is safe only because it is
    imported above, before any napari canvas exists (triton after Mesa's libLLVM segfaults). The
    real engine process, and napari without torch, are tested in fresh processes as a user meets
    them: tests/engine/test_process.py and tests/gui/test_user_flow.py.
    """
    set_default_runner(InProcessRunner())
    yield
    set_default_runner(None)


def dump_index(index: Index | Path) -> dict[str, Any]:
    """Every row of every table, the schema version and the files under the index folder.

    Read through a fresh read-only connection, so it sees what is committed on disk and nothing
    else; compare two dumps with ``==`` to check that a failed operation left the index as it was.
    """
    folder = index.path if isinstance(index, Index) else Path(index)
    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )]
        dump: dict[str, Any] = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in tables
        }
        dump["_user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    dump["_files"] = sorted(
        (str(p.relative_to(folder)), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(DB_NAME)  # the db, its -wal and -shm files
    )
    return dump


@pytest.fixture
def db_dump() -> Callable[[Index | Path], dict[str, Any]]:
    """The :func:`dump_index` helper, for tests that compare an index before and after."""
    return dump_index


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO categories(name, colour) VALUES ('intruder', '#000000')")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def hold_write_lock(index: Index | Path) -> Iterator[None]:
    """Another process holds the index's write lock (with an uncommitted write) meanwhile."""
    folder = index.path if isinstance(index, Index) else Path(index)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(folder / DB_NAME)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.fixture
def write_locked() -> Callable[[Index | Path], Any]:
    """The :func:`hold_write_lock` context manager: ``with write_locked(index): ...``."""
    return hold_write_lock


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    """True once process ``pid`` has ended (or is a zombie waiting to be reaped), within
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def process_gone() -> Callable[[int], bool]:
    """The :func:`wait_gone` helper: ``assert process_gone(pid)``."""
    return wait_gone


@pytest.fixture
def weight_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch's weight cache in an empty folder of the test's own: ``$TORCH_HOME/hub/checkpoints``
    (returned), where torchvision looks for its files and downloads them to."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home / "hub" / "checkpoints"


@pytest.fixture
def offline(weight_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weight cache (returned) and no network, as on a machine offline."""

    def no_network(*args, **kwargs):
        raise URLError("no network in the tests")

    monkeypatch.setattr(pretrained, "urlopen", no_network)
    return weight_cache


@pytest.fixture
def sample_index(tmp_path: Path) -> Iterator[Index]:
    """12 synthetic images (discs, squares, triangles with keypoints), the first 6 labelled."""
    index = make_sample_index(tmp_path / "sample", n_images=12, labelled=6, seed=0)
    yield index
    index.close()


@pytest.fixture
def empty_index(tmp_path: Path) -> Iterator[Index]:
    """A freshly created index with no images and no categories."""
    index = Index.create(tmp_path / "empty")
    yield index
    index.close()
