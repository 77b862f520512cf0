"""The index store: images, categories and observations in one SQLite database (no Qt/napari)."""

from .records import (
    KIND_WORDS,
    KINDS,
    Category,
    Change,
    ImageRecord,
    Observation,
    check_kind,
    keypoint_extent,
)
from .store import Index

__all__ = [
    "KINDS", "KIND_WORDS", "Category", "Change", "ImageRecord", "Index", "Observation",
    "check_kind", "keypoint_extent",
]
