"""The Learn & Complete controller: what a run started from the GUI needs, without Qt or napari.

Every entry point (the Index panel's image menu and category cards, the napari layer-list menu,
the command palette, the Model panel, the review and the console) asks a :class:`Session` the
specification's rules, has it capture a :class:`Task` (index, category, kind, images, settings:
fixed when the user confirms, whatever they do next), and runs the task through the session's
runner: in napari the spawned engine process, in tests an in-process runner. Changes the task
commits are announced on the captured index, so the layers showing it follow live. The session
remembers the last Complete or accept for Undo, including a cancelled or failed Complete.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .actions import Availability, category_action_availability, image_action_availability
from .engine.jobs import MODEL_OPERATIONS, Job, Runner
from .engine.progress import CancelFn, ProgressFn
from .engine.ray_runner import RayEngine
from .engine.results import CompleteResult, Proposal
from .engine.settings import CompleteSettings, LearnSettings
from .errors import EngineError, RefusedError
from .index import KIND_TITLES, Change, Index

UNDOABLE = ("complete",)  # operations whose run Undo can take back (plus accept, run here)


@dataclass
class Task:
    """A run decided and captured: it writes to ``index`` (and ``category``) whatever the user
    does meanwhile. ``runs`` lists the index runs it started, as they start."""

    title: str
    index: Index
    job: Job
    kind: str | None = None
    category: str | None = None
    runs: list[int] = field(default_factory=list)


class Session:
    """One viewer's controller (see the module docstring). ``runner`` None: the shared engine
    process, started at the first job."""

    def __init__(self, runner: Runner | None = None) -> None:
        self._runner = runner
        self.last_run: tuple[Index, int] | None = None  # (index, run id) that Undo takes back

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = default_runner()
        return self._runner

    # ------------------------------------------------------------------- rules
    @staticmethod
    def image_availability(index: Index | None, image_ids: Sequence[int], kind: str,
                           category: str | None, *, action: str) -> Availability:
        """``action`` ('learn' or 'complete') on selected images: the specification's
        conditions (Learn without a model: available, it offers to create one)."""
        if index is None:
            return Availability(False, "Open an index first")
        return image_action_availability(index, image_ids, kind, category, action=action)

    @staticmethod
    def category_availability(index: Index | None, category: str, kind: str, *,
                              action: str) -> Availability:
        """``action`` of ``kind`` from a category card: the category has an observation and
        ``kind`` switched on, and the model's part as for images."""
        if index is None:
            return Availability(False, "Open an index first")
        return category_action_availability(index, category, kind, action=action)

    # ------------------------------------------------------------------- tasks
    @staticmethod
    def task(title: str, index: Index, operation: str, args: dict[str, Any],
             kind: str | None = None, category: str | None = None) -> Task:
        """A task of any operation; one that runs the model is refused now when the index has
        no active model (before a dialog's job starts)."""
        if operation in MODEL_OPERATIONS:
            from .model.registry import active_model

            active_model(index)
        return Task(title, index, Job(str(index.path), operation, args), kind, category)

    def learn_images(self, index: Index, image_ids: Sequence[int], kind: str,
                     settings: LearnSettings | None = None) -> Task:
        return self.task(f"Learn ({KIND_TITLES[kind]})", index, "learn", {
            "images": list(image_ids), "kind": kind, "settings": settings or LearnSettings(),
        }, kind)

    def learn_category(self, index: Index, category: str, kind: str,
                       settings: LearnSettings | None = None) -> Task:
        return self._category_task(f"Learn ({category})", index, "learn", category, kind,
                                   settings or LearnSettings())

    def complete_images(self, index: Index, image_ids: Sequence[int], category: str | None,
                        kind: str, settings: CompleteSettings | None = None, *,
                        engine: RayEngine | None = None) -> Task:
        """Complete from images; ``engine``: the model on Ray workers, written here."""
        if category is None:
            raise RefusedError("Choose an active category first: Complete writes into it")
        return self.task(f"Complete ({KIND_TITLES[kind]} → {category}){_on_ray(engine)}", index,
                         "complete", {
                             "images": list(image_ids), "category": category, "kind": kind,
                             "settings": settings or CompleteSettings(), **engine_args(engine),
                         }, kind, category)

    def complete_category(self, index: Index, category: str, kind: str,
                          settings: CompleteSettings | None = None, *,
                          engine: RayEngine | None = None) -> Task:
        """Complete from a category: proposals (boxes or keypoints: ``kind``) for review,
        nothing saved; ``engine`` as for :meth:`complete_images`."""
        return self._category_task(f"Complete from category {category!r}{_on_ray(engine)}", index,
                                   "propose", category, kind, settings or CompleteSettings(),
                                   **engine_args(engine))

    def _category_task(self, title: str, index: Index, operation: str, category: str,
                       kind: str, settings: LearnSettings | CompleteSettings,
                       **args: Any) -> Task:
        """A task on a whole category, of the kind the user chose in its card's menu."""
        return self.task(title, index, operation, {
            "category": category, "kind": kind, "settings": settings, **args}, kind, category)

    def train(self, index: Index) -> Task:
        return self.task("Full training", index, "train", {})

    def create_model(self, index: Index, **options: Any) -> Task:
        return self.task(f"Create model {options.get('name', 'default')!r}", index,
                          "create_model", options)

    def rollback(self, index: Index, model: str, number: int) -> Task:
        return self.task(f"Roll back {model!r} to version {number}", index, "rollback",
                          {"model": model, "number": number})

    # --------------------------------------------------------------------- run
    def run(self, task: Task, *, progress: ProgressFn | None = None,
            cancel: CancelFn | None = None) -> Any:
        """Run ``task`` to its end in this thread (from napari: a thread worker). Its committed
        changes reach the listeners of ``task.index`` as they commit."""

        def changed(change: Change) -> None:
            if change.table == "runs" and change.action == "added":
                task.runs.extend(change.ids)
            task.index.announce(change)

        try:
            return self.runner.run(task.job, progress=progress, cancel=cancel, changed=changed)
        except EngineError:
            # the engine died: changes it committed but could not report yet are read back
            ids = {i for run_id in task.runs for i in task.index.runs.observation_ids(run_id)}
            if ids:
                task.index.announce(Change("observations", "updated", tuple(sorted(ids))))
            raise
        finally:
            if task.job.operation in UNDOABLE and task.runs:  # done, cancelled or failed
                self.last_run = (task.index, task.runs[-1])

    def accept(self, index: Index, proposals: Sequence[Proposal], *,
               min_score: float | None = None) -> CompleteResult:
        """Save reviewed proposals (no torch: runs here, at once) and remember it for Undo."""
        from .engine.proposals import accept

        result = accept(index, proposals, min_score=min_score)
        self.last_run = (index, result.run_id)
        return result

    @property
    def can_undo(self) -> bool:
        return self.last_run is not None

    def undo_last(self) -> int:
        """Put back what the last Complete or accept of this session changed; returns how many
        observations were removed or restored. Refused when there is nothing to undo."""
        if self.last_run is None:
            raise RefusedError("nothing to undo: no Complete or accept was run here")
        index, run_id = self.last_run
        count = index.runs.undo(run_id)
        self.last_run = None
        return count


_sessions: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()
def engine_args(engine: RayEngine | None) -> dict[str, Any]:
    """A Complete or propose job's ``engine`` arg, left out for this machine's model (the
    runner's warm predictor)."""
    return {} if engine is None else {"engine": engine}


def _on_ray(engine: RayEngine | None) -> str:
    """A task title's note of where its model runs."""
    return "" if engine is None else f" on Ray ({engine.workers} worker(s))"


_default_runner: Runner | None = None


def session_for(owner: Any) -> Session:
    """The session of ``owner`` (a napari viewer), made on first use."""
    if owner not in _sessions:
        _sessions[owner] = Session()
    return _sessions[owner]


def default_runner() -> Runner:
    """The runner new sessions use: the shared engine process unless one was set."""
    if _default_runner is not None:
        return _default_runner
    from .engine.process import shared_engine

    return shared_engine()


def set_default_runner(runner: Runner | None) -> None:
    """Make new sessions run their jobs on ``runner`` (None: the engine process again)."""
    global _default_runner
    _default_runner = runner

