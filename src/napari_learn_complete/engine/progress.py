"""Progress and cancellation as plain callbacks, so long work never depends on Qt.

Long operations (Learn, train, Complete, propose) take ``progress(Progress)`` and
``cancel() -> bool``; the napari side runs them in a thread worker and forwards progress to its own
widgets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress report. ``done``/``total`` count steps (batches) of ``stage``."""

    stage: str
    done: int
    total: int
    message: str = ""
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    lr: float | None = None  # the learning rate of a training step (Learn, train)


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


def check_cancel(cancel: CancelFn | None) -> None:
    """Raise :class:`Cancelled` when the user asked to stop."""
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the user")


def report(progress: ProgressFn | None, event: Progress) -> None:
    if progress is not None:
        progress(event)
