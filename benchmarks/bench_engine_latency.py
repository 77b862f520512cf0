"""First-run and warm-run latency of a one-image Complete through the engine process.

The engine process (engine/process.py) is spawned at napari's first job and then kept warm: torch
imported, the last predictor loaded. This measures what a user waits for a one-image Complete:

- cold: a new engine (process start, torch import, model load, inference, commit);
- warm: the same engine again (inference and commit only), repeated;
- after a Learn: the engine is warm but the model version changed, so the predictor reloads;
- in-process: the same Complete called directly in an interpreter that already has torch and
  the model loaded (the floor the engine's overhead is measured against).

    .venv/bin/python benchmarks/bench_engine_latency.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from napari_learn_complete.engine.jobs import InProcessRunner, Job, PredictorCache, run_job
from napari_learn_complete.engine.process import EngineProcess
from napari_learn_complete.engine.settings import LearnSettings
from napari_learn_complete.sample import make_sample_index


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp()) / "index"
    index = make_sample_index(folder, n_images=12, labelled=6, seed=0)
    path = str(index.path)
    InProcessRunner().run(Job(path, "create_model", {"weights": "none", "min_size": 320}))
    one = Job(path, "complete", {"images": [9], "category": "disc"})

    engine = EngineProcess()
    try:
        cold = timed(lambda: engine.run(one))
        warm = [timed(lambda: engine.run(one)) for _ in range(args.repeats)]
        engine.run(Job(path, "learn", {"images": [1], "settings": LearnSettings(epochs=1)}))
        after_learn = timed(lambda: engine.run(one))
    finally:
        engine.close()
    cache = PredictorCache()
    run_job(one, predictors=cache)  # load torch and the model in this process first
    in_process = [timed(lambda: run_job(one, predictors=cache)) for _ in range(args.repeats)]

    figures = {
        "cold_s": round(cold, 3),
        "warm_median_s": round(statistics.median(warm), 3),
        "after_learn_s": round(after_learn, 3),
        "in_process_median_s": round(statistics.median(in_process), 3),
        "cold_over_warm": round(cold / statistics.median(warm), 1),
        "warm_over_in_process": round(statistics.median(warm) / statistics.median(in_process), 2),
        "repeats": args.repeats,
    }
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
