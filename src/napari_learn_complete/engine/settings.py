"""The settings of Learn and Complete as their dialogs show them: the one home of the
specification's defaults (Learn: 10 epochs, heads only, no test share; Complete: min score 0,
one detection per image, existing annotations kept).

Validated plain data without torch (see :class:`~napari_learn_complete.model.config.Validated`),
so the napari process builds them (dialogs), sends them to the engine process, and the CLI, the
console and the tests start from the same defaults.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from ..model.config import Validated

Mode = Literal["heads", "full"]
MODES: tuple[str, ...] = get_args(Mode)


class LearnSettings(Validated):
    """The Learn dialog: epochs, "heads" (backbone frozen) or "full", the held-out share, plus
    ``mix_in`` earlier labelled images from outside the scope (a guard against forgetting)."""

    epochs: int = Field(10, ge=1)
    mode: Mode = "heads"
    test_percent: float = Field(0.0, ge=0, lt=100)
    mix_in: int = Field(0, ge=0)
    seed: int = 0
    num_workers: int = Field(0, ge=0)


class CompleteSettings(Validated):
    """The Complete dialog's settings."""

    min_score: float = Field(0.0, ge=0, le=1)
    max_detections: int = Field(1, ge=1)  # per image
    remove_existing: bool = False
    batch_size: int = Field(4, ge=1)  # images per device batch and per committed transaction
