"""What napari shows of an index, built as plain layer data: an image stack, a Shapes layer of
boxes, a Points layer of keypoints (named on the canvas) and, when a category has a skeleton, a
Vectors layer drawing it, in (plane, y, x) coordinates where plane z shows the z-th image. Pure
functions of the index (no viewer, no sync): the reader, the sample data and
:func:`~napari_learn_complete._napari.layers.open_index` all start from :func:`layer_data`.

The boxes, keypoints and skeleton layers hold one *page*: the observations of the image shown.
The index is the source of truth and the layers a view of it, so an index of 50,000 boxes opens,
edits and switches images as fast as one of a few dozen (napari's Shapes layer slows down with
every shape it holds, on every plane).

Box and keypoint coordinates in the layers are the index's own (pixel corners, like COCO); the two
layers are translated by half a pixel so that they line up with the pixels of the image layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from napari.layers import Layer
from napari.utils.colormaps.standardize_color import transform_color
from napari.utils.notifications import show_warning

from ..errors import LearnCompleteError
from ..index import Category, ImageRecord, Index, Observation
from ..index.media import to_rgb_uint8

MARKER = "napari_learn_complete"
NO_OBSERVATION = -1
# Pixel corners (index) -> pixel centres (napari): boxes and keypoints sit half a pixel up-left.
HALF_PIXEL = (0.0, -0.5, -0.5)
BOX_FACE_ALPHA = 0.12


def rgba(colour: str, alpha: float = 1.0) -> np.ndarray:
    rgba = transform_color(colour)[0].copy()
    rgba[3] = alpha
    return rgba


def stackable(index: Index) -> list[ImageRecord]:
    """The images shown as planes (video clips have no pixels of their own)."""
    return [r for r in index.images() if not r.is_video]


def image_stack(index: Index, images: Sequence[ImageRecord]) -> da.Array:
    """A lazy (N, H, W, 3) uint8 stack: one image is decoded when its plane is shown.

    Each image is padded to the largest height and width, anchored top-left, so that its pixel
    coordinates are the same as in the file and nothing is resampled.
    """
    if not images:
        return da.zeros((1, 1, 1, 3), dtype=np.uint8)
    height = max(r.height for r in images)
    width = max(r.width for r in images)

    def load(block_id: tuple[int, ...]) -> np.ndarray:
        record = images[block_id[0]]
        plane = np.zeros((1, height, width, 3), np.uint8)
        try:
            pixels = to_rgb_uint8(index.read_image(record))
        except LearnCompleteError as exc:  # a file gone since it was added: show a black plane
            show_warning(str(exc))
            return plane
        plane[0, : pixels.shape[0], : pixels.shape[1]] = pixels[:height, :width]
        return plane

    return da.map_blocks(
        load, chunks=((1,) * len(images), (height,), (width,), (3,)), dtype=np.uint8,
        meta=np.empty((0, 0, 0, 0), np.uint8),
    )


def box_vertices(plane: int, box: Sequence[float]) -> np.ndarray:
    """The four (plane, y, x) corners of a napari rectangle for an (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = box
    return np.array([[plane, y0, x0], [plane, y0, x1], [plane, y1, x1], [plane, y1, x0]], float)


def _strings(values: Iterable[str]) -> pd.Series:
    """A text column that stays text when empty (pandas would make an empty list float)."""
    return pd.Series(list(values), dtype=object)


def box_rows(obs: Iterable[Observation], plane: dict[int, int], cats: dict[int, Category]):
    rows = [(o, cats[o.category_id]) for o in obs if o.box is not None and o.image_id in plane]
    data = [box_vertices(plane[o.image_id], o.box) for o, _ in rows]
    features = pd.DataFrame({
        "observation_id": np.array([o.id for o, _ in rows], np.int64),
        "category": _strings(c.name for _, c in rows),
        "source": _strings(o.source for o, _ in rows),
        "score": np.array([np.nan if o.score is None else o.score for o, _ in rows], float),
    })
    edge = np.array([rgba(c.colour) for _, c in rows]).reshape(-1, 4)
    face = np.array([rgba(c.colour, BOX_FACE_ALPHA) for _, c in rows]).reshape(-1, 4)
    return data, features, edge, face


def keypoint_rows(obs: Iterable[Observation], plane: dict[int, int], cats: dict[int, Category]):
    rows = []
    for o in obs:
        if o.keypoints is None or o.image_id not in plane:
            continue
        cat = cats[o.category_id]
        for name, (x, y, v) in zip(cat.keypoint_names, o.keypoints, strict=True):
            if v > 0:
                rows.append((o, cat, name, (plane[o.image_id], y, x)))
    data = np.array([r[3] for r in rows], float).reshape(-1, 3)
    features = pd.DataFrame({
        "observation_id": np.array([o.id for o, *_ in rows], np.int64),
        "category": _strings(c.name for _, c, *_ in rows),
        "keypoint": _strings(n for _, _, n, _ in rows),
        "source": _strings(o.source for o, *_ in rows),
        "score": np.array([np.nan if o.score is None else o.score for o, *_ in rows], float),
    })
    colour = np.array([rgba(c.colour) for _, c, *_ in rows]).reshape(-1, 4)
    return data, features, colour


def skeleton_vectors(points: np.ndarray, features: pd.DataFrame,
                     cats: dict[str, Category]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (start, offset) joining the labelled keypoints of each observation along its
    category's skeleton, with the category's colour; from keypoint layer rows."""
    vectors, colours = [], []
    where: dict[tuple[int, str], np.ndarray] = {}
    for row, (obs_id, name) in enumerate(zip(features["observation_id"], features["keypoint"],
                                             strict=True)):
        where[(int(obs_id), str(name))] = points[row]
    categories = dict(zip(features["observation_id"], features["category"], strict=True))
    for obs_id, cat_name in categories.items():
        cat = cats.get(str(cat_name))
        for a, b in cat.skeleton if cat else ():
            start = where.get((int(obs_id), cat.keypoint_names[a]))
            end = where.get((int(obs_id), cat.keypoint_names[b]))
            if start is not None and end is not None:
                vectors.append((start, end - start))
                colours.append(rgba(cat.colour))
    return (np.array(vectors, float).reshape(-1, 2, 3),
            np.array(colours, float).reshape(-1, 4))


def page_observations(index: Index, image: ImageRecord | None) -> list[Observation]:
    """The observations the layers hold while ``image`` is shown."""
    return index.observations(images=[image.id]) if image is not None else []


def _marker(index: Index, role: str, session: str | None) -> dict[str, Any]:
    marker = {"index": str(index.path), "role": role}
    if session:
        marker["session"] = session
    return {MARKER: marker}


def layer_data(index: Index, *, session: str | None = None) -> list[tuple[Any, dict, str]]:
    """The layer data tuples (image, boxes, keypoints, and the skeleton when a category has one)
    of an index showing its first image, marked in metadata."""
    images = stackable(index)
    plane = {r.id: z for z, r in enumerate(images)}
    cats = {c.id: c for c in index.categories()}
    first = next(iter(cats.values()), None)
    observations = page_observations(index, images[0] if images else None)
    name = index.path.name
    size = max(3.0, round(max((max(r.height, r.width) for r in images), default=64) / 50))
    boxes, box_features, edge, face = box_rows(observations, plane, cats)
    points, kp_features, colour = keypoint_rows(observations, plane, cats)
    defaults = {"observation_id": NO_OBSERVATION, "category": first.name if first else "",
                "source": "human", "score": np.nan}
    layers = [
        (image_stack(index, images),
         {"name": f"{name} images", "rgb": True, "contrast_limits": [0, 255],
          "metadata": _marker(index, "image", session)}, "image"),
        (boxes,
         {"name": f"{name} boxes", "ndim": 3, "shape_type": "rectangle", "edge_width": 2,
          "edge_color": edge if len(edge) else "white", "face_color": face if len(face) else
          "transparent", "features": box_features, "feature_defaults": defaults,
          "text": {"string": "{category}", "anchor": "upper_left", "size": 8, "color": "white"},
          "translate": HALF_PIXEL, "metadata": _marker(index, "boxes", session)}, "shapes"),
        (points,
         {"name": f"{name} keypoints", "ndim": 3, "size": size, "border_width": 0.1,
          "face_color": colour if len(colour) else "white",
          "border_color": colour if len(colour) else "white", "features": kp_features,
          "feature_defaults": {**defaults, "keypoint": ""}, "translate": HALF_PIXEL,
          "text": {"string": "{keypoint}", "anchor": "upper_left", "size": 8,
                   "color": "white", "translation": (0, -size, 0)},
          "metadata": _marker(index, "keypoints", session)}, "points"),
    ]
    if any(c.skeleton for c in cats.values()):
        vectors, colours = skeleton_vectors(points, kp_features,
                                            {c.name: c for c in cats.values()})
        layers.insert(2, (vectors, {  # under the points it joins
            "name": f"{name} skeleton", "ndim": 3, "edge_width": max(1.0, size / 4),
            "vector_style": "line", "edge_color": colours if len(colours) else "white",
            "translate": HALF_PIXEL, "opacity": 0.8,
            "metadata": _marker(index, "skeleton", session)}, "vectors"))
    return layers


def defaults_dict(layer: Layer) -> dict[str, Any]:
    return {k: v.iloc[0] for k, v in layer.feature_defaults.items()}


def fill_features(layer: Layer, start: int, values: pd.DataFrame) -> None:
    features = layer.features
    for key in values.columns:
        features.iloc[start:, features.columns.get_loc(key)] = values[key].to_numpy()
    layer.refresh_text()
