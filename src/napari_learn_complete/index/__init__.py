"""The index store: images, categories and observations in one SQLite database (no Qt/napari)."""

from .geometry import attach_target, iou
from .records import (
    KIND_NOUNS,
    KIND_TITLES,
    KINDS,
    Box,
    Category,
    Change,
    ImageRecord,
    Keypoint,
    Observation,
    check_kind,
    keypoint_extent,
)
from .store import Index

__all__ = [
    "KINDS", "KIND_NOUNS", "KIND_TITLES", "Box", "Category", "Change", "ImageRecord", "Index",
    "Keypoint", "Observation", "attach_target", "check_kind", "iou", "keypoint_extent",
]
