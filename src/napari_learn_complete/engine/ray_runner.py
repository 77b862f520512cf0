"""Complete and propose on Ray Data: the model runs on a pool of workers (one machine's cores or
a cluster's GPUs), this process writes what they find.

A :class:`RaySource` is a :class:`~.complete.Source`: Complete and propose take their detections
from it and write them by the same rules, batch by batch, as from the local model, so the index
keeps one writer and one run record (undo, cancel and the run journal are Complete's own).

- **Pinned model.** The active model is loaded here when the source is made (the job's
  submission) and its weights, as loaded (new categories' rows included), go to the workers
  through Ray's object store: a Learn, a rollback or a replaced weight file afterwards changes
  nothing the workers run.
- **Workers** are an actor pool of :class:`ModelWorker` (``map_batches``): each builds the model
  once, then reads its batches of images from their paths (they must see the index's image
  folders) and returns plain detections (JSON text), never touching the index.
- **Failures.** A worker that dies is restarted and its in-flight batch run again
  (``max_restarts``, ``max_task_retries``); the batches already written are not.
- **Where.** ``ray.init()`` starts a local Ray (the machine's cores) unless ``address`` or
  ``RAY_ADDRESS`` names a cluster; a Ray already started in this process is used as it is.

Ray is an optional extra (``pip install "napari-learn-complete[ray]"``): it is imported here
only, when a source is made; torch only by the workers and the pinning. Importing this module
imports neither, so napari's process makes a :class:`RayEngine` for its job.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, RefusedError
from ..index import Category, ImageRecord, Index, media
from .complete import Batches
from .detections import Detection
from .progress import CancelFn, check_cancel

INSTALL = 'pip install "napari-learn-complete[ray]"'
RETRIES = 3  # restarts of a dead worker, and runs of the batch it held, before the job fails


@dataclass(frozen=True)
class RayEngine:
    """Run a Complete or propose job's model on Ray (the ``engine`` arg of its job): a local Ray
    unless ``address`` (or ``RAY_ADDRESS``) names a cluster, ``workers`` actors each holding the
    model, with ``gpus_per_worker`` GPUs each (0: on CPUs; None: one when the cluster has GPUs,
    else CPUs). Plain data: napari's process makes it without importing Ray."""

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BadInputError(f"the Ray engine needs at least 1 worker, not {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise BadInputError(
                f"GPUs per worker must be 0 or more, not {self.gpus_per_worker:g}")

    def worker_gpus(self, cluster_gpus: float) -> float:
        """GPUs per worker on a cluster with ``cluster_gpus`` in all: as asked, or (None) one
        GPU per actor when the cluster has any, CPU actors otherwise."""
        if self.gpus_per_worker is not None:
            return self.gpus_per_worker
        return 1.0 if cluster_gpus >= 1 else 0.0


def ray_installed() -> bool:
    """Whether the Ray extra is installed, found without importing Ray: napari's process asks
    to offer the engine, and must not load it."""
    return importlib.util.find_spec("ray") is not None


def import_ray() -> Any:
    """The ``ray`` module, or a refusal that says how to install it."""
    try:
        import ray
        import ray.data  # the extra installs it; ray alone lacks pandas and arrow
    except ImportError as exc:
        raise RefusedError(
            f"Ray is not installed ({exc}) and the Ray engine needs it; install it with: "
            f"{INSTALL}"
        ) from exc
    return ray


def encode(detections: Sequence[Detection]) -> str:
    """A worker's detections of one image as JSON (floats round-trip exactly)."""
    return json.dumps([[d.category, d.box, d.score, d.keypoints] for d in detections])


def decode(text: str) -> list[Detection]:
    return [Detection(category, tuple(box), score,
                      None if kps is None else tuple(tuple(k) for k in kps))
            for category, box, score, kps in json.loads(text)]


class ModelWorker:
    """One actor of the pool: the pinned model, built once, predicting batches of image rows
    (``id``, ``path``, ``media``, ``frame``) into rows (``id``, ``detections`` as JSON)."""

    def __init__(self, weights: Any, config: Any, categories: list[Category],
                 model_version: str, model_id: int | None, device: str) -> None:
        """``weights``: the object reference of the pinned state dict's bytes (``ray.put``)."""
        import ray
        import torch

        from ..model.build import build_model, place
        from .predict import Predictor

        model = build_model(config)  # random rows, replaced by the pinned state whole
        model.load_state_dict(torch.load(io.BytesIO(ray.get(weights)), map_location="cpu",
                                         weights_only=True))
        self.predictor = Predictor(place(model, device), config, categories, device=device,
                                   model_version=model_version, model_id=model_id)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each row's detections, or for an image that cannot be read, the reason (``error``):
        Ray would pass the driver the text of a traceback, not the error."""
        arrays, errors = [], []
        for path, kind, frame in zip(batch["path"], batch["media"], batch["frame"], strict=True):
            try:
                arrays.append(media.to_rgb_uint8(media.read_stored(
                    Path(str(path)), str(kind), None if frame < 0 else int(frame),
                    fit=self.predictor.fit)))
                errors.append("")
            except BadInputError as exc:
                errors.append(str(exc))
        found = iter(self.predictor.predict(arrays) if arrays else [])
        return {"id": batch["id"], "error": np.array(errors),
                "detections": np.array(["" if error else encode(next(found))
                                        for error in errors])}


class RaySource:
    """Detections from a Ray actor pool (see the module docstring); made when the job is
    submitted, which pins the active model of ``index`` at its active version."""

    def __init__(self, index: Index, engine: RayEngine, *, worker: type = ModelWorker) -> None:
        self.ray = import_ray()
        import torch

        from .predict import Predictor

        self.engine, self.worker = engine, worker
        predictor = Predictor.from_index(index, "cpu")
        self.model_id, self.model_version = predictor.model_id, predictor.model_version
        self._config, self._categories = predictor.config, index.categories()
        self._check = predictor.check
        buffer = io.BytesIO()
        torch.save(predictor.model.state_dict(), buffer)
        self.weights = buffer.getvalue()  # the pinned version, whatever the file becomes

    def check(self, kind: str, category: Category) -> None:
        self._check(kind, category)

    def _connect(self) -> bool:
        """Start or join Ray unless this process already has; True when it was started here
        (and is to be shut down after the run)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        address = self.engine.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:  # a local Ray with a core per worker at least, so every actor is scheduled
            ray.init(num_cpus=max(os.cpu_count() or 1, self.engine.workers),
                     include_dashboard=False, log_to_driver=False)
        return True

    def _dataset(self, ray: Any, rows: list[dict], batch_size: int, weights: Any) -> Any:
        """One block per batch, so a lost worker costs its batch and no more."""
        gpus = self.engine.worker_gpus(ray.cluster_resources().get("GPU", 0))
        return ray.data.from_items(
            rows, override_num_blocks=math.ceil(len(rows) / batch_size),
        ).map_batches(
            self.worker, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.engine.workers),
            fn_constructor_kwargs={
                "weights": weights, "config": self._config, "categories": self._categories,
                "model_version": self.model_version, "model_id": self.model_id,
                "device": "cuda" if gpus else "cpu",
            },
            num_cpus=1, num_gpus=gpus or None,
            # deprecated as loose arguments (Ray 2.60) but without a named replacement; Ray
            # Data's default is to retry a dying worker's batch for ever
            max_restarts=RETRIES, max_task_retries=RETRIES,
        )

    def predictions(self, index: Index, images: Sequence[ImageRecord], batch_size: int, *,
                    cancel: CancelFn | None = None) -> Batches:
        """Batches of ``batch_size`` images in the order the workers finish them; ``cancel`` is
        checked after each. Closing the stream stops the pool (and a Ray started here)."""
        if not images:
            return
        ray = self.ray
        started = self._connect()
        by_id = {image.id: image for image in images}
        rows = [{"id": image.id, "path": str(index.resolve(image)), "media": image.media,
                 "frame": -1 if image.frame is None else image.frame} for image in images]
        batches = None
        try:
            weights = ray.put(self.weights)  # held by this frame until the stream ends
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
                dataset = self._dataset(ray, rows, batch_size, weights)
            batches = iter(dataset.iter_batches(batch_size=batch_size, batch_format="numpy",
                                                prefetch_batches=1))  # a generator: close()
            for batch in batches:
                check_cancel(cancel)
                if error := next((str(e) for e in batch["error"] if e), None):
                    raise BadInputError(error)  # as the local stream raises a read error
                yield ([by_id[int(i)] for i in batch["id"]],
                       [decode(text) for text in batch["detections"]])
        finally:
            if batches is not None:
                batches.close()  # shuts the pool down now, not when collected
            if started:
                ray.shutdown()

