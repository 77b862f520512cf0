"""Long work (Learn, Complete, propose, train) in napari thread workers.

The engine takes plain ``progress(Progress)`` and ``cancel() -> bool`` callbacks and never touches
Qt; :func:`run_in_worker` supplies them. Progress reports hop to the main thread (superqt's
``ensure_main_thread``) and drive a progress bar in napari's activity dock, whose Cancel button,
like ``worker.quit()``, makes ``cancel()`` return True; the outcome arrives on the main thread.
A job outlives the widget that started it only as far as the engine is concerned: once the widget
is destroyed (its viewer closed), the job is asked to stop and nothing is delivered to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject
from superqt.utils import ensure_main_thread

from ..engine.progress import Progress
from ..errors import Cancelled, LearnCompleteError

Worker = FunctionWorker | GeneratorWorker
log = logging.getLogger(__name__)


def reason_first(exc: BaseException) -> str:
    """An error as a toast shows it: the reason first. Messages of the core name the item first
    ("/data/index: the index has no model yet"), and a toast cut short would show the path only;
    errors that are not ours keep their type."""
    if not isinstance(exc, LearnCompleteError):
        return f"{type(exc).__name__}: {exc}"
    head, sep, reason = str(exc).partition(": ")
    if sep and reason and ("/" in head or "\\" in head):
        return f"{reason} ({head})"
    return str(exc)


def describe(event: Progress, *, title: str = "", time_left: bool = True) -> str:
    """One line for a progress bar or a status label: stage, epoch, loss, what is done and the
    time left, each when known and each once. A ``title`` that names the stage ("Learn (ROI)"
    for "learn") stands in for it; ``time_left=False`` leaves the time to a bar that shows its
    own (napari's shows steps done and time left beside the description)."""
    named = title and event.stage.lower() in title.lower()
    parts = [title] if title else []
    if not named:
        parts.append(event.stage)
    if event.epoch is not None and event.epochs:
        parts.append(f"epoch {event.epoch}/{event.epochs}")
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.message and event.message not in parts:
        parts.append(event.message)
    if time_left and event.eta_s is not None and event.done < event.total:
        minutes, seconds = divmod(round(event.eta_s), 60)
        parts.append(f"{minutes}:{seconds:02d} left")
    head, *rest = parts
    return f"{head}: {' · '.join(rest)}" if title and rest else " · ".join(parts)


def run_in_worker(
    fn: Callable[..., Any],
    *,
    title: str,
    owner: QObject | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_finished: Callable[[Worker], None] | None = None,
) -> Worker:
    """Start ``fn(progress=..., cancel=...)`` in a thread worker and return the started worker.

    ``fn`` is typically ``functools.partial(learn, index, images=..., settings=...)``. The
    callbacks run on the main thread: ``on_progress`` per report, ``on_done`` with the return
    value, ``on_finished(worker)`` at the end whatever the outcome (connected before the worker
    starts: a job that fails at once must not finish unheard). Cancellation (activity dock,
    ``worker.quit()``) ends with an info notification; an error goes to ``on_error`` or, without
    one, to an error notification. The activity dock of every open viewer shows the bar.

    ``owner`` is the widget the callbacks update (by default the one ``on_finished`` is a method
    of). When it is destroyed, as a dock is when its viewer closes, the job is asked to stop and
    no callback runs any more: a callback touching a deleted Qt object aborts the process.
    """
    bar = cancelable_progress(total=0, desc=title)
    workers: list[Worker] = []
    owner = owner if owner is not None else getattr(on_finished, "__self__", None)
    owner_gone = False

    def cancel() -> bool:
        return bar.is_canceled or (bool(workers) and workers[0].abort_requested)

    def while_owned(callback: Callable[..., None] | None) -> Callable[..., None] | None:
        if callback is None:
            return None
        return lambda *args: None if owner_gone else callback(*args)

    @ensure_main_thread
    def progressed(event: Progress) -> None:
        if owner_gone:
            return
        if event.total and bar.total != event.total:
            bar.total = event.total
        if event.done != bar.n:
            bar.update(event.done - bar.n)
        bar.set_description(describe(event, title=title, time_left=False))
        if on_progress is not None:
            on_progress(event)

    def failed(exc: Exception) -> None:
        if isinstance(exc, Cancelled):
            show_info(f"{title} cancelled")
        elif on_error is not None and not owner_gone:
            on_error(exc)
        elif isinstance(exc, LearnCompleteError):
            show_error(f"{title}: {reason_first(exc)}")
        else:
            log.error("%s failed", title, exc_info=exc)
            show_error(f"{title} failed: {reason_first(exc)}")

    connect: dict[str, Callable[..., Any]] = {"errored": failed}
    if on_done is not None:
        connect["returned"] = while_owned(on_done)
    worker = create_worker(
        fn,
        progress=progressed,
        cancel=cancel,
        _connect=connect,
        _start_thread=False,
        _ignore_errors=True,
    )
    workers.append(worker)

    def abandoned() -> None:
        nonlocal owner_gone
        owner_gone = True
        worker.quit()

    def released() -> None:  # the owner outlives the job: it no longer needs to hear of it
        if not owner_gone:
            owner.destroyed.disconnect(abandoned)

    if isinstance(owner, QObject):
        owner.destroyed.connect(abandoned)
        worker.finished.connect(released)
    worker.finished.connect(bar.close)
    if on_finished is not None:
        worker.finished.connect(while_owned(lambda: on_finished(worker)))
    worker.start()
    return worker
