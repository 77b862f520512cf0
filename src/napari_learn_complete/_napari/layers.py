"""Live views of an index in napari: an image stack, a Shapes layer of boxes, a Points layer of
keypoints (and a skeleton when a category has one), all in (plane, y, x) coordinates where plane z
shows ``image_ids()[z]``.

The boxes, keypoints and skeleton layers hold one page: the observations of the image shown. Moving
the slider replaces the page; an edit, a Complete's arrivals or a filter then touch a few dozen
shapes, not every shape of the index (see ``docs/ui.md`` for the figures).

The index database stays the single source of truth. Every edit in the boxes or keypoints layer is
written at once, in one transaction, so closing napari right after an edit loses nothing; a write
the index refuses is undone in the layer and shown as a warning. Changes committed through the
Python API (from any thread, e.g. a worker running Complete) are applied to the rows concerned on
the main thread. While one side is being written from the other, the handlers of the other side
stand still, so one edit makes exactly one write and nothing echoes.

Layer rows and observations are tied by the ``observation_id`` feature: napari keeps feature rows
aligned with data rows through adds, deletes and moves, so the mapping survives any edit.
The layer data itself is built by :mod:`.layer_data`; readers bind theirs through :mod:`.binding`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Layer, Points, Shapes, Vectors
from napari.layers.base import ActionType
from napari.utils.events import EmitterGroup
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from superqt.utils import ensure_main_thread

from ..errors import LearnCompleteError
from ..index import Category, Change, ImageRecord, Index, Observation, attach_target
from .layer_data import (
    BOX_FACE_ALPHA,
    MARKER,
    NO_OBSERVATION,
    box_rows,
    box_vertices,
    defaults_dict,
    fill_features,
    image_stack,
    keypoint_rows,
    layer_data,
    page_observations,
    rgba,
    skeleton_vectors,
    stackable,
)

ARRIVALS_MS = 250  # observations written by other threads appear in the layers within this
# napari sends each data edit twice, before ("-ing") and after; these are the "after" events
DONE = (ActionType.ADDED, ActionType.CHANGED, ActionType.REMOVED)

_OPEN: list[IndexLayers] = []


def real_viewer(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy``: the Plugins menu hands a widget a proxy,
    which is never ``is`` the viewer an index was opened in. Unwrapped where viewers enter."""
    return getattr(viewer, "__wrapped__", viewer)


def open_index(viewer: Any, path_or_index: str | Path | Index) -> IndexLayers:
    """Add an index's image, boxes and keypoints (and skeleton) layers to ``viewer`` and start
    live sync."""
    viewer = real_viewer(viewer)
    index = path_or_index if isinstance(path_or_index, Index) else Index(path_or_index)
    layers = {meta["metadata"][MARKER]["role"]: viewer.add_layer(Layer.create(data, meta, kind))
              for data, meta, kind in layer_data(index)}
    return IndexLayers(viewer, index, **{f"{role}_layer": layer for role, layer in layers.items()})


def index_layers(viewer: Any) -> list[IndexLayers]:
    """The indexes open in ``viewer``, in the order they were opened."""
    viewer = real_viewer(viewer)
    return [il for il in _OPEN if il.viewer is viewer]


def layers_for(layer: Layer) -> IndexLayers | None:
    """The open index whose image, boxes, keypoints or skeleton layer ``layer`` is."""
    return next((il for il in _OPEN if layer in il.layers), None)


# ------------------------------------------------------------------------------ live sync
class IndexLayers:
    """One index shown in one viewer, kept in sync both ways (see the module docstring)."""

    def __init__(
        self, viewer: Any, index: Index, image_layer: Image, boxes_layer: Shapes,
        keypoints_layer: Points, skeleton_layer: Vectors | None = None,
    ) -> None:
        self.viewer = viewer = real_viewer(viewer)
        self.index = index
        self.image_layer = image_layer
        self.boxes_layer = boxes_layer
        self.keypoints_layer = keypoints_layer
        self.skeleton_layer = skeleton_layer
        self.events = EmitterGroup(source=self, active_category=None, active_keypoint=None,
                                   current_image=None)
        self._busy = False
        self._arrived: set[int] = set()  # observation ids changed by other threads, not shown yet
        self._arrived_lock = threading.Lock()
        self._removing: dict[str, list[tuple[int, str]]] = {"boxes": [], "keypoints": []}
        self._load_catalogue()
        self._page = self._images[0].id if self._images else None  # what layer_data shows
        self._counts = {"boxes": len(boxes_layer.data), "keypoints": len(keypoints_layer.data)}
        self._active_category: str | None = None
        self._active_keypoint: str | None = None
        first = next(iter(self._cats.values()), None)
        self.active_category = first.name if first else None
        boxes_layer.events.data.connect(self._on_boxes_data)
        keypoints_layer.events.data.connect(self._on_keypoints_data)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.dims.events.current_step.connect(self._on_step)
        self._unsubscribe = index.subscribe(self._on_index_change)
        _OPEN.append(self)
        from .menus import register_menus  # napari-private app-model, isolated there

        register_menus(viewer)
        self._label_axis()
        if self._images:  # napari opens stacks in the middle; a labeller starts at the first
            self.show_image(self._images[0].id)
        self._name_page()  # the first page was filled before any step: name it now
        self._activate_edit_layer()
        # napari's reader makes the last layer it inserted active once our binding has run
        QTimer.singleShot(0, self._activate_edit_layer)

    # ----------------------------------------------------------------- public API
    @property
    def layers(self) -> tuple[Layer, ...]:
        core = (self.image_layer, self.boxes_layer, self.keypoints_layer)
        return core if self.skeleton_layer is None else (*core, self.skeleton_layer)

    @property
    def active_category(self) -> str | None:
        return self._active_category

    @active_category.setter
    def active_category(self, name: str | None) -> None:
        """Make ``name`` the category of new boxes and points. Boxes selected in the layer move
        to it (napari's rule: the current properties apply to the selection); selected keypoints
        keep their observation's category."""
        cat = None if name is None else self._category(name)  # BadInputError when unknown
        boxes, points = self.boxes_layer, self.keypoints_layer
        moving = _selected_ids(boxes)
        kept_points, points.selected_data = set(points.selected_data), set()
        self._active_category = None if cat is None else cat.name
        for layer in (boxes, points):
            layer.feature_defaults = {**defaults_dict(layer), "category": name or ""}
        if cat is not None:
            boxes.current_edge_color = cat.colour
            boxes.current_face_color = rgba(cat.colour, BOX_FACE_ALPHA)
            points.current_face_color = cat.colour
            points.current_border_color = cat.colour
        points.selected_data = kept_points
        if cat is not None and moving and not self._busy:
            self._recategorise(moving, cat)
        names = cat.keypoint_names if cat else ()
        if self._active_keypoint not in names:
            self.active_keypoint = names[0] if names else None
        self.events.active_category(value=self._active_category)

    @property
    def active_keypoint(self) -> str | None:
        return self._active_keypoint

    @active_keypoint.setter
    def active_keypoint(self, name: str | None) -> None:
        cat = self._cats_by_name.get(self._active_category or "")
        if name is not None and (cat is None or name not in cat.keypoint_names):
            raise LearnCompleteError(
                f"keypoint {name!r} is not a keypoint of category {self._active_category!r}"
            )
        self._active_keypoint = name
        layer = self.keypoints_layer
        layer.feature_defaults = {**defaults_dict(layer), "keypoint": name or ""}
        self.events.active_keypoint(value=name)

    def selected_observation_ids(self) -> list[int]:
        """The observations of the boxes and keypoints selected in the layers."""
        return sorted(_selected_ids(self.boxes_layer) | _selected_ids(
            self.keypoints_layer))

    def image_ids(self) -> list[int]:
        """Image id of each plane: plane z of the layers shows ``image_ids()[z]``."""
        return [r.id for r in self._images]

    def plane(self, image_id: int) -> int:
        """The plane (slider position, from 0) that shows ``image_id``, of :attr:`planes`."""
        return self._plane[image_id]

    @property
    def planes(self) -> int:
        """How many images the layers stack (every image but video clips)."""
        return len(self._images)

    def current_image_id(self) -> int | None:
        """The image shown now, or None when the index has no image."""
        if not self._images:
            return None
        dims = self.viewer.dims
        z = round(dims.point[dims.ndim - 3])
        return self._images[min(max(z, 0), len(self._images) - 1)].id

    def show_image(self, image_id: int) -> None:
        """Move the viewer to the plane of ``image_id`` (a video clip has none: it has no
        pixels of its own)."""
        if image_id not in self._plane:
            raise LearnCompleteError(f"image {image_id} is not shown in the viewer (a video "
                                     f"clip, or not in {self.index.path.name})")
        dims = self.viewer.dims
        dims.set_point(dims.ndim - 3, self._plane[image_id])
        self._on_step()  # already there: nothing moved, but the page must be this image's

    def refresh(self) -> None:
        """Reload the layers from the index (after images or categories changed); the image
        stack is rebuilt only when the images shown changed."""
        shown = [(r.id, r.width, r.height) for r in self._images]
        self._load_catalogue()
        if [(r.id, r.width, r.height) for r in self._images] != shown:
            with self._quiet():
                self.image_layer.data = image_stack(self.index, self._images)
        self._show_page(self.current_image_id())

    def close(self) -> None:
        """Stop syncing (the layers stay as plain layers)."""
        self._unsubscribe()
        self.boxes_layer.events.data.disconnect(self._on_boxes_data)
        self.keypoints_layer.events.data.disconnect(self._on_keypoints_data)
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.viewer.dims.events.current_step.disconnect(self._on_step)
        if self in _OPEN:
            _OPEN.remove(self)

    # --------------------------------------------------------------------- helpers
    def _load_catalogue(self) -> None:
        self._images = stackable(self.index)
        self._plane = {r.id: z for z, r in enumerate(self._images)}
        self._by_id = {r.id: r for r in self._images}
        self._cats = {c.id: c for c in self.index.categories()}
        self._cats_by_name = {c.name: c for c in self._cats.values()}

    def _category(self, name: str) -> Category:
        if name not in self._cats_by_name:
            self._load_catalogue()
        if name not in self._cats_by_name:
            raise LearnCompleteError(f"no category {name!r} in {self.index.path.name}")
        return self._cats_by_name[name]

    def _image_at(self, plane: float) -> ImageRecord | None:
        z = round(float(plane))
        return self._images[z] if 0 <= z < len(self._images) else None

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Apply changes to one side without its handlers writing them back."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def _recount(self) -> None:
        self._counts = {"boxes": len(self.boxes_layer.data),
                        "keypoints": len(self.keypoints_layer.data)}

    def _write(self, rows: dict[str, list[int]], what: str, fn) -> bool:
        """Run index writes ``fn`` in one transaction; on refusal, put the layers back as the
        index has them and say why."""
        try:
            with self._quiet(), self.index.transaction():
                fn()
            return True
        except LearnCompleteError as exc:
            show_warning(f"{what} not saved: {exc}")
            self._resync_rows(rows)
            return False

    def _resync_rows(self, rows: dict[str, list[int]]) -> None:
        """Drop rows that have no observation and re-read the observations of the others."""
        ids: set[int] = set()
        for role, idx in rows.items():
            layer = getattr(self, f"{role}_layer")
            ids |= _row_ids(layer, idx)
            column = layer.features["observation_id"].to_numpy()
            orphans = [i for i in range(len(column)) if column[i] == NO_OBSERVATION]
            with self._quiet():
                if orphans:
                    layer.remove(orphans)
        self._sync_observations(ids)

    def _drop_rows(self, layer: Layer, rows: list[int], items: list[tuple], problems: list[str],
                   what: str) -> list[tuple]:
        """Remove the new rows that were refused, saying why (the first problem); return the
        kept items with their new rows."""
        if not problems:
            return items
        show_warning(f"{what} not saved: {problems[0]}")
        kept = {item[0] for item in items}
        dropped = [row for row in rows if row not in kept]
        with self._quiet():
            layer.remove(dropped)
        self._recount()
        return [(row - sum(d < row for d in dropped), *rest) for row, *rest in items]

    def _set_row_features(self, layer: Layer, row: int, values: dict[str, Any]) -> None:
        features = layer.features
        for key, value in values.items():
            features.iloc[row, features.columns.get_loc(key)] = value
        layer.refresh_text()

    # ----------------------------------------------------------------------- the page
    def _on_step(self, _event: Any = None) -> None:
        image_id = self.current_image_id()
        if image_id != self._page:
            self._show_page(image_id)

    def _show_page(self, image_id: int | None) -> None:
        """Make the layers hold the observations of ``image_id`` and say which image it is."""
        image = self._by_id.get(image_id) if image_id is not None else None
        self._page = image.id if image is not None else None
        self._fill(page_observations(self.index, image))
        self._name_page()

    def _name_page(self) -> None:
        """Say which image the page is: on the canvas, and to ``events.current_image``."""
        image = self._by_id.get(self._page) if self._page is not None else None
        if image is not None:
            overlay = self.viewer.canvas.overlays.text
            overlay.text = f"{image.name}  ({self.plane(image.id) + 1}/{self.planes})"
            overlay.visible = True
        self.events.current_image(value=self._page)

    def _fill(self, observations: Sequence[Observation]) -> None:
        """Replace every row of the boxes and keypoints layers by these observations."""
        layers = (self.boxes_layer, self.keypoints_layer)
        with self._quiet():
            for layer in layers:
                layer.selected_data = set()
                if len(layer.data):
                    layer.remove(list(range(len(layer.data))))
            self._add_rows(observations)
            for layer in layers:  # a new page starts with nothing selected
                layer.selected_data = set()
        self._recount()
        self._draw_skeleton()

    def _draw_skeleton(self) -> None:
        if self.skeleton_layer is None:
            return
        vectors, colours = skeleton_vectors(self.keypoints_layer.data,
                                            self.keypoints_layer.features, self._cats_by_name)
        self.skeleton_layer.data = vectors
        if len(colours):
            self.skeleton_layer.edge_color = colours

    def _activate_edit_layer(self) -> None:
        """Make active the layer a labeller edits: the keypoints when a category has some to
        place, else the boxes (never the skeleton, a drawing of the keypoints)."""
        if self not in _OPEN:
            return
        has_keypoints = any(c.keypoints_enabled for c in self._cats.values())
        layer = self.keypoints_layer if has_keypoints else self.boxes_layer
        if layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer

    def _label_axis(self) -> None:
        """Name the slider's axis ("image", not napari's "-3")."""
        dims = self.viewer.dims
        if dims.ndim >= 3:
            labels = list(dims.axis_labels)
            labels[dims.ndim - 3] = "image"
            dims.axis_labels = labels

    # ------------------------------------------------------------------ layer -> index
    def _on_boxes_data(self, event: Any) -> None:
        self._on_layer_data("boxes", event)

    def _on_keypoints_data(self, event: Any) -> None:
        self._on_layer_data("keypoints", event)

    def _on_layer_data(self, role: str, event: Any) -> None:
        if self._busy:
            return
        self._apply_layer_edit(role, event)
        if role == "keypoints" and event.action in DONE:  # not again for the "-ing" twin
            self._draw_skeleton()

    def _apply_layer_edit(self, role: str, event: Any) -> None:
        layer = getattr(self, f"{role}_layer")
        action = event.action
        if action == ActionType.REMOVING:
            self._removing[role] = _row_keys(
                layer, [i for i in event.data_indices if 0 <= i < len(layer.features)])
            return
        if action == ActionType.REMOVED:
            removed, self._removing[role] = self._removing[role], []
            (self._boxes_removed if role == "boxes" else self._keypoints_removed)(removed)
        elif action == ActionType.ADDED:
            new = list(range(self._counts[role], len(layer.data)))
            if new:
                (self._boxes_added if role == "boxes" else self._keypoints_added)(new)
        elif action == ActionType.CHANGED:
            changed = [i for i in event.data_indices if 0 <= i < len(layer.data)]
            (self._boxes_changed if role == "boxes" else self._keypoints_changed)(changed)
        self._recount()

    def _clipped_box(self, vertices: np.ndarray, image: ImageRecord) -> tuple[float, ...]:
        """The axis-aligned box around a shape's vertices, clipped to its image."""
        ys, xs = vertices[:, 1], vertices[:, 2]
        x0, x1 = (float(np.clip(v, 0, image.width)) for v in (xs.min(), xs.max()))
        y0, y1 = (float(np.clip(v, 0, image.height)) for v in (ys.min(), ys.max()))
        return (x0, y0, x1, y1)

    def _show_box(self, row: int, plane: int, box: Sequence[float], cat: Category) -> None:
        """Make a row the exact rectangle of a stored box, in its category's colours (left alone
        when it is already: a redraw of the layer is most of an edit's cost)."""
        layer = self.boxes_layer
        vertices = box_vertices(plane, box)
        current = layer.data[row]
        edge, face = rgba(cat.colour), rgba(cat.colour, BOX_FACE_ALPHA)
        same_shape = layer.shape_type[row] == "rectangle" and current.shape == vertices.shape \
            and np.allclose(np.sort(current, axis=0), np.sort(vertices, axis=0), atol=1e-3)
        if same_shape and np.allclose(layer.edge_color[row], edge) and \
                np.allclose(layer.face_color[row], face):
            return
        with self._quiet():
            # napari has no public call to replace one shape in place
            layer._data_view.edit(row, current if same_shape else vertices,
                                  new_type="rectangle", edge_color=edge, face_color=face)
            layer.refresh()

    def _boxes_added(self, rows: list[int]) -> None:
        """New boxes take the active category: what the Index panel shows as active, whatever
        napari made current by a selection."""
        layer = self.boxes_layer
        items, problems = [], []
        for row in rows:
            cat = self._cats_by_name.get(self._active_category or "")
            image = self._image_at(layer.data[row][0, 0])
            box = self._clipped_box(layer.data[row], image) if image else None
            if cat is None:
                problems.append("choose a category first (no active category)")
            elif not cat.roi_enabled:
                problems.append(f"category {cat.name!r} has boxes (ROI) switched off")
            elif image is None:
                problems.append("the box is not on an image")
            elif box[2] <= box[0] or box[3] <= box[1]:
                problems.append(f"the box lies outside image {image.name}")
            else:
                items.append((row, image, cat, box))
        items = self._drop_rows(layer, rows, items, problems, "box")
        if not items:
            return
        added: list[Observation] = []

        def write() -> None:
            added.extend(self.index.add_observations([
                {"image": image.id, "category": cat.id, "box": box, "source": "human"}
                for _, image, cat, box in items
            ]))

        if not self._write({"boxes": [i[0] for i in items]}, "box", write):
            return
        for (row, image, cat, _), obs in zip(items, added, strict=True):
            self._set_row_features(layer, row, {"observation_id": obs.id, "category": cat.name,
                                                "source": obs.source, "score": np.nan})
            self._show_box(row, self._plane[image.id], obs.box, cat)

    def _recategorise(self, ids: set[int], cat: Category) -> None:
        """Move the observations of the selected boxes to category ``cat``; their keypoints go
        along when ``cat`` has the same keypoint names, else the change is refused (it would
        drop them)."""
        moving = [o for o in self.index.observations(ids=ids) if o.category_id != cat.id]
        if not moving:
            return
        problems = []
        if not cat.roi_enabled:
            problems.append(f"category {cat.name!r} has boxes (ROI) switched off")
        for obs in moving:
            old = self._cats[obs.category_id]
            if obs.has_keypoints and old.keypoint_names != cat.keypoint_names:
                problems.append(f"the {old.name!r} box has keypoints that {cat.name!r} does not "
                                "have (delete them first)")
                break
        def write() -> None:
            for obs in moving:
                self.index.update_observation(obs.id, category=cat.id, keypoints=obs.keypoints)

        if problems:
            show_warning(f"category not changed: {problems[0]}")
        else:
            self._write({}, "category change", write)
        self._sync_observations(o.id for o in moving)  # as the index has them: colour, label

    def _boxes_changed(self, rows: list[int]) -> None:
        layer = self.boxes_layer
        ids = layer.features["observation_id"].to_numpy()
        stored = {o.id: o for o in self.index.observations(ids=[int(ids[r]) for r in rows])}
        updates = []
        for row in rows:
            obs = stored.get(int(ids[row]))
            if obs is None:
                continue
            image = self.index.image(obs.image_id)
            box = self._clipped_box(layer.data[row], image)
            cat = self._cats[obs.category_id]
            if box[2] <= box[0] or box[3] <= box[1]:
                show_warning(f"box not saved: it would lie outside image {image.name}")
                self._show_box(row, self._plane[image.id], obs.box, cat)
                continue
            if obs.box is None or not np.allclose(box, obs.box):
                updates.append((row, obs, box))
            self._show_box(row, self._plane[image.id], box, cat)
        if not updates:
            return
        done: list[Observation] = []

        def write() -> None:
            done.extend(self.index.update_observation(o.id, box=b) for _, o, b in updates)

        if self._write({"boxes": [u[0] for u in updates]}, "box", write):
            for (row, _, _), obs in zip(updates, done, strict=True):
                self._set_row_features(layer, row, {"source": obs.source, "score": np.nan})

    def _boxes_removed(self, removed: list[tuple[int, str]]) -> None:
        ids = sorted({i for i, _ in removed if i != NO_OBSERVATION})
        if not ids:
            return

        def write() -> None:
            for obs_id in ids:
                self.index.remove_parts(obs_id, box=True)

        if not self._write({}, "box deletion", write):
            self._sync_observations(ids)

    def _attach_target(
        self, cat: Category, image: ImageRecord, slot: int, x: float, y: float, taken: set[int]
    ) -> Observation | None:
        """The observation a new keypoint belongs to: same category and image, lacking that
        keypoint; the one :func:`~napari_learn_complete.index.attach_target` picks by its box,
        else one without a box (a skeleton being labelled point by point)."""
        candidates = [
            o for o in self.index.observations(images=[image.id], category=cat.id)
            if o.id not in taken and (o.keypoints is None or o.keypoints[slot][2] == 0)
        ]
        boxless = (o for o in candidates if o.box is None)
        return attach_target((x, y, x, y), candidates) or next(boxless, None)

    def _keypoints_added(self, rows: list[int]) -> None:
        """New points are the active category's active keypoint (the panel's choice; napari
        makes a selected point's features current, which must not change what is placed)."""
        layer = self.keypoints_layer
        items, problems = [], []
        for row in rows:
            cat = self._cats_by_name.get(self._active_category or "")
            kp = self._active_keypoint or ""
            z, y, x = layer.data[row]
            image = self._image_at(z)
            if cat is None:
                problems.append("choose a category first (no active category)")
            elif not cat.keypoints_enabled:
                with_kps = [c.name for c in self._cats.values() if c.keypoints_enabled]
                problems.append(f"category {cat.name!r} has no keypoints" + (
                    f": make {', '.join(map(repr, with_kps))} the active category"
                    if with_kps else ""))
            elif kp not in cat.keypoint_names:
                problems.append(f"choose which keypoint of {cat.name!r} to place (Keypoint "
                                "to place, in the Index panel)")
            elif image is None:
                problems.append("the keypoint is not on an image")
            else:
                x = float(np.clip(x, 0, image.width))
                y = float(np.clip(y, 0, image.height))
                items.append((row, image, cat, kp, x, y))
        items = self._drop_rows(layer, rows, items, problems, "keypoint")
        if not items:
            return
        results: list[Observation] = []

        def write() -> None:
            taken: set[int] = set()
            for _, image, cat, kp, x, y in items:
                slot = cat.keypoint_names.index(kp)
                target = self._attach_target(cat, image, slot, x, y, taken)
                if target is None:
                    kps = [(0.0, 0.0, 0)] * len(cat.keypoint_names)
                    kps[slot] = (x, y, 2)
                    obs = self.index.add_observation(image.id, cat.id, keypoints=kps)
                else:
                    kps = list(target.keypoints or [(0.0, 0.0, 0)] * len(cat.keypoint_names))
                    kps[slot] = (x, y, 2)
                    obs = self.index.update_observation(target.id, keypoints=kps)
                taken.add(obs.id)
                results.append(obs)

        if not self._write({"keypoints": [i[0] for i in items]}, "keypoint", write):
            return
        for (row, image, cat, kp, x, y), obs in zip(items, results, strict=True):
            self._set_row_features(layer, row, {"observation_id": obs.id, "category": cat.name,
                                                "keypoint": kp, "source": obs.source,
                                                "score": np.nan})
            self._show_point(row, self._plane[image.id], x, y, cat)
        # rows of the observations just touched that already were in the layer: new source
        self._refresh_features({o.id: o for o in results})
        self._advance_keypoint(items[-1][2], items[-1][3], results[-1])

    def _advance_keypoint(self, cat: Category, placed: str, obs: Observation) -> None:
        """After a click, the next keypoint to place: the next one (in the category's order)
        that this observation still lacks; the first once it has them all, so the next click
        starts the next object."""
        if self._active_category != cat.name or self._active_keypoint != placed:
            return  # the user chose another meanwhile
        names = cat.keypoint_names
        labelled = {n for n, (_, _, v) in zip(names, obs.keypoints or (), strict=False) if v > 0}
        start = names.index(placed)
        after = [names[(start + k) % len(names)] for k in range(1, len(names))]
        self.active_keypoint = next((n for n in after if n not in labelled), names[0])

    def _show_point(self, row: int, plane: int, x: float, y: float, cat: Category) -> None:
        layer = self.keypoints_layer
        with self._quiet():
            layer.data[row] = (plane, y, x)
            layer.face_color[row] = rgba(cat.colour)
            layer.border_color[row] = rgba(cat.colour)
            layer.refresh()

    def _refresh_features(self, observations: dict[int, Observation]) -> None:
        """Update source and score of every row of these observations (after a human edit)."""
        for layer in (self.boxes_layer, self.keypoints_layer):
            ids = layer.features["observation_id"].to_numpy()
            for row in np.flatnonzero(np.isin(ids, list(observations))):
                obs = observations[int(ids[row])]
                self._set_row_features(layer, int(row), {
                    "source": obs.source, "score": np.nan if obs.score is None else obs.score,
                })

    def _keypoints_changed(self, rows: list[int]) -> None:
        layer = self.keypoints_layer
        features = layer.features
        moves: dict[int, list[tuple[int, str]]] = {}
        for row in rows:
            obs_id = int(features["observation_id"].iloc[row])
            if obs_id != NO_OBSERVATION:
                moves.setdefault(obs_id, []).append((row, str(features["keypoint"].iloc[row])))
        if not moves:
            return
        done: list[Observation] = []

        def write() -> None:
            for obs in self.index.observations(ids=list(moves)):
                cat = self._cats[obs.category_id]
                image = self.index.image(obs.image_id)
                kps = list(obs.keypoints or [(0.0, 0.0, 0)] * len(cat.keypoint_names))
                for row, kp in moves[obs.id]:
                    _, y, x = layer.data[row]
                    x = float(np.clip(x, 0, image.width))
                    y = float(np.clip(y, 0, image.height))
                    slot = cat.keypoint_names.index(kp)
                    kps[slot] = (x, y, kps[slot][2] or 2)
                    self._show_point(row, self._plane[image.id], x, y, cat)
                done.append(self.index.update_observation(obs.id, keypoints=kps))

        rows_touched = [r for v in moves.values() for r, _ in v]
        if self._write({"keypoints": rows_touched}, "keypoint", write):
            self._refresh_features({o.id: o for o in done})

    def _keypoints_removed(self, removed: list[tuple[int, str]]) -> None:
        gone: dict[int, set[str]] = {}
        for obs_id, kp in removed:
            if obs_id != NO_OBSERVATION:
                gone.setdefault(obs_id, set()).add(kp)
        if not gone:
            return
        touched: list[Observation] = []

        def write() -> None:
            for obs_id, names in gone.items():
                left = self.index.remove_parts(obs_id, keypoints=names)
                if left is not None:
                    touched.append(left)

        if self._write({}, "keypoint deletion", write):
            self._refresh_features({o.id: o for o in touched})
        else:
            self._sync_observations(gone)

    # ------------------------------------------------------------------ index -> layers
    def _on_index_change(self, change: Change) -> None:
        """Runs in the committing thread: hop to the main thread (a direct call when there).

        Observation changes from other threads (a Complete streaming batches from the engine)
        are gathered and shown together at most every ``ARRIVALS_MS``: a batch announces one
        change per observation, and a Shapes update per change (each ~20 ms on a few thousand
        boxes) kept the window from answering.
        """
        if change.table == "observations" and threading.current_thread() is not \
                threading.main_thread():
            with self._arrived_lock:
                first = not self._arrived
                self._arrived.update(change.ids)
            if first:
                self._show_arrived_soon()
            return
        self._apply_change_in_main_thread(change)

    @ensure_main_thread
    def _show_arrived_soon(self) -> None:
        QTimer.singleShot(ARRIVALS_MS, self._show_arrived)

    def _show_arrived(self) -> None:
        with self._arrived_lock:
            ids, self._arrived = self._arrived, set()
        if ids and self in _OPEN:
            self._sync_observations(ids)

    @ensure_main_thread
    def _apply_change_in_main_thread(self, change: Change) -> None:
        # busy: the change is our own write from a layer edit, already shown (no echo)
        if self._busy or self not in _OPEN:
            return
        if change.table == "observations":
            self._sync_observations(change.ids)
        elif change.table == "categories" or (change.table == "images"
                                               and change.action != "updated"):
            # an image update is its reviewed flag, which the layers do not show
            self.refresh()
            if self._active_category not in self._cats_by_name:
                first = next(iter(self._cats.values()), None)
                self.active_category = first.name if first else None

    def _sync_observations(self, ids: Iterable[int]) -> None:
        """Replace the rows of these observations by what the index holds now (only those of
        the image shown have rows); what was selected stays selected."""
        ids = sorted({int(i) for i in ids})
        if not ids or self._page is None:
            return
        current = self.index.observations(ids=ids, images=[self._page])
        if any(o.category_id not in self._cats for o in current):
            self._load_catalogue()
        layers = (self.boxes_layer, self.keypoints_layer)
        chosen = [_row_keys(layer, layer.selected_data) for layer in layers]
        with self._quiet():
            for layer in layers:
                column = layer.features["observation_id"].to_numpy()
                stale = np.flatnonzero(np.isin(column, ids)).tolist()
                if stale:
                    layer.selected_data = set()
                    layer.remove(stale)
            self._add_rows(current)
            for layer, keys in zip(layers, chosen, strict=True):
                rows = range(len(layer.data))
                layer.selected_data = {r for r, key in zip(rows, _row_keys(layer, rows),
                                                           strict=True) if key in keys}
        self._recount()
        self._draw_skeleton()

    def _add_rows(self, observations: Sequence[Observation]) -> None:
        """Append the rows showing these observations (of the page) to the two layers, in
        their categories' colours; the caller keeps the layers quiet."""
        data, features, edge, face = box_rows(observations, self._plane, self._cats)
        if data:
            start = len(self.boxes_layer.data)
            self.boxes_layer.add(data, shape_type="rectangle", edge_color=edge, face_color=face)
            fill_features(self.boxes_layer, start, features)
        points, features, colour = keypoint_rows(observations, self._plane, self._cats)
        if len(points):
            layer = self.keypoints_layer
            start = len(layer.data)
            layer.add(points)
            layer.face_color[start:] = colour
            layer.border_color[start:] = colour
            fill_features(layer, start, features)
            layer.refresh()

    def _on_layer_removed(self, event: Any) -> None:
        """Stop syncing once none of its layers is left in the viewer."""
        if not any(layer in self.viewer.layers for layer in self.layers):
            self.close()


def _row_ids(layer: Layer, rows: Iterable[int]) -> set[int]:
    """The observations that ``rows`` of a layer show (new rows, not saved yet, have none)."""
    column = layer.features["observation_id"].to_numpy()
    return {int(column[i]) for i in rows if i < len(column)} - {NO_OBSERVATION}


def _selected_ids(layer: Layer) -> set[int]:
    return _row_ids(layer, layer.selected_data)


def _row_keys(layer: Layer, rows: Iterable[int]) -> list[tuple[int, str]]:
    """What rows show, independent of their position: (observation id, keypoint name)."""
    features = layer.features
    names = features.get("keypoint")
    return [(int(features["observation_id"].iloc[r]),
             "" if names is None else str(names.iloc[r])) for r in rows]
