"""Peak memory of Complete for a small and a large image set: it must not grow with the count.

Each size runs in a fresh process (peak RSS is per process) on its own copy of one synthetic
index. Reported: peak RSS of the process, and the tracemalloc peak (Python and NumPy allocations)
during ``complete()`` alone. With ``--real-model`` the index's untrained Faster R-CNN runs (slow on
a CPU); by default a stand-in detector answers at once, so the figures measure the streaming,
batching and per-batch writing of Complete itself.

    .venv/bin/python benchmarks/bench_complete_memory.py [--sizes 50 400] [--real-model]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class CentreDetector:
    """Answers one square in the middle of every image, without a model."""

    model_id = None
    model_version = "bench:v1"

    def check(self, kind: str, category: object) -> None:
        return None

    def predict(self, images: Sequence[np.ndarray]) -> list:
        from napari_learn_complete.engine.detections import Detection

        return [[Detection("square", (a.shape[1] / 4, a.shape[0] / 4, a.shape[1] / 2,
                                      a.shape[0] / 2), 0.9)] for a in images]


def run_one(folder: Path, count: int, real_model: bool) -> dict:
    from napari_learn_complete.engine.complete import complete
    from napari_learn_complete.engine.predict import Predictor
    from napari_learn_complete.engine.settings import CompleteSettings
    from napari_learn_complete.index import Index

    index = Index(folder)
    images = index.images()[:count]
    predictor = Predictor.from_index(index, "cpu") if real_model else CentreDetector()
    if real_model:
        predictor.model.roi_heads.detections_per_img = 10
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    result = complete(index, images, "square", settings=CompleteSettings(batch_size=4),
                      predictor=predictor)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "images": count, "written": result.written, "seconds": round(seconds, 2),
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tracemalloc_peak_mib": round(traced_peak / 2**20, 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(50, 400))
    parser.add_argument("--real-model", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.folder, args.one, args.real_model)))
        return

    from napari_learn_complete.model import create_model
    from napari_learn_complete.sample import make_sample_index

    work = Path(tempfile.mkdtemp(prefix="bench-complete-"))
    try:
        base = make_sample_index(work / "base", n_images=max(args.sizes), labelled=0,
                                 size_range=(96, 160))
        if args.real_model:
            create_model(base, weights="none", min_size=128)
        base.close()
        results = []
        for count in args.sizes:
            folder = work / f"run{count}"
            shutil.copytree(work / "base", folder)
            command = [sys.executable, __file__, "--one", str(count), "--folder", str(folder)]
            if args.real_model:
                command.append("--real-model")
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(results[-1]))
        small, large = results
        print(f"images x{large['images'] / small['images']:g}: peak RSS "
              f"x{large['rss_peak_mib'] / small['rss_peak_mib']:.2f}, tracemalloc peak "
              f"x{large['tracemalloc_peak_mib'] / small['tracemalloc_peak_mib']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
