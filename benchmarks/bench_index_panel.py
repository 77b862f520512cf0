"""How the Index panel's image table scales: opening a large index, and a Complete batch's change.

Builds an index of ``--images`` tiny images (one 8x8 PNG referenced under many names, so it takes
seconds), a box on ``--labelled`` of them, opens it in a shown napari viewer, docks the Index panel
(``open_panel``: the panel made, its table filled and first painted), selects a few hundred rows,
then commits ``--batches`` batches of boxes on ``--batch-images`` images each, as a Complete run
does. For each batch, once the layers have drawn it (their work is bench_event_loop.py's), it
times what the panel then does:

- ``read``: the panel's queries after a change (counts, attributes, filters), which run in its
  reader thread, off the event loop;
- ``incremental``: the event-loop work, the panel as it is: the reading shown, changed count
  cells only (``dataChanged``), then the repaint and column fit Qt does next
  (``incremental_handler``: without those);
- ``reset``: the baseline, the event-loop work of a table rebuilt on every change: the same
  queries and every row re-read on the event loop, a model reset (the selection lost), the
  repaint (``reset_handler``: without it);
- ``image_added``: the event-loop work of one image added (a row inserted, selection kept);
- ``repaint_floor``: the repaint of one changed label of the panel: what any visible change
  costs in this window (large under Xvfb and Mesa, which draw the window in software).

Run under Xvfb (numbers from a shared machine vary: compare ``incremental`` with ``reset`` of
one run; ``reset_over_incremental`` is their ratio):

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python benchmarks/bench_index_panel.py \
        [--images 20000] [--labelled 5000] [--batches 20] [--batch-images 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_learn_complete._napari.layers import open_index
from napari_learn_complete._qt.index_panel import IndexPanel, Reading
from napari_learn_complete.index import Index

SETTLE_S = 0.4  # longer than the layers' own gathering of changes


def build_index(folder: Path, images: int, labelled: int) -> Index:
    """An index of ``images`` references to one 8x8 PNG, three categories, a box on the first
    ``labelled`` images."""
    index = Index.create(folder)
    pixel_file = folder / "tiny.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(pixel_file)
    index.add_images([pixel_file] * images, names=[f"img_{i:06d}.png" for i in range(images)],
                     probed=[(8, 8, 3)] * images)
    for name in ("disc", "square"):
        index.add_category(name)
    index.add_category("triangle", keypoints=["apex", "left", "right"])
    index.add_observations([
        {"image": image_id, "category": "disc", "box": (1, 1, 6, 6), "source": "human"}
        for image_id in range(1, labelled + 1)
    ])
    return index


def settle(seconds: float = SETTLE_S) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.005)


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """Milliseconds of ``work()``, and of it plus the events it posted (repaint, column fit)."""
    began = time.perf_counter()
    work()
    done = time.perf_counter()
    QApplication.processEvents()
    return (done - began) * 1000, (time.perf_counter() - began) * 1000


def reading(panel: IndexPanel, *, images: bool = False) -> Reading:
    """What the panel's reader thread reads after a change (``images``: some were added)."""
    return Reading.of(panel.index, panel._filters(), images=images)


def full_reset(panel: IndexPanel) -> None:
    """The baseline: read on the event loop, every row re-read, the model reset."""
    read = reading(panel)
    panel.image_model.reset(panel.index.images())
    panel._show(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--labelled", type=int, default=5_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-images", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    began = time.perf_counter()
    index = build_index(Path(tempfile.mkdtemp()) / "index", args.images, args.labelled)
    figures: dict[str, object] = {"images": args.images, "observations": args.labelled,
                                  "build_index_s": round(time.perf_counter() - began, 1)}
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    began = time.perf_counter()
    open_index(viewer, index)
    settle()
    figures["open_layers_s"] = round(time.perf_counter() - began, 2)

    panel: IndexPanel | None = None

    def dock() -> None:
        nonlocal panel
        panel = IndexPanel(viewer)
        viewer.window.add_dock_widget(panel, name="Index panel")

    figures["open_panel_ms"] = round(timed(dock)[1], 1)
    assert panel is not None and panel.table.model().rowCount() == args.images
    settle()
    selected = list(range(1, args.images + 1, max(1, args.images // 300)))
    panel.select_images(selected)

    unlabelled = iter(range(args.labelled + 1, args.images + 1))
    samples: dict[str, list[float]] = {name: [] for name in (
        "read", "incremental_handler", "incremental", "reset_handler", "reset", "repaint_floor"
    )}
    for batch_number in range(args.batches):
        for name in ("incremental", "reset"):
            batch = [next(unlabelled) for _ in range(args.batch_images)]
            index.add_observations([{"image": i, "category": "square", "box": (2, 2, 7, 7),
                                     "source": "model", "score": 0.9} for i in batch])
            QApplication.processEvents()  # the change reaches the panel (a queued signal)...
            panel._refresh_timer.stop()  # ...which waits; the layers and the canvas go first
            panel._pending.clear()
            settle()
            if name == "incremental":
                began = time.perf_counter()
                read = reading(panel)
                samples["read"].append((time.perf_counter() - began) * 1000)
                handler, total = timed(lambda read=read: panel._show(read))
            else:
                handler, total = timed(lambda: full_reset(panel))
            samples[f"{name}_handler"].append(handler)
            samples[name].append(total)
            settle()
            panel.select_images(selected)  # the reset lost it: each sample starts alike
        samples["repaint_floor"].append(
            timed(lambda n=batch_number: panel.status.setText(f"batch {n}"))[1]
        )
        settle()
    index.add_images([index.path / "tiny.png"], names=["added.png"], probed=[(8, 8, 3)])
    QApplication.processEvents()
    panel._refresh_timer.stop()
    panel._pending.clear()
    settle()
    added = reading(panel, images=True)
    figures["image_added_ms"] = round(timed(lambda: panel._show(added))[1], 1)
    assert panel.table.model().rowCount() == args.images + 1
    for name, values in samples.items():
        figures[f"{name}_ms"] = {"median": round(statistics.median(values), 2),
                                 "max": round(max(values), 2)}
    viewer.close()
    figures["reset_over_incremental"] = round(
        statistics.median(samples["reset"]) / statistics.median(samples["incremental"]), 1
    )
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
