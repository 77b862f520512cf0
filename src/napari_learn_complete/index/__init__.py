"""The index store: images, categories and observations in one SQLite database (no Qt/napari)."""

from .geometry import Box, Keypoint, attach_target, iou, keypoint_extent
from .records import KIND_WORDS, KINDS, Category, Change, ImageRecord, Observation, check_kind
from .store import Index

__all__ = [
    "KINDS", "KIND_WORDS", "Box", "Category", "Change", "ImageRecord", "Index", "Keypoint",
    "Observation", "attach_target", "check_kind", "iou", "keypoint_extent",
]
