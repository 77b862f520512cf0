"""Jobs and runners: long work described as plain data, run here or in another process.

A :class:`Job` names an index folder, an operation and its arguments; nothing in it needs torch or
an open connection, so it crosses a process boundary (the engine process napari uses). A
:class:`Runner` takes a job and returns its result, streaming progress and the changes the job
commits to the index. :class:`InProcessRunner` runs it in the calling thread (the CLI, scripts,
tests); :class:`~napari_learn_complete.engine.process.EngineProcess` runs it in a spawned engine
process (napari). A Complete or propose job whose args hold ``engine=``
:class:`~.ray_runner.RayEngine` runs its model on Ray workers (:mod:`.ray_runner`), wherever the
job itself runs; it is still written there. This module imports neither torch nor Ray: the
operations are imported when a job runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadInputError, RefusedError, storage_error
from ..index import Change, Index
from .detections import PredictionCache
from .progress import CancelFn, Progress, ProgressFn, check_cancel, report

ChangeFn = Callable[[Change], None]

# operation -> "module:function" taking (index, **args); imported only when a job runs
OPERATIONS: dict[str, str] = {
    "learn": "napari_learn_complete.engine.train:learn",
    "train": "napari_learn_complete.engine.train:train",
    "complete": "napari_learn_complete.engine.complete:complete",
    "propose": "napari_learn_complete.engine.proposals:propose",
    "create_model": "napari_learn_complete.engine.jobs:create_model",
    "rollback": "napari_learn_complete.engine.jobs:rollback",
}
# operations that run the active model: they report progress and can be cancelled
MODEL_OPERATIONS = ("learn", "train", "complete", "propose")
PREDICTING = ("complete", "propose")  # of those, the ones that take a warm ``predictor``
# operations that report progress and can be cancelled (creating a model may download weights)
REPORTING = (*MODEL_OPERATIONS, "create_model")


@dataclass(frozen=True)
class Job:
    """One operation on one index: ``args`` are the operation's keyword arguments, plain data
    (ids, names, the pydantic settings models) that pickle without torch."""

    index: str
    operation: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise BadInputError(
                f"unknown operation {self.operation!r}; one of {', '.join(OPERATIONS)}"
            )


class Runner(Protocol):
    """Runs a job to its end in the calling thread and returns the operation's result.

    ``progress`` hears the operation's reports, ``cancel()`` is polled to stop it (it then raises
    :class:`~napari_learn_complete.errors.Cancelled`), ``changed`` hears every change the job
    committed to the index, after the commit. Errors are raised as the operation raised them
    (an :class:`~napari_learn_complete.errors.EngineError` when the engine itself failed).
    """

    def run(self, job: Job, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
            changed: ChangeFn | None = None) -> Any: ...

    def close(self) -> None: ...


def create_model(index: Index, *, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, **kwargs: Any) -> str:
    """The ``create_model`` operation: returns the new model's name (a handle holds the index).
    A download of pretrained weights is reported as the ``download`` stage, in bytes."""
    from ..model.registry import create_model as create

    def downloaded(done: int, total: int, what: str) -> None:
        report(progress, Progress("download", done, total, what))
        check_cancel(cancel)

    return create(index, download=downloaded, **kwargs).name


def rollback(index: Index, *, model: str, number: int) -> int:
    """The ``rollback`` operation on the named model (reading a weight file needs torch)."""
    from ..model.registry import models

    handle = next((m for m in models(index) if m.name == model), None)
    if handle is None:
        raise BadInputError(f"the index has no model named {model!r}")
    handle.rollback(number)
    return number


class PredictorCache:
    """Keeps the last loaded predictor and its :class:`~.detections.PredictionCache`, so Complete
    after Complete (or propose) on the same model version skips building and loading the model,
    and on images it already predicted, the model itself. One predictor at a time, to bound
    memory; a new one (another index, model, version, device, an edited configuration such as its
    score threshold, NMS or maximum detections, or changed categories) starts with no
    predictions."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._predictor: Any = None
        self.predictions = PredictionCache()

    def get(self, index: Index, device: str | None) -> Any:
        from ..model.registry import active_model
        from .predict import Predictor

        handle = active_model(index)
        key = (str(index.path), handle.id, handle.active_version, device,
               handle.config.model_dump_json(),
               tuple((c.name, c.keypoints_enabled, tuple(c.keypoint_names))
                     for c in index.categories()))
        if key != self._key:
            self.clear()  # free the old model and its predictions before loading
            self._predictor = Predictor.from_index(index, device)
            self._key = key
        return self._predictor

    def clear(self) -> None:
        self._key, self._predictor = None, None
        self.predictions.clear()


def run_job(job: Job, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
            changed: ChangeFn | None = None, predictors: PredictorCache | None = None) -> Any:
    """Open the job's index, run its operation, and relay the index's changes to ``changed``.
    A full disk (or quota, or read-only file system) is raised as the
    :class:`~napari_learn_complete.errors.BadInputError` naming it."""
    module, name = OPERATIONS[job.operation].split(":")
    operation = getattr(importlib.import_module(module), name)
    index = Index(job.index)
    unsubscribe = index.subscribe(changed) if changed is not None else None
    try:
        kwargs = dict(job.args)
        if job.operation in REPORTING:
            kwargs.update(progress=progress, cancel=cancel)
        engine = kwargs.pop("engine", None)
        if engine is not None:
            if job.operation not in PREDICTING:
                raise RefusedError(f"{job.operation} runs here only: the Ray engine runs "
                                   f"{' and '.join(PREDICTING)}")
            from .ray_runner import RaySource

            kwargs["source"] = RaySource(index, engine)  # pins the model version now
        elif predictors is not None and job.operation in PREDICTING:
            kwargs["predictor"] = predictors.get(index, kwargs.get("device"))
            kwargs["cache"] = predictors.predictions
        return operation(index, **kwargs)
    except Exception as exc:
        storage = storage_error(exc, job.index)  # a full disk is the user's to act on
        if storage is None:
            raise
        raise storage from exc
    finally:
        if unsubscribe is not None:
            unsubscribe()
        index.close()


class InProcessRunner:
    """Runs jobs in the calling thread of this process (the CLI, scripts, tests)."""

    def run(self, job: Job, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
            changed: ChangeFn | None = None) -> Any:
        return run_job(job, progress=progress, cancel=cancel, changed=changed)

    def close(self) -> None:
        """Nothing to stop."""
