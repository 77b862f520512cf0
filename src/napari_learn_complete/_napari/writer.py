"""npe2 writer: save the boxes and keypoints layers of an index as one COCO JSON file."""

from __future__ import annotations

from typing import Any

from ..errors import BadInputError
from ..index import Index
from ..index.coco import export_coco
from .layer_data import MARKER


def write_coco(path: str, layer_data: list[tuple[Any, dict, str]]) -> list[str]:
    """Write the observations shown by the given layers to ``path`` (COCO JSON).

    The layers are live views of their index, so the index is exported (boxes, keypoints,
    categories with keypoint names and skeleton); layers that do not come from an index are
    refused, since they carry no categories or images to write.
    """
    folders = {
        meta.get("metadata", {}).get(MARKER, {}).get("index") for _, meta, _ in layer_data
    }
    if None in folders or not folders:
        names = [meta.get("name", "?") for _, meta, _ in layer_data
                 if MARKER not in meta.get("metadata", {})]
        raise BadInputError(
            f"layer(s) {', '.join(map(repr, names)) or '(none)'} do not show a Learn & Complete "
            "index; open an index folder (or add the layers with open_index) to save COCO"
        )
    if len(folders) > 1:
        raise BadInputError(
            f"the layers come from {len(folders)} indexes ({', '.join(sorted(folders))}); "
            "save one index at a time"
        )
    with Index(folders.pop()) as index:
        export_coco(index, path)
    return [str(path)]
