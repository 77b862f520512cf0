"""Complete's throughput on Ray workers against the local engine, and the single writer's rate.

- ``local``: Complete in this process (torch's threads, images decoded by 4 threads);
- ``ray_N``: the same Complete with the model on N Ray CPU workers of a local Ray (started once,
  before the timings; each run pays its workers' start: importing torch, building the model);
  ``steady`` counts from the first batch written to the last, without that start;
- ``writer``: the driver alone: Complete with a source that returns ``--boxes`` ready detections
  per image at once, so only the write rules and the per-batch transactions are timed (rows =
  observations written).

    .venv/bin/python benchmarks/bench_scale.py [--images 48] [--workers 1 2 4]
        [--writer-images 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _report import emit, say
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.progress import Progress
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.index import Category, ImageRecord, Index
from napari_learn_complete.model import create_model
from napari_learn_complete.sample import make_sample_index

SIZE = (256, 320)  # image sides: about what the default model (320 px) reads


class ReadySource:
    """A :class:`~napari_learn_complete.engine.complete.Source` whose detections cost nothing:
    ``boxes`` (at most 100) disjoint 5 px boxes on a grid of 6 px, inside a 64 px image, so none
    is a duplicate of another."""

    model_id = None
    model_version = "ready:v1"

    def __init__(self, boxes: int) -> None:
        corners = [(6.0 * (i % 10), 6.0 * (i // 10)) for i in range(boxes)]
        self.detections = [Detection("disc", (x, y, x + 5, y + 5), 0.9) for x, y in corners]

    def check(self, kind: str, category: Category) -> None:
        """Every kind, every category."""

    def predictions(self, index: Index, images: Sequence[ImageRecord], batch_size: int, *,
                    cancel=None):
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            yield chunk, [self.detections] * len(chunk)


def timed_complete(index: Index, settings: CompleteSettings, **kwargs) -> dict[str, float]:
    """Seconds and images per second of one Complete of every image, from the call and from
    its first batch (undone afterwards)."""
    first: list[float] = []

    def heard(event: Progress) -> None:
        if not first:
            first.append(time.perf_counter())

    images = index.images()
    start = time.perf_counter()
    result = complete(index, images, "disc", settings=settings, progress=heard, **kwargs)
    end = time.perf_counter()
    index.runs.undo(result.run_id)
    steady = len(images) - settings.batch_size
    return {"seconds": round(end - start, 2),
            "images_per_s": round(len(images) / (end - start), 2),
            "steady_images_per_s": round(steady / (end - first[0]), 2) if steady > 0 else None,
            "written": result.written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--writer-images", type=int, default=1000)
    parser.add_argument("--boxes", type=int, default=10, choices=range(1, 101), metavar="1-100",
                        help="detections per image (writer)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    figures: dict[str, object] = {"images": args.images, "batch_size": args.batch_size}

    say(f"writer: {args.writer_images} images x {args.boxes} boxes")
    small = make_sample_index(folder / "writer", n_images=args.writer_images, labelled=0,
                              size_range=(64, 64))
    settings = CompleteSettings(max_detections=args.boxes, batch_size=32)
    timing = timed_complete(small, settings, source=ReadySource(args.boxes))
    figures["writer"] = {**timing, "batch_size": settings.batch_size,
                         "rows_per_s": round(timing["written"] / timing["seconds"])}
    say(f"  {figures['writer']}")

    index = make_sample_index(folder / "index", n_images=args.images, labelled=0,
                              size_range=SIZE)
    create_model(index, weights="none")  # 320 px MobileNetV3 FPN, random weights
    settings = CompleteSettings(batch_size=args.batch_size)
    say("local engine")
    figures["local"] = timed_complete(index, settings, device="cpu")
    say(f"  {figures['local']}")

    import ray

    from napari_learn_complete.engine.ray_runner import RayEngine, RaySource

    start = time.perf_counter()
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    figures["ray_start_s"] = round(time.perf_counter() - start, 2)
    try:
        for workers in args.workers:
            say(f"ray, {workers} worker(s)")
            source = RaySource(index, RayEngine(workers=workers))
            figures[f"ray_{workers}"] = timed_complete(index, settings, source=source)
            say(f"  {figures[f'ray_{workers}']}")
    finally:
        ray.shutdown()
    emit(figures, args.json)


if __name__ == "__main__":
    main()
