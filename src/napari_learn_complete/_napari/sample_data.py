"""napari sample data: the built-in synthetic index, built once in the user's cache folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..index import Index
from ..index.store import DB_NAME
from ..sample import make_sample_index
from .binding import bindable_layer_data

# Bump when make_sample_index changes what it builds, so that old caches are not reused.
SAMPLE_NAME = "sample-index-v1"


def sample_folder() -> Path:
    """Where the sample index lives: ``$XDG_CACHE_HOME`` (or ``~/.cache``)/napari-learn-complete."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "napari-learn-complete" / SAMPLE_NAME


def ensure_sample_index(folder: Path | None = None) -> Path:
    """Build the sample index at ``folder`` unless it is there already; return the folder.

    It is built in a temporary sibling folder and renamed into place, so an interrupted build
    never leaves a half index to be reused.
    """
    folder = folder or sample_folder()
    if (folder / DB_NAME).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        make_sample_index(building / "index").close()
        try:
            (building / "index").rename(folder)
        except OSError:  # another process finished first: use theirs
            if not (folder / DB_NAME).is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def sample_index() -> list[tuple[Any, dict, str]]:
    """Layer data of the sample index; napari inserts them and live sync starts."""
    return bindable_layer_data(Index(ensure_sample_index()))
