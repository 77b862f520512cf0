"""Closing the viewer from a script while a Learn runs: the Learn is cancelled and nothing is
delivered to the panels' deleted Qt objects (which aborted the process). In a fresh process,
since that abort would take pytest with it; the Learn runs in the real engine process.

Run as a script (``python test_workers_close.py INDEX``) it is the napari side of the test.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui
RUNNING_WITHIN_S = 240.0  # the engine process imports torch first, on a shared machine


def test_closing_the_viewer_while_learn_runs(tmp_path: Path) -> None:
    from napari_learn_complete.sample import make_sample_index
    from untrained import untrained_model

    index = make_sample_index(tmp_path / "index", n_images=12, labelled=6, seed=0)
    untrained_model(index)
    index.close()
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "index")],
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"napari exited {done.returncode}:\n{done.stderr[-4000:]}"
    assert "has been deleted" not in done.stderr, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "closed while learning"
    assert _runs(tmp_path / "index") == [("learn", "cancelled")]  # the close stopped it


def _runs(folder: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{folder / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT operation, status FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()


def _close_while_learning(folder: Path) -> None:
    import napari
    from napari_user import answer_next_dialog, one_epoch
    from qtpy.QtWidgets import QApplication

    from napari_learn_complete._napari.layers import open_index
    from napari_learn_complete._qt.index_panel import IndexPanel
    from napari_learn_complete._qt.model_panel import ModelPanel

    def pump_until(condition, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not condition() and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        return condition()

    viewer = napari.Viewer(show=True)
    layers = open_index(viewer, folder)
    panel = IndexPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Index panel")
    viewer.window.add_dock_widget(ModelPanel(viewer), name="Model panel")
    index = layers.index
    panel.set_active_category("disc")
    panel.select_images([1, 2, 3])
    answer_next_dialog(one_epoch)
    worker = panel.learn_images("roi")
    assert pump_until(lambda: [r.status for r in index.runs.list()] == ["running"],
                      RUNNING_WITHIN_S), "the Learn never started in the engine"
    viewer.close()
    assert pump_until(lambda: not worker.is_running, 60.0), "the Learn did not stop"
    pump_until(lambda: False, 2.0)  # anything still queued for the panels arrives now
    print("closed while learning", flush=True)


if __name__ == "__main__":
    _close_while_learning(Path(sys.argv[1]))
