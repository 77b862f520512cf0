"""napari-learn-complete: correct a few images, Learn, Complete the rest.

The core (``index``, ``model``, ``engine``) imports neither Qt nor napari and is the public API
used by the widgets, the CLI, the napari console and scripts alike. Names are imported on first use
(PEP 562): napari imports this package for its reader and widgets, and its process must never load
torch (see docs/processes.md).
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"

_HOMES = {
    **dict.fromkeys(["accept", "complete", "learn", "open_index", "propose", "train", "undo"],
                    ".api"),
    **dict.fromkeys(["BadInputError", "BadWeightsError", "Cancelled", "EngineError",
                     "IndexLockedError", "LearnCompleteError", "RefusedError"], ".errors"),
    **dict.fromkeys(["Category", "ImageRecord", "Index", "Observation"], ".index"),
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
