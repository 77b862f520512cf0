"""The index store: images, categories and observations in one SQLite database (no Qt/napari)."""

from .store import Category, Change, ImageRecord, Index, Observation

__all__ = ["Category", "Change", "ImageRecord", "Index", "Observation"]
