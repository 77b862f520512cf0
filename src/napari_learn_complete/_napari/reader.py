"""npe2 reader: an index folder opens as an image stack, a Shapes layer of boxes and a Points layer
of keypoints, synced live with the index once napari has inserted them (see ``layers``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..index import Index
from ..index.store import DB_NAME
from .binding import bindable_layer_data

PathOrPaths = str | list[str]


def _index_folder(path: PathOrPaths) -> Path | None:
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    folder = Path(path)
    return folder if (folder / DB_NAME).is_file() else None


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[tuple[Any, dict, str]]] | None:
    """The reader for an index folder (one holding ``index.sqlite``), else None."""
    return read_index if _index_folder(path) is not None else None


def read_index(path: PathOrPaths) -> list[tuple[Any, dict, str]]:
    """Layer data tuples of the index at ``path`` (the image stack is read lazily)."""
    folder = _index_folder(path)
    if folder is None:
        raise ValueError(f"{path}: not an index folder (no {DB_NAME})")
    return bindable_layer_data(Index(folder))
