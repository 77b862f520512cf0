"""Long work (Learn, Complete, propose, train) in napari thread workers.

The engine takes plain ``progress(Progress)`` and ``cancel() -> bool`` callbacks and never touches
Qt; :func:`run_in_worker` supplies them. Progress reports hop to the main thread (superqt's
``ensure_main_thread``) and drive a progress bar in napari's activity dock, whose Cancel button,
like ``worker.quit()``, makes ``cancel()`` return True; the outcome arrives on the main thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from ..engine.progress import Progress
from ..errors import Cancelled, LearnCompleteError

Worker = FunctionWorker | GeneratorWorker
log = logging.getLogger(__name__)


def describe(event: Progress) -> str:
    """One line for a progress bar or a status label: stage, epoch, loss, what is done and the
    time left, each when known."""
    parts = [event.stage]
    if event.epoch is not None and event.epochs:
        parts.append(f"epoch {event.epoch}/{event.epochs}")
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.message and event.message not in parts:
        parts.append(event.message)
    if event.eta_s is not None and event.done < event.total:
        minutes, seconds = divmod(round(event.eta_s), 60)
        parts.append(f"{minutes}:{seconds:02d} left")
    return " · ".join(parts)


def run_in_worker(
    fn: Callable[..., Any],
    *,
    title: str,
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
    """
    bar = cancelable_progress(total=0, desc=title)
    workers: list[Worker] = []

    def cancel() -> bool:
        return bar.is_canceled or (bool(workers) and workers[0].abort_requested)

    @ensure_main_thread
    def progressed(event: Progress) -> None:
        if event.total and bar.total != event.total:
            bar.total = event.total
        if event.done != bar.n:
            bar.update(event.done - bar.n)
        bar.set_description(f"{title}: {describe(event)}")
        if on_progress is not None:
            on_progress(event)

    def failed(exc: Exception) -> None:
        if isinstance(exc, Cancelled):
            show_info(f"{title} cancelled")
        elif on_error is not None:
            on_error(exc)
        elif isinstance(exc, LearnCompleteError):
            show_error(f"{title}: {exc}")
        else:
            log.error("%s failed", title, exc_info=exc)
            show_error(f"{title} failed: {type(exc).__name__}: {exc}")

    connect: dict[str, Callable[..., Any]] = {"errored": failed}
    if on_done is not None:
        connect["returned"] = on_done
    worker = create_worker(
        fn,
        progress=progressed,
        cancel=cancel,
        _connect=connect,
        _start_thread=False,
        _ignore_errors=True,
    )
    workers.append(worker)
    worker.finished.connect(bar.close)
    if on_finished is not None:
        worker.finished.connect(lambda: on_finished(worker))
    worker.start()
    return worker
