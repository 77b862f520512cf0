"""How late napari's event loop runs while Learn and Complete work (a real viewer; run under Xvfb).

A 10 ms QTimer samples the Qt event loop's lateness (how much later than asked each tick comes)
in a shown napari window with a sample index open and the Index panel docked: idle (the
baseline), during a Learn started from the panel, and during a Complete of all the index's images
whose boxes stream into the open layers as batches commit. ``--runner engine`` (the default)
runs the jobs in the engine process, as for a user, and this process never imports torch
(checked at the end); ``--runner thread`` is the baseline, the earlier design: the jobs in a
thread worker of napari's own process (torch imported before the window, else it crashes).

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python benchmarks/bench_event_loop.py \
        [--runner engine|thread] [--images 200] [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer

from napari_learn_complete._napari.layers import open_index
from napari_learn_complete._qt.index_panel import IndexPanel
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.sample import make_sample_index

TICK_MS = 10


def sample_lateness(start, until_done) -> list[float]:
    """Run the event loop from ``start()`` until the worker it returns finishes, sampling the
    lateness of a 10 ms timer (ms)."""
    ticks: list[float] = []
    timer = QTimer(interval=TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    timer.start()
    worker = start()
    if worker is None:
        QTimer.singleShot(int(until_done * 1000), loop.quit)  # idle: a fixed time
    else:
        worker.finished.connect(loop.quit)
    loop.exec()
    timer.stop()
    return [max(0.0, (b - a) * 1000 - TICK_MS) for a, b in itertools.pairwise(ticks)]


def summary(late: list[float], seconds: float) -> dict[str, float]:
    arr = np.asarray(late)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 1),
            "p99_ms": round(float(np.percentile(arr, 99)), 1),
            "max_ms": round(float(arr.max()), 1), "ticks": len(late),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runner", choices=("engine", "thread"), default="engine")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.runner == "thread":
        import torchvision.ops  # noqa: F401  (before the canvas: see the docstring)

        from napari_learn_complete.engine.jobs import InProcessRunner
        from napari_learn_complete.session import set_default_runner

        set_default_runner(InProcessRunner())

    viewer = napari.Viewer(show=True)
    index = make_sample_index(Path(tempfile.mkdtemp()) / "index", n_images=args.images,
                              labelled=12, seed=0)
    layers = open_index(viewer, index)
    panel = IndexPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Index panel")
    session = panel.session
    name = session.run(session.create_model(index, weights="none", min_size=320))  # warms up
    config = index.models_dir / name / "config.json"  # keep every detection: a box per image
    data = json.loads(config.read_text())
    data["inference"].update(score_threshold=0.0, max_detections=1000)
    config.write_text(json.dumps(data))

    figures: dict[str, object] = {"runner": args.runner, "images": args.images,
                                  "epochs": args.epochs}
    for phase, start in (
        ("idle", lambda: None),
        ("learn", partial(panel._start, partial(
            session.learn_images, index, list(range(1, 13)), "roi",
            LearnSettings(epochs=args.epochs, mode="full")), panel._learned)),
        ("complete", partial(panel._start, partial(
            session.complete_images, index, [r.id for r in index.images()], "disc", "roi",
            CompleteSettings()), panel._completed)),
    ):
        began = time.perf_counter()
        late = sample_lateness(start, until_done=3.0)
        figures[phase] = summary(late, time.perf_counter() - began)
    sample_lateness(lambda: None, until_done=1.0)  # the last batch reaches the layers
    figures["boxes_in_layer"] = len(layers.boxes_layer.data)
    figures["torch_in_napari_process"] = "torch" in sys.modules
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    viewer.close()


if __name__ == "__main__":
    main()
