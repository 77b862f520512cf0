"""Make the screenshots of docs/ui.md from the real napari UI, so they can be redone after a change.

Run from the repository root (a virtual X server is enough; nothing needs a GPU or the network)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots.py

It builds the sample index in a temporary folder, opens it in a napari viewer, creates a small
keypoint model and trains it briefly (so the model panel has versions and run records), opens the
panels from the Plugins menu, then drives the Index panel, the dialogs and the review table as a
user would and saves one PNG per view into docs/images/. The review table is filled by a
scripted detector that "finds" the sample's ground truth with realistic scores (plus a few false
alarms), because a model trained for seconds would propose little worth showing.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import torch
from PIL import Image
from qtpy.QtCore import QItemSelectionModel, QPoint
from qtpy.QtGui import QGuiApplication, QImage, QPixmap
from qtpy.QtWidgets import QApplication, QMenu, QToolTip, QWidget

from napari_learn_complete._napari.layers import IndexLayers, open_index
from napari_learn_complete._qt import dialogs
from napari_learn_complete._qt.index_panel import IndexPanel
from napari_learn_complete._qt.review import ReviewWidget, show_review
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.proposals import propose
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.engine.train import LearnSettings, learn
from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import create_model
from napari_learn_complete.sample import GROUND_TRUTH_FILE, make_sample_index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from doubles import ScriptedDetector  # the tests' scripted detector

OUT = Path(__file__).resolve().parent / "images"
PLUGIN = "napari-learn-complete"
WINDOW = (1600, 1000)
MAX_BYTES = 300_000


# ------------------------------------------------------------------------------- helpers
def settle(seconds: float = 0.3) -> None:
    """Let Qt lay out, paint and run queued refreshes (the panels coalesce changes on timers)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def save(image: QImage | QPixmap | np.ndarray, name: str) -> Path:
    """Save a PNG; reduce it to a 256-colour palette when the full colours exceed the budget
    (the UI is flat-coloured, so text stays sharp, unlike with downscaling)."""
    if isinstance(image, QPixmap):
        image = image.toImage()
    if isinstance(image, QImage):
        image = image.convertToFormat(QImage.Format.Format_RGB888)
        width, height = image.width(), image.height()
        data = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), np.uint8)
        image = data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3)
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    target = OUT / name
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", optimize=True)
    if buffer.tell() > MAX_BYTES:
        buffer = io.BytesIO()
        picture.quantize(256, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    target.write_bytes(buffer.getvalue())
    print(f"{target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target}: "
          f"{picture.width}×{picture.height}, {buffer.tell() // 1024} KB")
    return target


def grab_screen(widgets: list[QWidget], margin: int = 6) -> QPixmap:
    """The screen around several top-level widgets (a menu and its submenu are separate
    windows, which QWidget.grab of the main window does not include)."""
    left = min(w.mapToGlobal(QPoint(0, 0)).x() for w in widgets) - margin
    top = min(w.mapToGlobal(QPoint(0, 0)).y() for w in widgets) - margin
    right = max(w.mapToGlobal(QPoint(w.width(), 0)).x() for w in widgets) + margin
    bottom = max(w.mapToGlobal(QPoint(0, w.height())).y() for w in widgets) + margin
    screen = QGuiApplication.primaryScreen()
    return screen.grabWindow(0, max(left, 0), max(top, 0), right - left, bottom - top)


def window_shot(viewer: napari.Viewer, name: str) -> Path:
    settle(0.8)
    return save(viewer.screenshot(canvas_only=False, flash=False), name)


# --------------------------------------------------------------------------------- scene
def build_index(folder: Path) -> Index:
    """The sample index, a keypoint model and two short Learn runs (versions 2 and 3)."""
    index = make_sample_index(folder / "shapes", n_images=24, labelled=8)
    torch.manual_seed(0)
    create_model(index, weights="none", keypoints=True)
    labelled = [image.id for image in index.images()][:8]
    learn(index, images=labelled, kind="roi",
          settings=LearnSettings(epochs=2, test_percent=25))
    learn(index, category="triangle", kind="keypoints", settings=LearnSettings(epochs=1))
    return index


def scripted_proposals(index: Index, category: str) -> list:
    """Proposals of ``category`` from a detector that returns the ground truth with scores a
    trained model gives (high for clear objects, lower for small ones) and some false alarms."""
    truth = json.loads((index.path / GROUND_TRUTH_FILE).read_text())
    names = {image["id"]: image["file_name"] for image in truth["images"]}
    cats = {c["id"]: c["name"] for c in truth["categories"]}
    rng = np.random.default_rng(3)
    found: dict[str, list[Detection]] = {}
    for ann in truth["annotations"]:
        x, y, w, h = ann["bbox"]
        hit = cats[ann["category_id"]] == category
        score = (rng.uniform(0.55, 0.98) * min(1.0, 0.6 + w / 60) if hit
                 else rng.uniform(0.05, 0.45))
        if hit or rng.random() < 0.5:  # the model mistakes some other shapes for it
            found.setdefault(names[ann["image_id"]], []).append(
                Detection(category, (x, y, x + w, y + h), round(float(score), 3))
            )
    detector = ScriptedDetector(index, found, kinds=("roi",), model_version="default:v3")
    return propose(index, category, settings=CompleteSettings(max_detections=3),
                   predictor=detector)


# --------------------------------------------------------------------------------- shots
def shot_window(viewer: napari.Viewer, layers: IndexLayers, panel: IndexPanel) -> None:
    """(1) The window: an image with boxes and keypoints, the Index panel docked."""
    panel.set_active_category("triangle")
    with_triangle = layers.index.query(  # the busiest image that has a triangle
        "SELECT image_id FROM observations GROUP BY image_id HAVING SUM(category_id IN "
        "(SELECT id FROM categories WHERE name = 'triangle')) > 0 ORDER BY COUNT(*) DESC LIMIT 1"
    )[0][0]
    ids = layers.image_ids()
    panel.select_images(ids[:5])
    row = panel.table.model().index(ids.index(with_triangle), 0)  # shown, but left unselected
    panel.table.selectionModel().setCurrentIndex(row, QItemSelectionModel.SelectionFlag.NoUpdate)
    settle()
    viewer.reset_view()
    window_shot(viewer, "window.png")


def shot_image_menu(panel: IndexPanel) -> None:
    """(2) Right-click on the selected images: the menu with its ROI submenu open, and the
    Keypoints submenu with its reason tooltip when the active category has no keypoints."""
    for file, category, title in (("image-menu.png", "triangle", "ROI"),
                                  ("image-menu-disabled.png", "disc", "Keypoints")):
        panel.set_active_category(category)
        settle()
        menu = panel.image_menu()
        viewport = panel.table.viewport()
        menu.popup(viewport.mapToGlobal(QPoint(60, 40)))
        settle()
        action = next(a for a in menu.actions() if a.text() == title)
        menu.setActiveAction(action)
        sub: QMenu = action.menu()
        geometry = menu.actionGeometry(action)
        sub.popup(menu.mapToGlobal(geometry.topRight()))
        settle()
        first = sub.actions()[0]
        sub.setActiveAction(first)
        shown = [menu, sub]
        if not first.isEnabled():
            spot = sub.mapToGlobal(sub.actionGeometry(first).center())
            QToolTip.showText(spot + QPoint(12, 16), first.toolTip(), sub)
            settle(0.6)
            tip = next((w for w in QApplication.topLevelWidgets()
                        if w.inherits("QTipLabel") and w.isVisible()), None)
            shown += [tip] if tip is not None else []
        settle()
        save(grab_screen(shown, margin=40), file)
        QToolTip.hideText()
        sub.close()
        menu.close()
        settle()
    panel.set_active_category("triangle")


def shot_dialogs(panel: IndexPanel) -> None:
    """(3) Learn, and Learn on an index without a model; (4) Complete from images and from a
    category, as the panel opens them."""
    for file, dialog in (
        ("learn-dialog.png", dialogs.learn_dialog("Learn boxes on 5 selected image(s)", panel)),
        ("learn-first-dialog.png", dialogs.learn_dialog(
            "Learn boxes on 5 selected image(s)", panel, new_model=True)),
        ("complete-dialog.png", dialogs.complete_dialog(
            "Complete boxes on 5 selected image(s) into category 'triangle'", parent=panel)),
        ("complete-category-dialog.png", dialogs.complete_dialog(
            "Find category 'disc' on images that do not have it yet", from_category=True,
            parent=panel)),
    ):
        dialog.native.show()
        settle()
        save(dialog.native.grab(), file)
        dialog.native.close()


def shot_review(viewer: napari.Viewer, index: Index, panel: IndexPanel) -> None:
    """(5) The review table of "Complete from a category", a row selected, and the window.
    Disc plays a category being added: labelled only on the images where it was first seen, so
    the images of the other categories still hold discs to find."""
    index.delete_observations(
        o.id for o in index.observations(category="disc")
        if len({p.category_id for p in index.observations(images=[o.image_id])}) > 1
    )
    review: ReviewWidget = show_review(viewer, index, "disc", scripted_proposals(index, "disc"),
                                       beside=panel)  # as the Index panel opens it
    settle()
    review.table.selectRow(1)
    review.table.setFocus()
    settle()
    save(review.parent().grab(), "review.png")
    window_shot(viewer, "review-window.png")
    review.cancel()


def shot_model_panel(viewer: napari.Viewer) -> None:
    """(6) The model panel with the active model, its versions, the Learn records and the full
    record of the latest one."""
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Model panel")
    settle()
    panel.versions.selectRow(1)
    panel.runs.selectRow(0)
    dock = panel.parent()
    dock.setFloating(True)
    dock.resize(1200, 900)
    settle(0.6)
    save(dock.grab(), "model-panel.png")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        index = build_index(Path(folder))
        viewer = napari.Viewer(title="napari — Learn & Complete")
        viewer.window._qt_window.resize(*WINDOW)  # no public setter for the window's size
        viewer.window._qt_window.move(0, 0)
        layers = open_index(viewer, index)
        _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Index panel")
        shot_window(viewer, layers, panel)
        shot_image_menu(panel)
        shot_dialogs(panel)
        shot_review(viewer, index, panel)
        shot_model_panel(viewer)
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
