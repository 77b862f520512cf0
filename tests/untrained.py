"""An untrained model whose output does not depend on torch's version or thread count.

A random-weight detector scores every class about alike, near the 0.05 threshold torchvision
keeps by default: whether it keeps a box then depends on the torch build and the number of
threads. With a score threshold of 0 it keeps every box that survives NMS (hundreds per class),
so it always returns its maximum number of detections and Complete writes exactly its own maximum
per image. Tests that run the real model path use this and compare what was written with what
the model itself predicts.
"""

from __future__ import annotations

import torch

from napari_learn_complete.index import Index
from napari_learn_complete.model.registry import (
    CONFIG_FILE,
    ModelHandle,
    active_model,
    create_model,
)


def untrained_model(index: Index, *, keypoints: bool = False, min_size: int = 128,
                    max_detections: int = 1000, name: str = "default") -> ModelHandle:
    """Create the index's active model, random weights (seed 0), keeping its ``max_detections``
    best detections whatever their score. The threshold is set the way a user does it: in the
    model's ``config.json`` (docs/models.md)."""
    torch.manual_seed(0)
    handle = create_model(index, keypoints=keypoints, weights="none", min_size=min_size,
                          name=name)
    handle.config.inference.score_threshold = 0.0
    handle.config.inference.max_detections = max_detections
    handle.config.save(handle.folder / CONFIG_FILE)
    handle = active_model(index)
    assert handle.config.inference.score_threshold == 0.0, "config.json edit not taken"
    return handle
