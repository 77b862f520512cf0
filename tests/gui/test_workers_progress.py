"""The progress of a job in napari's activity dock: the bar beside the description already shows
the steps done and the time left, so the description says the rest, each thing once."""

from __future__ import annotations

import threading

import pytest
from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

from napari_learn_complete._qt.workers import run_in_worker
from napari_learn_complete.engine.progress import Progress

pytestmark = pytest.mark.gui


def test_the_activity_bar_says_each_thing_once(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    release = threading.Event()

    def learn(progress, cancel) -> None:  # as Learn reports its first step of two
        progress(Progress("learn", 1, 2, "epoch 1/2", epoch=1, epochs=2, loss=0.51234,
                          eta_s=75.4))
        release.wait(timeout=30)

    worker = run_in_worker(learn, title="Learn (ROI)")
    try:
        bars = viewer.window._qt_window._activity_dialog.findChildren(QtLabeledProgressBar)
        qtbot.waitUntil(lambda: "epoch" in bars[0].description_label.text())
        description = bars[0].description_label.text()
    finally:
        release.set()
        qtbot.waitUntil(lambda: not worker.is_running)
    # napari adds the ": " and shows "1/2 [elapsed<left, rate]" after the bar itself
    assert description == "Learn (ROI): epoch 1/2 · loss 0.5123: "
