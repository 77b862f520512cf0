"""What a Learn or a full training run trains on: the scope, its test split and its mix-in.

Learn's scope follows the specification: from images, exactly those images with every observation
on them, of every category (so the model keeps its broader knowledge); from a category, every image
with an observation of that category, again with all other observations on them. Video clips are
never trained on. Splits and mix-ins are drawn with a seeded generator, so a run can be repeated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ..errors import BadInputError, RefusedError
from ..index import Category, ImageRecord, Index, Observation, check_kind


def learn_scope(
    index: Index,
    *,
    images: Sequence[ImageRecord | int | str] | None = None,
    category: Category | int | str | None = None,
    kind: str = "roi",
) -> list[ImageRecord]:
    """The images Learn trains on, in id order (video clips left out).

    Exactly one of ``images`` (records, ids or names) and ``category`` is given. Refused when the
    category has its ``kind`` switched off, and when no image is left.
    """
    check_kind(kind)
    if (images is None) == (category is None):
        raise BadInputError("Learn needs either images or a category (not both)")
    if category is not None:
        cat = index.category(category)
        cat.require(kind)
        found = index.images(category=cat.id)
        where = f"category {cat.name!r} has no observations on images"
    else:
        found = sorted(index.resolve_images(images), key=lambda image: image.id)
        where = "no images were selected"
    found = [image for image in found if not image.is_video]
    if not found:
        raise RefusedError(f"nothing to learn from: {where} (video clips are not trained on)")
    return found


def trainable(observation: Observation, category: Category, kind: str) -> bool:
    """Does this observation teach the requested kind? Keypoints count only where enabled."""
    if observation.iscrowd:
        return False
    if kind == "keypoints":
        return category.keypoints_enabled and observation.has_keypoints
    return observation.box is not None or observation.has_keypoints


def require_kind(index: Index, images: Sequence[ImageRecord], kind: str) -> None:
    """Refuse a scope with no observation of ``kind`` (nothing would be learned)."""
    cats = {c.id: c for c in index.categories()}
    if not any(trainable(o, cats[o.category_id], kind) for o in index.observations(images=images)):
        what = "boxes" if kind == "roi" else "keypoints (of a category with keypoints enabled)"
        raise RefusedError(
            f"nothing to learn from: the {len(images)} image(s) in scope have no {what}"
        )


def labelled_images(index: Index) -> list[ImageRecord]:
    """Every image with at least one observation, in id order: the full training set."""
    with_obs = index.observation_counts()
    return [image for image in index.images() if image.id in with_obs and not image.is_video]


def split(
    images: Sequence[ImageRecord], test_percent: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, test)``: ``round(n * test_percent / 100)`` images held back, chosen by ``seed``.

    The choice depends only on the image ids and the seed, not on the order they were given in.
    ``test_percent`` was checked with the settings it comes from (Learn's or the model's).
    """
    ordered = sorted(images, key=lambda image: image.id)
    n_test = _test_count(len(ordered), test_percent)
    if n_test and n_test >= len(ordered):
        raise BadInputError(
            f"a test share of {test_percent:g}% leaves none of the {len(ordered)} image(s) to "
            "train on; lower it or add images to the scope"
        )
    held = set(random.Random(seed).sample(range(len(ordered)), n_test))
    train = [image for i, image in enumerate(ordered) if i not in held]
    test = [image for i, image in enumerate(ordered) if i in held]
    return train, test


def _test_count(count: int, test_percent: float) -> int:
    return round(count * test_percent / 100)


def split_notes(count: int, test_percent: float) -> list[str]:
    """What a user should know about the test split of ``count`` images: a test share that
    holds out nothing (too few images for it) is said, not silent."""
    if not test_percent or _test_count(count, test_percent):
        return []
    needed = math.floor(50 / test_percent) + 1  # the fewest images whose share rounds to one
    return [f"{count} image{'' if count == 1 else 's'}: nothing held out for testing "
            f"({test_percent:g}% test data needs at least {needed} images)"]


# Optimizer steps a Learn of a model from random weights needs (docs/learn.md, measured on the
# effort benchmark, issue 12): the first, on a backbone that never trained, then each later one.
FIRST_LEARN_STEPS, LATER_LEARN_STEPS = 200, 100


def advised_steps(backbone_trained: bool, backbone_pretrained: bool) -> int:
    """The steps docs/learn.md advises for the next Learn of a model; 0 when it started from
    pretrained weights, where the dialog's epochs suffice."""
    if backbone_pretrained:
        return 0
    return LATER_LEARN_STEPS if backbone_trained else FIRST_LEARN_STEPS


def advised_epochs(images: int, test_percent: float, batch_size: int, steps: int) -> int:
    """Epochs that give a Learn on ``images`` (before its test split) at least ``steps``
    optimizer steps of ``batch_size`` images: a small set's epochs are few steps."""
    trained = max(1, images - _test_count(images, test_percent))
    return math.ceil(steps / math.ceil(trained / batch_size))


def mix_in(
    index: Index, scope: Sequence[ImageRecord], count: int, seed: int
) -> list[ImageRecord]:
    """Up to ``count`` labelled images from outside ``scope``, drawn by ``seed``: a guard against
    forgetting what the model knew about images Learn does not look at."""
    inside = {image.id for image in scope}
    others = [image for image in labelled_images(index) if image.id not in inside]
    chosen = random.Random(seed).sample(others, min(count, len(others)))
    return sorted(chosen, key=lambda image: image.id)
