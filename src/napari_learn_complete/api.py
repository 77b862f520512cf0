"""Learn & Complete from napari's console or a script.

Every function takes a *target*: a napari ``Viewer`` (the index open in it, or the one named by
``index=``), an :class:`~napari_learn_complete.index.Index`, or the path of an index folder. They
are thin wrappers over the engine, so the console, the widgets and the CLI do the same thing.

This module imports neither Qt, napari nor torch when it is imported. Learn, train, Complete and
propose are jobs (:mod:`.engine.jobs`): in a script they run in this process; inside napari (a
viewer as target, or any target while a viewer is open, as in napari's console) they run in the
engine process, since napari's process must never load torch, and the layers follow their
results. The calls return when the job ends; from napari's console they block the window until
then (use the menus for long runs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

from .engine.jobs import InProcessRunner, Runner
from .engine.progress import CancelFn, ProgressFn
from .engine.ray_runner import RayEngine
from .engine.results import CompleteResult, Proposal, TrainResult
from .engine.settings import CompleteSettings, LearnSettings
from .errors import BadInputError, RefusedError
from .index import ImageRecord, Index
from .session import Session, default_runner, engine_args, session_for

if TYPE_CHECKING:
    import napari

    from ._napari.layers import IndexLayers

Target = Union["napari.Viewer", Index, str, os.PathLike]
Images = str | int | ImageRecord | Iterable[str | int | ImageRecord]
_S = TypeVar("_S")

__all__ = ["RayEngine", "accept", "complete", "learn", "open_index", "propose", "train",
           "undo"]


def open_index(target: Target, *, viewer: napari.Viewer | None = None,
               index: str | None = None) -> Index:
    """The index a target stands for; with ``viewer``, also show it there (image, boxes and
    keypoints layers, kept in sync with the index) unless it is already open in that viewer."""
    found = _index_of(target, index)
    if viewer is not None and _layers_of(viewer, found) is None:
        from ._napari.layers import open_index as open_in_viewer

        open_in_viewer(viewer, found)
    return found


def learn(
    target: Target, images: Images | None = None, category: str | None = None, *,
    kind: str = "roi", settings: LearnSettings | None = None, index: str | None = None,
    progress: ProgressFn | None = None, cancel: CancelFn | None = None, device: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Learn on the given images (names, shell patterns, ids or records) or on a whole category.

    Keyword ``overrides`` change single settings of ``settings`` (default: the Learn dialog's),
    e.g. ``learn(viewer, category="disc", epochs=3, mode="full")``.
    """
    idx = _index_of(target, index)
    return _run(target, idx, "learn", progress, cancel,
                images=None if images is None else [r.id for r in _images(idx, images)],
                category=category, kind=kind,
                settings=_settings(LearnSettings, settings, overrides), device=device)


def train(
    target: Target,
    *,
    index: str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    device: str | None = None,
) -> TrainResult:
    """A full training run of the active model on every labelled image, with its own settings."""
    return _run(target, _index_of(target, index), "train", progress, cancel, device=device)


def complete(
    target: Target, images: Images, category: str, *, kind: str = "roi",
    settings: CompleteSettings | None = None, index: str | None = None,
    progress: ProgressFn | None = None, cancel: CancelFn | None = None, device: str | None = None,
    engine: RayEngine | None = None, **overrides: Any,
) -> CompleteResult:
    """Run the active model over ``images`` and save what it finds as ``category`` (boxes for
    kind 'roi', keypoints for 'keypoints'); overrides as in :func:`learn`: ``min_score=0.5``.
    ``engine``: run the model on Ray workers (:class:`~.engine.ray_runner.RayEngine`, a local
    Ray or a cluster; docs/scale.md), written here by the same rules."""
    idx = _index_of(target, index)
    return _run(target, idx, "complete", progress, cancel,
                images=[r.id for r in _images(idx, images)], category=category, kind=kind,
                settings=_settings(CompleteSettings, settings, overrides), device=device,
                **engine_args(engine))


def propose(
    target: Target, category: str, *, kind: str = "roi", settings: CompleteSettings | None = None,
    index: str | None = None, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
    device: str | None = None, engine: RayEngine | None = None, **overrides: Any,
) -> list[Proposal]:
    """Complete from a category: detections of ``category`` on the images of other categories,
    returned for review and not saved; keep the good ones with :func:`accept`. Overrides as in
    :func:`learn`: ``max_detections=3``; ``engine`` as in :func:`complete`."""
    return _run(target, _index_of(target, index), "propose", progress, cancel,
                category=category, kind=kind,
                settings=_settings(CompleteSettings, settings, overrides), device=device,
                **engine_args(engine))


def accept(
    target: Target,
    proposals: Sequence[Proposal],
    *,
    min_score: float | None = None,
    index: str | None = None,
) -> CompleteResult:
    """Save the given proposals (those scoring at least ``min_score`` when it is given)."""
    idx = _index_of(target, index)
    return _session(target).accept(idx, proposals, min_score=min_score)


def undo(target: Target, run_id: int | None = None, *, index: str | None = None) -> int:
    """Put back what one Complete (or accept) run changed; by default the latest not yet undone.

    Returns the number of observations removed or restored.
    """
    idx = _index_of(target, index)
    if run_id is None:
        latest = idx.runs.latest_undoable()
        if latest is None:
            raise RefusedError(f"no Complete run to undo in the index {idx.path.name}")
        run_id = latest.id
    return idx.runs.undo(run_id)


# ---------------------------------------------------------------------------------------- helpers
def _run(target: Target, idx: Index, operation: str, progress: ProgressFn | None,
         cancel: CancelFn | None, **args: Any) -> Any:
    """Run one job on ``idx`` through the right runner; its changes reach ``idx``'s listeners."""
    session = _session(target)
    return session.run(session.task(operation, idx, operation, args), progress=progress,
                       cancel=cancel)


def _session(target: Target) -> Session:
    """A viewer's own session (its Undo, its engine); for an index or a path, a new one."""
    if not _is_viewer(target):
        return Session(_runner())
    from ._napari.layers import real_viewer

    return session_for(real_viewer(target))


def _runner() -> Runner:
    """In napari's process (a viewer exists) the engine process, else this process."""
    napari = sys.modules.get("napari")
    if napari is not None and napari.current_viewer() is not None:
        return default_runner()
    return InProcessRunner()


def _is_viewer(target: Target) -> bool:
    return not isinstance(target, (Index, str, os.PathLike))


def _index_of(target: Target, name: str | None) -> Index:
    """The Index a target stands for (see the module docstring)."""
    if isinstance(target, Index):
        return target
    if isinstance(target, (str, os.PathLike)):
        return Index(target)
    from napari.components import ViewerModel

    if not isinstance(target, ViewerModel):
        raise BadInputError(
            f"expected a napari Viewer, an Index or an index path, not {type(target).__name__}"
        )
    from ._napari.layers import index_layers

    opened = index_layers(target)
    if not opened:
        raise RefusedError("no index is open in this viewer; open one with open_index(path, "
                           "viewer=viewer) or File > Open Folder")
    if name is None:
        return opened[0].index
    for layers in opened:
        if name in (layers.index.path.name, str(layers.index.path)) or (
            Path(name).resolve() == layers.index.path
        ):
            return layers.index
    names = ", ".join(repr(layers.index.path.name) for layers in opened)
    raise BadInputError(f"no index named {name!r} is open in this viewer (open: {names})")


def _layers_of(viewer: napari.Viewer, index: Index) -> IndexLayers | None:
    from ._napari.layers import index_layers

    return next((lay for lay in index_layers(viewer) if lay.index.path == index.path), None)


def _images(index: Index, images: Images) -> list[ImageRecord]:
    """Image records from names or shell patterns (each must match), ids or records."""
    items = [images] if isinstance(images, (str, int, ImageRecord)) else list(images)
    patterns = [item for item in items if isinstance(item, str)]
    found = {r.id: r for r in index.resolve_images(
        int(item) if not isinstance(item, ImageRecord) else item
        for item in items if not isinstance(item, str))}
    found.update((r.id, r) for pattern in patterns for r in index.match_images([pattern]))
    if not found:
        raise BadInputError("no images given")
    return [found[i] for i in sorted(found)]


def _settings(cls: Callable[[], _S], settings: _S | None, overrides: dict[str, Any]) -> _S:
    """``settings`` (or the defaults) with single fields replaced; unknown names are an error."""
    base = settings if settings is not None else cls()
    names = set(type(base).model_fields)
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise BadInputError(f"unknown setting(s) {unknown}; {type(base).__name__} has "
                            f"{sorted(names)}")
    return base.replace(**overrides)
