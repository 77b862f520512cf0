"""When Learn and Complete may run: the specification's enablement rules, free of Qt.

Every entry point (index panel menus, the layer-list context menu, command palette) asks these
functions, so the rules live in one place and a disabled entry can say *why* it is disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BadInputError, RefusedError
from .index import KIND_NOUNS, Category, Index, check_kind


@dataclass(frozen=True)
class Availability:
    """Whether an action may run now; ``reason`` names the first unmet condition when not."""

    enabled: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.enabled


_OK = Availability(True)
ACTIONS = ("learn", "complete")
NO_MODEL = "No model yet: run Learn (it offers to create one) or create one in the Model panel"


def _category(index: Index, category: Category | int | str | None) -> Category | Availability:
    if category is None:
        return Availability(False, "Choose an active category first")
    try:
        return index.category(category)
    except BadInputError:
        return Availability(False, f"Category {category!r} is not in the index")


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise BadInputError(f"action must be 'learn' or 'complete', not {action!r}")


def _model_allows(index: Index, kind: str, action: str) -> Availability:
    """The model's part of the rules: without any model Learn may start (the UI offers to
    create one first) and Complete may not; a model that does not predict ``kind`` disables
    both (the specification)."""
    from .model.registry import active_model  # reads the configuration; never imports torch

    try:
        model = active_model(index)
    except RefusedError:
        return _OK if action == "learn" else Availability(False, NO_MODEL)
    if not model.supports(kind):
        return Availability(False, f"The active model does not support {KIND_NOUNS[kind]}")
    return _OK


def image_action_availability(
    index: Index,
    image_ids: Sequence[int],
    kind: str,
    category: Category | int | str | None,
    *,
    action: str,
) -> Availability:
    """``action`` ('learn' or 'complete') on selected images: at least one image selected, the
    model's part (see :func:`_model_allows`) for ``kind`` ('roi': boxes, 'keypoints'), and ROI /
    keypoints enabled on ``category``."""
    check_kind(kind)
    _check_action(action)
    if not image_ids:
        return Availability(False, "Select at least one image")
    if not (model := _model_allows(index, kind, action)):
        return model
    cat = _category(index, category)
    if isinstance(cat, Availability):
        return cat
    return _kind_enabled(cat, kind)


def category_action_availability(
    index: Index, category: Category | int | str, kind: str, *, action: str
) -> Availability:
    """``action`` ('learn' or 'complete') of ``kind`` from a category card: the category has at
    least one observation and ``kind`` switched on (the engine refuses a kind the category
    switched off), then the model's part as for images."""
    check_kind(kind)
    _check_action(action)
    cat = _category(index, category)
    if isinstance(cat, Availability):
        return cat
    if not index.has_observations(cat):
        return Availability(False, f"Category {cat.name!r} has no observations yet")
    if not (enabled := _kind_enabled(cat, kind)):
        return enabled
    return _model_allows(index, kind, action)


def _kind_enabled(cat: Category, kind: str) -> Availability:
    reason = cat.disabled_reason(kind)
    return Availability(False, reason[0].upper() + reason[1:]) if reason else _OK
