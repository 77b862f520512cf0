"""What Learn, Complete and propose return: plain data, picklable without torch, so results cross
from the engine process to napari's process without loading torch there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..index import Box, Keypoint


@dataclass
class TrainResult:
    """What a finished run produced; ``images`` counts the images trained on; ``notes`` what the
    user should know about how it ran (e.g. a test share that held out nothing)."""

    run_id: int
    version: int | None
    seconds: float
    losses: list[float]
    metrics: dict[str, float]
    images: int
    notes: list[str] = field(default_factory=list)


@dataclass
class CompleteResult:
    """What a Complete or accept run did; ``run_id`` is what :func:`undo` takes."""

    run_id: int | None
    images: int
    written: int
    removed: int
    seconds: float
    observation_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Proposal:
    """A detection of "Complete from a category", not saved until accepted. For kind keypoints,
    ``box`` only serves to find the observation the keypoints belong to."""

    id: int
    image_id: int
    image_name: str
    category: str
    box: Box | None
    keypoints: tuple[Keypoint, ...] | None
    score: float
    kind: str = "roi"
    model_version: str | None = None


class Proposals(list[Proposal]):
    """What :func:`~.proposals.propose` found, and ``skipped``: the images it left out because
    their file is gone (name -> reason), so the CLI and the panel can say so."""

    def __init__(self, proposals: Sequence[Proposal] = (),
                 skipped: dict[str, str] | None = None) -> None:
        super().__init__(proposals)
        self.skipped = dict(skipped or {})
