"""The settings of Learn and Complete as their dialogs show them, with the specification's defaults.

Plain data without torch, so the napari process can build them (dialogs) and send them to the
engine process, and the CLI, the console and the tests start from the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInputError

MODES = ("heads", "full")


@dataclass
class LearnSettings:
    """The Learn dialog: epochs, "heads" (backbone frozen) or "full", the held-out share, plus
    ``mix_in`` earlier labelled images from outside the scope (a guard against forgetting)."""

    epochs: int = 10
    mode: str = "heads"
    test_percent: float = 0.0
    mix_in: int = 0
    seed: int = 0
    num_workers: int = 0

    def validate(self) -> None:
        if self.mode not in MODES:
            raise BadInputError(f"training mode must be 'heads' or 'full', not {self.mode!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise BadInputError(f"epochs must be a whole number of at least 1, not {self.epochs!r}")
        if self.num_workers < 0:
            raise BadInputError(f"num_workers must be zero or more, not {self.num_workers}")


@dataclass
class CompleteSettings:
    """The Complete dialog's settings, with the specification's defaults."""

    min_score: float = 0.0
    max_detections: int = 1  # per image
    remove_existing: bool = False
    batch_size: int = 4  # images per device batch and per committed transaction

    def validate(self) -> None:
        if not 0 <= self.min_score <= 1:
            raise BadInputError(f"min score must be between 0 and 1, not {self.min_score:g}")
        for key in ("max_detections", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(
                    f"{key.replace('_', ' ')} must be an integer >= 1, not {value!r}"
                )
