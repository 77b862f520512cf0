"""napari-learn-complete: correct a few images, Learn, Complete the rest.

The core (``index``, ``model``, ``engine``) imports neither Qt nor napari and is the public API
used by the widgets, the CLI, the napari console and scripts alike.
"""

from .api import accept, complete, learn, open_index, propose, train, undo
from .errors import (
    BadInputError,
    BadWeightsError,
    Cancelled,
    IndexLockedError,
    LearnCompleteError,
    RefusedError,
)
from .index import Category, ImageRecord, Index, Observation

__version__ = "0.1.0"

__all__ = [
    "BadInputError",
    "BadWeightsError",
    "Cancelled",
    "Category",
    "ImageRecord",
    "Index",
    "IndexLockedError",
    "LearnCompleteError",
    "Observation",
    "RefusedError",
    "accept",
    "complete",
    "learn",
    "open_index",
    "propose",
    "train",
    "undo",
]
