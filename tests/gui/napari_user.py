"""A user's session in a fresh napari process, for tests/gui/test_user_flow.py (not a test module).

``python napari_user.py SCENARIO INDEX`` shows a napari window first, then opens the index, docks
the Index panel, and acts through the real menus the way a person would, answering dialogs as
they open. It prints one JSON line of what it saw (notifications, layer and database counts,
whether torch was loaded) and exits 0, or raises. Scenarios:

- ``flow``: Learn and Complete from the image menu, Learn and Complete (review, accept) from a
  category card, Complete from the layer-list menu, then Undo;
- ``kill``: a Complete whose engine process is killed after its first committed batch;
- ``sample``: File > Open Sample (built in ``INDEX``, used as the cache folder), which has no
  model: the first Learn from a category card creates one, then Complete runs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import napari
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QDialog

TIMEOUT_S = 120.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    """Keep the event loop running until ``condition()`` holds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.01)


def answer_next_dialog(edit: Callable[[QDialog], None] | None = None) -> None:
    """Press OK in the next modal dialog, after ``edit``."""

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QDialog):
            QTimer.singleShot(20, answer)
            return
        if edit is not None:
            edit(dialog)
        dialog.accept()

    QTimer.singleShot(0, answer)


def one_epoch(dialog: QDialog) -> None:
    dialog._magic_widget.epochs.value = 1


def trigger(menu, path: str) -> None:
    """Trigger the entry ``path`` ("ROI/Learn" or "Learn") of a context menu."""
    *parents, name = path.split("/")
    for parent in parents:
        menu = next(a.menu() for a in menu.actions() if a.text() == parent)
    action = next(a for a in menu.actions() if a.text() == name)
    assert action.isEnabled(), f"{path} is disabled: {action.toolTip()}"
    action.trigger()


def db_rows(index: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{index / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def main(scenario: str, folder: Path) -> dict:
    seen: list[str] = []
    viewer = napari.Viewer(show=True)  # the window first, as a user starts napari
    notification_manager.notification_ready.connect(
        lambda n: seen.append(f"{n.severity}: {n.message}"))
    wait_until(lambda: viewer.window._qt_window.isVisible(), "the window")
    if scenario == "sample":
        os.environ["XDG_CACHE_HOME"] = str(folder)
        viewer.open_sample("napari-learn-complete", "sample_index")
    else:
        viewer.open(str(folder), plugin="napari-learn-complete")
    _, panel = viewer.window.add_plugin_dock_widget("napari-learn-complete", "Index panel")
    wait_until(lambda: panel.layers is not None, "the panel to show the index")
    layers = panel.layers

    def run(start: Callable[[], object], what: str) -> None:
        start()
        wait_until(lambda: not panel.workers, what)

    def boxes() -> int:
        """Boxes in the layer: those of the image shown (the layers hold one image's page)."""
        return len(layers.boxes_layer.data)

    report: dict = {"seen": seen}
    if scenario == "flow":
        panel.set_active_category("disc")
        panel.select_images([1, 2, 3])
        answer_next_dialog(one_epoch)
        run(lambda: trigger(panel.image_menu(), "ROI/Learn"), "Learn from the image menu")
        layers.show_image(9)
        before = boxes()
        panel.select_images([9, 10])
        answer_next_dialog()
        run(lambda: trigger(panel.image_menu(), "ROI/Complete"), "Complete (image menu)")
        wait_until(lambda: boxes() == before + 1, "the completed box of the image shown")
        report["complete_layer_boxes"] = boxes() - before
        card = panel._cards["square"]
        answer_next_dialog(one_epoch)
        run(lambda: trigger(panel.category_menu(card.name), "Learn (ROI)"), "Learn from a card")
        answer_next_dialog(lambda d: setattr(d._magic_widget.max_detections, "value", 1))
        run(lambda: trigger(panel.category_menu(card.name), "Complete (ROI)"),
            "Complete from a card")
        from napari_learn_complete._qt.review import ReviewWidget

        review = next(w for w in viewer.window.dock_widgets.values()
                      if isinstance(w, ReviewWidget))
        report["proposals"] = len(review.model.proposals)
        review.model.check_above(0.0)
        result = review.confirm()
        report["accepted"] = result.written
        accepted = set(result.observation_ids)
        shown = db_rows(folder, f"SELECT image_id FROM observations WHERE id = {min(accepted)}")
        layers.show_image(shown[0][0])
        wait_until(lambda: accepted & set(layers.boxes_layer.features["observation_id"]),
                   "an accepted box on its image")
        # the layer-list context menu, on the boxes layer, for the image shown
        from napari._app_model import get_app_model

        from napari_learn_complete._napari.menus import action_id

        panel.table.clearSelection()
        layers.show_image(11)
        viewer.layers.selection.active = layers.boxes_layer
        panel.set_active_category("triangle")
        before = boxes()
        answer_next_dialog()
        run(lambda: get_app_model().commands.execute_command(action_id("complete", "roi")),
            "Complete from the layer-list menu")
        wait_until(lambda: boxes() == before + 1, "the layer-menu Complete's box")
        report["layer_menu_image"] = panel.selected_image_ids()
        assert panel.undo_button.isEnabled()
        panel.undo_button.click()
        wait_until(lambda: boxes() == before, "Undo to remove the box from the layer")
    elif scenario == "sample":
        folder = layers.index.path
        panel.set_active_category("square")
        panel.select_images([2])
        complete = next(a for a in next(a.menu() for a in panel.image_menu().actions()
                                        if a.text() == "ROI").actions() if a.text() == "Complete")
        report["complete_before"] = [complete.isEnabled(), complete.toolTip()]

        def first_learn(dialog: QDialog) -> None:
            widgets = dialog._magic_widget
            report["first_learn_offers"] = [widgets.model_choice.value, widgets.keypoints.value,
                                            widgets.weights.value, widgets.mode.value]
            widgets.weights.value = "Random (offline, learns slowly)"  # nothing to download here
            widgets.epochs.value = 1

        answer_next_dialog(first_learn)
        run(lambda: trigger(panel.category_menu("square"), "Learn (ROI)"),
            "the model made, then the Learn")
        report["models"] = db_rows(folder, "SELECT name, active_version FROM models")
        answer_next_dialog()
        run(lambda: trigger(panel.image_menu(), "ROI/Complete"), "Complete with the new model")
    elif scenario == "kill":
        from napari_learn_complete.engine.process import shared_engine

        panel.set_active_category("disc")
        panel.select_images(layers.image_ids())  # all: a Complete long enough to kill
        answer_next_dialog()
        before = boxes()
        trigger(panel.image_menu(), "ROI/Complete")
        wait_until(lambda: boxes() > before, "the first committed batch in the layer")
        os.kill(shared_engine().pid, signal.SIGKILL)
        wait_until(lambda: not panel.workers, "the Complete to end")
        report["kept_in_layer"] = boxes() - before
        report["model_boxes_shown"] = db_rows(
            folder, "SELECT COUNT(*) FROM observations WHERE source = 'model' AND image_id = "
            f"{layers.current_image_id()}")[0][0]
        report["undo_enabled"] = panel.undo_button.isEnabled()
        report["window_visible"] = viewer.window._qt_window.isVisible()
    report["runs"] = db_rows(folder, "SELECT operation, status FROM runs ORDER BY id")
    report["model_boxes"] = db_rows(
        folder, "SELECT COUNT(*) FROM observations WHERE source = 'model'")[0][0]
    report["integrity"] = db_rows(folder, "PRAGMA integrity_check")[0][0]
    report["torch_loaded"] = sorted(m for m in ("torch", "torchvision", "triton")
                                    if m in sys.modules)
    from napari_learn_complete.engine.process import shared_engine

    report["engine_pid"] = shared_engine().pid  # closing napari must stop it
    viewer.close()
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))), flush=True)
