"""What a labeller waits for on a real-size index, against a plain napari Shapes layer holding the
same boxes, measured in the same run and the same window.

Builds an index of ``--images`` 640x480 images (a few distinct PNGs referenced many times) with
``--boxes`` boxes in three categories, and measures, in a shown viewer under Xvfb:

- ``open``: opening the index (layers made, first image decoded and painted), the plugin already
  imported. Plain: an image layer of the same lazy stack and one Shapes layer of every box, with
  the same colours and category text.
- ``switch``: moving the slider to another image until it is painted (median and max of
  ``--repeats`` moves).
- ``draw``: one box drawn on the image shown (added to the layer, and for ours written to the
  index) until painted; ``move``: one box moved (a changed-data event, as a drag ends).
- ``complete``: a Complete's arrivals: a thread commits ``--batches`` batches of boxes on 8 images
  each (the image shown among them) while a 10 ms timer measures how late the event loop runs
  (``stall``: the worst lateness). Plain: each batch's boxes added to the one Shapes layer on the
  event loop.
- ``filter``: choosing a category in the Index panel's filter with a row selected: the worst
  event-loop lateness until the filtered table is shown (ours only: plain napari has no filter).

    xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python benchmarks/bench_labelling.py \
        [--images 400] [--boxes 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

from napari_learn_complete._napari.layer_data import box_rows, image_stack, stackable
from napari_learn_complete._napari.layers import IndexLayers, open_index
from napari_learn_complete._qt.index_panel import IndexPanel
from napari_learn_complete.index import Index

WIDTH, HEIGHT = 640, 480
CATEGORIES = ("cell", "platelet", "debris")
TICK_MS = 10


def build_index(folder: Path, images: int, boxes: int, seed: int = 0) -> Index:
    """``images`` references to 8 noisy 640x480 PNGs, ``boxes`` boxes spread over them."""
    rng = np.random.default_rng(seed)
    index = Index.create(folder)
    files = []
    for k in range(8):
        path = folder / f"source_{k}.png"
        Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).save(path)
        files.append(path)
    index.add_images([files[i % 8] for i in range(images)],
                     names=[f"img_{i:06d}.png" for i in range(images)],
                     probed=[(WIDTH, HEIGHT, 3)] * images)
    for name in CATEGORIES:
        index.add_category(name)
    x0 = rng.uniform(0, WIDTH - 40, boxes)
    y0 = rng.uniform(0, HEIGHT - 40, boxes)
    size = rng.uniform(10, 40, boxes)
    index.add_observations([
        {"image": int(i % images) + 1, "category": CATEGORIES[i % 3],
         "box": (x0[i], y0[i], x0[i] + size[i], y0[i] + size[i]), "source": "human"}
        for i in range(boxes)
    ])
    return index


def painted() -> None:
    QApplication.processEvents()


def ms(work: Callable[[], object]) -> float:
    """Milliseconds of ``work()`` and of the painting and events it posted."""
    began = time.perf_counter()
    work()
    painted()
    return (time.perf_counter() - began) * 1000


def worst_lateness(while_running: Callable[[], bool], limit_s: float = 120.0) -> float:
    """Run the event loop until ``while_running()`` is false; the worst lateness (ms) of a
    ``TICK_MS`` timer meanwhile: how long the window could not answer."""
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append((now - last[0]) * 1000 - TICK_MS)
        last[0] = now
        if not while_running() or now - started > limit_s:
            loop.quit()

    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    started = time.perf_counter()
    timer.start()
    loop.exec()
    timer.stop()
    return max(gaps, default=0.0)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def plain_layers(viewer: napari.Viewer, index: Index) -> tuple[object, object]:
    """The baseline: the same lazy image stack and every box in one Shapes layer."""
    images = stackable(index)
    plane = {r.id: z for z, r in enumerate(images)}
    cats = {c.id: c for c in index.categories()}
    data, features, edge, face = box_rows(index.observations(), plane, cats)
    image = viewer.add_image(image_stack(index, images), rgb=True, name="plain images")
    shapes = viewer.add_shapes(
        data, shape_type="rectangle", edge_color=edge, face_color=face, features=features,
        text={"string": "{category}", "size": 8, "color": "white"}, name="plain boxes",
        edge_width=2,
    )
    return image, shapes


def rectangle(plane: int, x: float, y: float, size: float = 20.0) -> np.ndarray:
    return np.array([[plane, y, x], [plane, y, x + size], [plane, y + size, x + size],
                     [plane, y + size, x]], float)


def move_first(shapes) -> None:
    """Move the first box 3 px right and down, ending with the data event a drag ends with."""
    moved = shapes.data[0] + [0, 3, 3]
    shapes._data_view.edit(0, moved)
    shapes.refresh()  # as napari does while dragging
    shapes.events.data(value=shapes.data, action="changed", data_indices=(0,),
                       vertex_indices=((),))


def time_edits(viewer: napari.Viewer, shapes, args, rng: random.Random) -> dict:
    """The same actions on both sides: ``--repeats`` slider moves to random images, then on the
    first image that many boxes drawn and the first box moved as often."""
    planes = [rng.randrange(args.images) for _ in range(args.repeats)]
    figures = {"switch_ms": summary([ms(lambda z=z: viewer.dims.set_point(0, z))
                                     for z in planes])}
    viewer.dims.set_point(0, 0)
    painted()
    figures["draw_ms"] = summary([ms(lambda k=k: shapes.add([rectangle(0, 10 + k, 10 + k)]))
                                  for k in range(args.repeats)])
    figures["move_ms"] = summary([ms(lambda: move_first(shapes)) for _ in range(args.repeats)])
    return figures


def measure_ours(viewer: napari.Viewer, folder: Path, args, rng: random.Random) -> dict:
    figures: dict[str, object] = {}
    began = time.perf_counter()
    layers: IndexLayers = open_index(viewer, Index(folder))
    painted()
    figures["open_ms"] = round((time.perf_counter() - began) * 1000, 1)
    layers.active_category = CATEGORIES[0]  # what a drawn box takes
    figures.update(time_edits(viewer, layers.boxes_layer, args, rng))

    shown_image = layers.current_image_id()
    done = threading.Event()

    def complete() -> None:
        index = Index(folder)
        for b in range(args.batches):
            batch = [shown_image] + [rng.randrange(1, args.images + 1) for _ in range(7)]
            index.add_observations([
                {"image": i, "category": CATEGORIES[1], "box": (5 + b, 5 + j, 25 + b, 25 + j),
                 "source": "model", "score": 0.9} for i in batch for j in range(12)])
            time.sleep(0.05)
        index.close()
        done.set()

    writer = threading.Thread(target=complete)
    writer.start()
    figures["complete_stall_ms"] = round(worst_lateness(lambda: not done.is_set()), 1)
    writer.join()
    worst_lateness(lambda: False)  # the last arrivals

    panel = IndexPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Index panel")
    table = panel.table.model()
    worst_lateness(lambda: table.rowCount() < args.images, limit_s=30)
    panel.select_images([shown_image])
    stalls = []
    index = Index(folder)
    for name in (*CATEGORIES, None):
        rows = len(index.images(category=name)) if name else args.images
        combo = panel.category_filter
        combo.setCurrentIndex(combo.findText(name) if name else 0)
        stalls.append(worst_lateness(lambda rows=rows: table.rowCount() != rows, limit_s=30))
    index.close()
    figures["filter_stall_ms"] = summary(stalls)
    viewer.window.remove_dock_widget(panel)
    for layer in list(layers.layers):
        viewer.layers.remove(layer)
    return figures


def measure_plain(viewer: napari.Viewer, folder: Path, args, rng: random.Random) -> dict:
    figures: dict[str, object] = {}
    index = Index(folder)
    began = time.perf_counter()
    _, shapes = plain_layers(viewer, index)
    painted()
    figures["open_ms"] = round((time.perf_counter() - began) * 1000, 1)
    figures.update(time_edits(viewer, shapes, args, rng))
    stalls = []
    for b in range(args.batches):
        planes = [0] + [rng.randrange(args.images) for _ in range(7)]
        batch = [rectangle(z, 5 + b, 5 + j) for z in planes for j in range(12)]
        stalls.append(ms(lambda batch=batch: shapes.add(batch)))
    figures["complete_stall_ms"] = round(max(stalls), 1)
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    index.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--boxes", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--ours-only", action="store_true",
                        help="skip the plain Shapes layer (it takes minutes past 50k boxes)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    began = time.perf_counter()
    folder = Path(tempfile.mkdtemp()) / "index"
    build_index(folder, args.images, args.boxes).close()
    figures: dict[str, object] = {"images": args.images, "boxes": args.boxes,
                                  "build_index_s": round(time.perf_counter() - began, 1)}
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 950)
    painted()
    rng = random.Random(0)
    if args.ours_only:
        figures["ours"] = measure_ours(viewer, folder, args, rng)
        viewer.close()
        print(json.dumps(figures, indent=1))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
        return
    # warm-up: one open of each, then the measured runs in the same window
    measure_plain(viewer, folder, argparse.Namespace(**{**vars(args), "repeats": 2,
                                                        "batches": 1}), rng)
    figures["plain"] = measure_plain(viewer, folder, args, rng)
    figures["ours"] = measure_ours(viewer, folder, args, rng)
    viewer.close()
    plain, ours = figures["plain"], figures["ours"]
    figures["plain_over_ours"] = {
        "open": round(plain["open_ms"] / ours["open_ms"], 1),
        **{key: round(plain[f"{key}_ms"]["median"] / ours[f"{key}_ms"]["median"], 1)
           for key in ("switch", "draw", "move")},
        "complete_stall": round(plain["complete_stall_ms"] / ours["complete_stall_ms"], 1),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
