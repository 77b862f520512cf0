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


def _category(index: Index, category: Category | int | str | None) -> Category | Availability:
    if category is None:
        return Availability(False, "Choose an active category first")
    try:
        return index.category(category)
    except BadInputError:
        return Availability(False, f"Category {category!r} is not in the index")


def image_action_availability(
    index: Index,
    image_ids: Sequence[int],
    kind: str,
    category: Category | int | str | None,
) -> Availability:
    """Learn/Complete on selected images: at least one image selected, an active model that
    supports ``kind`` ('roi': boxes, 'keypoints'), and ROI / keypoints enabled on ``category``."""
    check_kind(kind)
    if not image_ids:
        return Availability(False, "Select at least one image")
    from .model.registry import active_model  # imports torch: only when it matters

    try:
        model = active_model(index)
    except RefusedError:
        return Availability(False, "No active model: create one in the Model panel")
    if not model.supports(kind):
        return Availability(False, f"The active model does not support {KIND_NOUNS[kind]}")
    cat = _category(index, category)
    if isinstance(cat, Availability):
        return cat
    return _kind_enabled(cat, kind)


def category_action_availability(
    index: Index, category: Category | int | str, kind: str
) -> Availability:
    """Learn/Complete of ``kind`` from a category card: the category has at least one
    observation and ``kind`` switched on (the engine refuses a kind the category switched off)."""
    check_kind(kind)
    cat = _category(index, category)
    if isinstance(cat, Availability):
        return cat
    if not index.has_observations(cat):
        return Availability(False, f"Category {cat.name!r} has no observations yet")
    return _kind_enabled(cat, kind)


def _kind_enabled(cat: Category, kind: str) -> Availability:
    reason = cat.disabled_reason(kind)
    return Availability(False, reason[0].upper() + reason[1:]) if reason else _OK
