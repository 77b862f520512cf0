"""Which training recipe? Compare them on the synthetic sample, from random weights, on the CPU.

Each recipe trains the same randomly initialised Faster R-CNN MobileNetV3 (same seed) for the same
number of epochs on 16 images of the synthetic sample, through the product's own full training
run, and is evaluated on 16 held-out images with COCO box AP. Recipes:

- ``tutorial``: torchvision's detection tutorial: SGD lr 0.005, weight decay 5e-4, learning rate
  x0.1 every 3 epochs, no warm-up, no augmentation.
- ``cosine_flips``: SGD lr 0.02, linear warm-up then cosine decay, random horizontal and vertical
  flips.
- ``defaults``: the model's default TrainingSettings (cosine, warm-up, lr 0.02, flips, scale and
  colour jitter).

Run: ``.venv/bin/python benchmarks/bench_learn_recipe.py [--epochs 30] [--recipes ...]``; the
figures are recorded in docs/learn.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from napari_learn_complete.engine.train import train
from napari_learn_complete.model import Augment, active_model, create_model
from napari_learn_complete.sample import make_sample_index

NO_AUGMENT = Augment(hflip=False, vflip=False, scale_jitter=(1.0, 1.0), color_jitter=0.0)
RECIPES = {
    "tutorial": {"learning_rate": 0.005, "weight_decay": 5e-4, "lr_decay": "step",
                 "warmup_iters": 0, "augment": NO_AUGMENT},
    "cosine_flips": {"learning_rate": 0.02, "lr_decay": "cosine", "warmup_iters": 50,
                     "augment": NO_AUGMENT.replace(hflip=True, vflip=True)},
    "defaults": {},
}


def run(recipe: str, folder: Path, epochs: int, min_size: int, seed: int) -> dict[str, float]:
    """Train one recipe on a fresh sample index; return held-out box AP and the time taken."""
    index = make_sample_index(folder / recipe, n_images=32, labelled=32, seed=seed)
    # the same random initial weights for every recipe
    handle = create_model(index, weights="none", min_size=min_size, seed=seed)
    training = handle.config.training.replace(epochs=epochs, batch_size=4, patience=0,
                                              test_percent=50.0, **RECIPES[recipe])
    handle.config.replace(training=training).save(handle.folder / "config.json")
    result = train(index)  # 16 training images, 16 held out (seeded split)
    assert active_model(index).active_version == result.version
    index.close()
    return {"AP50": result.metrics.get("box_AP50", 0.0), "AP": result.metrics.get("box_AP", 0.0),
            "seconds": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--min-size", type=int, default=128,
                        help="model input size (the sample's images are 96-160 px)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES),
                        default=["tutorial", "cosine_flips"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.epochs} epochs, 16 train / 16 held-out images, min_size {args.min_size}, "
          f"seed {args.seed}, {args.threads} thread(s)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            figures = run(recipe, Path(tmp), args.epochs, args.min_size, args.seed)
            print(f"{recipe:>13}: box AP50 {figures['AP50']:.3f}  AP {figures['AP']:.3f}  "
                  f"({figures['seconds']:.0f} s)", flush=True)
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
