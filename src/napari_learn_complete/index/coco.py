"""COCO import and export (instances and person-keypoints style).

Import checks the whole file, and decodes every image it names, before it writes anything; then
it writes categories, images and observations in one transaction, so a file that fails anywhere
leaves the index as it was. Importing a file again adds nothing: known images are reused and
annotations the index already holds are skipped. Files from other tools (CVAT, Label Studio,
Roboflow, mmpose) carry extra fields, which are ignored. A ``file_name`` may have sub-folders; it
is resolved against the image root, becomes the image's name in the index, and may never leave
that root.

Coordinates and sizes are those of the displayed image, as every annotation tool shows it (a
JPEG's EXIF orientation applied): a file declaring the stored, unrotated size of a rotated image
is refused, naming the orientation and both sizes.

Export writes what pycocotools reads: boxes as ``[x, y, w, h]``, ``area``, ``iscrowd``, keypoints
as flat ``[x, y, v, ...]`` with ``num_keypoints``, skeletons 1-based. Observations made by a model
also carry ``score`` and ``model_version``, so an export can be scored as detections.
"""

from __future__ import annotations

import filecmp
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import BadInputError, read_json
from . import media
from .store import Category, ImageRecord, Index, Observation, check_observation


@dataclass(frozen=True)
class ImportReport:
    """What an import added: counts, the categories created or merged by name, the new ids, and
    how many annotations of the file the index already held (skipped)."""

    source: Path
    images_added: int
    images_reused: int
    categories_added: tuple[str, ...]
    categories_merged: tuple[str, ...]
    observation_ids: tuple[int, ...]
    already_present: int = 0

    @property
    def observations(self) -> int:
        return len(self.observation_ids)


_SAME = 1e-6  # coordinates this close are the same annotation imported again


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class _Checker:
    """Collects the parsed file; every problem raises a BadInputError naming file and item."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> BadInputError:
        return BadInputError(f"{self.source}: {where}: {problem}")

    def field(self, item: dict, key: str, where: str, check, kind: str, optional: bool = False):
        if key not in item:
            if optional:
                return None
            raise self.fail(where, f"missing key {key!r}")
        value = item[key]
        if not check(value):
            raise self.fail(where, f"{key!r} must be {kind}, not {value!r}"[:300])
        return value

    def entries(self, data: dict, key: str) -> list[dict]:
        if key not in data:
            raise self.fail("file", f"missing key {key!r}")
        if not isinstance(data[key], list):
            raise self.fail("file", f"{key!r} must be a list")
        for i, item in enumerate(data[key]):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "must be an object")
        return data[key]


def _shown(file_name: str) -> str:
    """A file name short enough for a one-line message."""
    return file_name if len(file_name) <= 80 else f"{file_name[:77]}..."


def _image_name(checker: _Checker, file_name: str, where: str) -> str:
    """The file name as a clean relative POSIX path, refusing any way out of the image root."""
    if "\0" in file_name:
        raise checker.fail(where, f"file_name {_shown(file_name)!r} contains a NUL byte")
    posix = file_name.replace("\\", "/")
    path = PurePosixPath(posix)
    if path.is_absolute() or (len(posix) > 1 and posix[1] == ":") or ".." in path.parts:
        raise checker.fail(where, f"file_name {file_name!r} leaves the image root")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise checker.fail(where, f"file_name {file_name!r} names no file")
    return "/".join(parts)


def _read_json(path: Path) -> dict:
    data = read_json(path, "COCO file")
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: a COCO file is a JSON object with images, annotations "
                            "and categories")
    return data


def _check_categories(checker: _Checker, index: Index, entries: list[dict]) -> dict[int, Category]:
    """COCO category id -> Category to write to: an existing one with that name, or a new one
    (id 0, not yet in the index)."""
    found: dict[int, Category] = {}
    names: set[str] = set()
    for i, item in enumerate(entries):
        where = f"category {item.get('id', f'#{i}')}"
        cat_id = checker.field(item, "id", where, _is_int, "an integer")
        name = checker.field(item, "name", where, lambda v: isinstance(v, str) and v.strip(),
                             "a non-empty string")
        keypoints = checker.field(
            item, "keypoints", where,
            lambda v: isinstance(v, list) and all(isinstance(k, str) and k for k in v),
            "a list of keypoint names", optional=True) or []
        skeleton = checker.field(
            item, "skeleton", where,
            lambda v: isinstance(v, list) and all(
                isinstance(e, list) and len(e) == 2 and all(_is_int(j) for j in e) for e in v),
            "a list of [a, b] keypoint numbers", optional=True) or []
        if cat_id in found or name in names:
            raise checker.fail(where, f"category id {cat_id} or name {name!r} is given twice")
        if len(set(keypoints)) != len(keypoints):
            raise checker.fail(where, "keypoint names must be unique")
        for a, b in skeleton:
            if not (1 <= a <= len(keypoints) and 1 <= b <= len(keypoints)):
                raise checker.fail(where, f"skeleton edge {[a, b]} is not between keypoints 1 "
                                          f"and {len(keypoints)} (COCO counts from 1)")
        names.add(name)
        try:
            existing = index.category(name)
        except BadInputError:
            existing = None
        if existing is not None:
            if keypoints and tuple(keypoints) != existing.keypoint_names:
                raise checker.fail(
                    where, f"category {name!r} exists in the index with keypoints "
                    f"{list(existing.keypoint_names)}, the file has {keypoints}")
            found[cat_id] = existing
        else:
            found[cat_id] = Category(
                id=0, name=name, colour="", roi_enabled=True, keypoints_enabled=bool(keypoints),
                keypoint_names=tuple(keypoints),
                skeleton=tuple((a - 1, b - 1) for a, b in skeleton))
    return found


def _check_images(
    checker: _Checker, index: Index, entries: list[dict], root: Path
) -> dict[int, tuple[ImageRecord, Path | None, tuple[int, int, int] | None]]:
    """COCO image id -> (record, file to add or None when the index has it under that name or
    that file, probed size)."""
    found: dict[int, tuple[ImageRecord, Path | None, tuple[int, int, int] | None]] = {}
    names: set[str] = set()
    root = root.resolve()
    by_path = {index.resolve(r): r for r in index.images() if r.media == "image"}
    for i, item in enumerate(entries):
        where = f"image {item.get('id', f'#{i}')}"
        image_id = checker.field(item, "id", where, _is_int, "an integer")
        file_name = checker.field(item, "file_name", where, lambda v: isinstance(v, str) and v,
                                  "a non-empty string")
        size = [checker.field(item, key, where, lambda v: _is_int(v) and v > 0,
                              "a positive integer", optional=True) for key in ("width", "height")]
        name = _image_name(checker, file_name, where)
        where = f"image {image_id} ({_shown(file_name)})"
        if image_id in found or name in names:
            raise checker.fail(where, "image id or file_name is given twice")
        names.add(name)
        path = root / name
        try:
            if not path.resolve().is_relative_to(root):  # a symbolic link out of the root
                raise checker.fail(where, f"file_name {_shown(file_name)!r} leaves the image root")
            existing = _known_image(index, name) or by_path.get(path.resolve())
            if existing is None and not path.is_file():
                raise checker.fail(where, f"image file {path} not found")
        except OSError as exc:  # a name too long, for one
            raise checker.fail(where, f"file_name is not a usable path "
                                      f"({exc.strerror or exc})") from exc
        if existing is not None:
            actual, path, probed = (existing.width, existing.height), None, None
            record = existing
        else:
            try:
                probed = media.probe(path)
            except BadInputError as exc:
                raise checker.fail(where, str(exc)) from exc
            actual = probed[:2]
            record = ImageRecord(0, name, str(path), None, probed[0], probed[1], probed[2],
                                 "image")
        if any(s is not None and s != a for s, a in zip(size, actual, strict=True)):
            raise checker.fail(where, _size_problem(size, actual, path or index.resolve(record)))
        found[image_id] = (record, path, probed)
    return found


def _size_problem(size: list[int | None], actual: tuple[int, int], path: Path) -> str:
    """Why the declared size is not the image's, naming the EXIF orientation when the file
    declares the stored size of an image its orientation turns."""
    declared = f"{size[0]}x{size[1]}"
    orientation = media.exif_orientation(path) if size == [actual[1], actual[0]] else 1
    if orientation in media.QUARTER_TURNS:
        return (f"declares {declared}, the stored size, but its EXIF orientation {orientation} "
                f"turns it to {actual[0]}x{actual[1]} as displayed; annotations are in displayed "
                "coordinates, as every annotation tool shows the image, so declare that size")
    return f"declares {declared} but the image is {actual[0]}x{actual[1]}"


def _check_annotations(
    checker: _Checker,
    entries: list[dict],
    images: dict[int, tuple[ImageRecord, Any, Any]],
    categories: dict[int, Category],
) -> list[tuple[int, int, dict[str, Any]]]:
    """(COCO image id, COCO category id, observation fields) per annotation, all checked."""
    out = []
    seen: set[int] = set()
    for i, item in enumerate(entries):
        where = f"annotation {item.get('id', f'#{i}')}"
        ann_id = checker.field(item, "id", where, _is_int, "an integer")
        if ann_id in seen:
            raise checker.fail(where, "annotation id is given twice")
        seen.add(ann_id)
        image_id = checker.field(item, "image_id", where, _is_int, "an integer")
        cat_id = checker.field(item, "category_id", where, _is_int, "an integer")
        if image_id not in images:
            raise checker.fail(where, f"unknown image_id {image_id}")
        if cat_id not in categories:
            raise checker.fail(where, f"unknown category_id {cat_id}")
        bbox = checker.field(item, "bbox", where,
                             lambda v: isinstance(v, list) and len(v) == 4
                             and all(_is_number(x) for x in v),
                             "[x, y, width, height] numbers", optional=True)
        flat = checker.field(item, "keypoints", where,
                             lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
                             "a list of numbers", optional=True)
        iscrowd = checker.field(item, "iscrowd", where, lambda v: _is_int(v) and v in (0, 1),
                                "0 or 1", optional=True)
        box = keypoints = None
        if bbox is not None:
            x, y, w, h = bbox
            if w < 0 or h < 0:
                raise checker.fail(where, f"bbox {bbox} has a negative width or height")
            box = (x, y, x + w, y + h)
        cat, image = categories[cat_id], images[image_id][0]
        if flat:  # an empty list means "no keypoints", as some tools write for box-only classes
            names = cat.keypoint_names
            if len(flat) % 3:
                raise checker.fail(where, f"'keypoints' has {len(flat)} numbers, not x, y, v "
                                          "triples")
            if len(flat) != 3 * len(names):
                raise checker.fail(where, f"{len(flat) // 3} keypoints given, category "
                                          f"{cat.name!r} has {len(names)}")
            if any(v not in (0, 1, 2) for v in flat[2::3]):
                raise checker.fail(where, "keypoint visibility must be 0, 1 or 2")
            keypoints = [(flat[j], flat[j + 1], int(flat[j + 2])) for j in range(0, len(flat), 3)]
        try:
            box, keypoints = check_observation(image, cat, box, keypoints)
        except BadInputError as exc:
            raise checker.fail(where, str(exc)) from exc
        out.append((image_id, cat_id, dict(box=box, keypoints=keypoints,
                                           iscrowd=bool(iscrowd), source="human")))
    return out


def _known_image(index: Index, name: str) -> ImageRecord | None:
    try:
        return index.image(name)
    except BadInputError:
        return None


def _category_id(index: Index, cat: Category) -> int:
    """The category's id, adding it unless it exists (perhaps added by an import running at the
    same time since the file was checked)."""
    if cat.id:
        return cat.id
    try:
        return index.category(cat.name).id
    except BadInputError:
        return index.add_category(cat.name, keypoints=cat.keypoint_names or None,
                                  skeleton=cat.skeleton).id


def _same(a: Any, b: Any) -> bool:
    """Boxes, or keypoint lists, equal within ``_SAME`` (two absent ones are equal)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.ravel(np.asarray(a, dtype=float)), np.ravel(np.asarray(b, dtype=float))
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= _SAME))


def _new_rows(index: Index, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The observation rows the index does not hold yet. Each observation already there (same
    image, category, box and keypoints) stands for one row, so a file with two identical
    annotations imports both once, and again no more."""
    existing: dict[tuple[int, int], list[Observation]] = {}
    for obs in index.observations(images=sorted({row["image"] for row in rows})):
        existing.setdefault((obs.image_id, obs.category_id), []).append(obs)
    new = []
    for row in rows:
        same = existing.get((row["image"], row["category"]), [])
        match = next((i for i, obs in enumerate(same) if _same(obs.box, row["box"])
                      and _same(obs.keypoints, row["keypoints"])), None)
        if match is None:
            new.append(row)
        else:
            del same[match]
    return new


class _Copies:
    """The image files an import with ``copy`` puts into ``images/``.

    Each is copied first into a hidden folder unique to this import, and moved to its name only
    inside the import's transaction, under the write lock; a failed import removes its folder and
    the files it moved, never a file another import (or an earlier, killed one) put there. A file
    already at the name that is byte-identical to the source (left by a killed import) is taken
    as it is; a different one is refused.
    """

    def __init__(self, checker: _Checker, images_dir: Path) -> None:
        self.checker = checker
        images_dir.mkdir(exist_ok=True)
        self.images_dir = images_dir.resolve()
        self.staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.images_dir))
        self.placed: list[Path] = []

    def target(self, name: str, source: Path) -> Path:
        """Where ``name`` goes; refused when it leaves images/ or holds a different file."""
        target = self.images_dir / name
        if not target.resolve().is_relative_to(self.images_dir):
            raise self.checker.fail(f"image {name}", f"{target} leaves the images folder")
        if target.exists() and not (target.is_file()
                                    and filecmp.cmp(source, target, shallow=False)):
            raise self.checker.fail(f"image {name}", f"{target} already exists and is not the "
                                                     f"same file as {source}; move it away")
        return target

    def stage(self, sources: list[Path]) -> list[Path]:
        """Copy the files into this import's hidden folder, before the write lock is taken."""
        staged = [self.staging / str(i) for i in range(len(sources))]
        for source, copy in zip(sources, staged, strict=True):
            shutil.copy2(source, copy)
        return staged

    def place(self, staged: Path, source: Path, name: str) -> Path:
        """Move a staged copy to its name (under the write lock), unless the same file is there."""
        target = self.target(name, source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            self.placed.append(target)
        return target

    def remove_placed(self) -> None:
        for target in self.placed:
            target.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def import_coco(
    index: Index, coco_json: str | os.PathLike, images_dir: str | os.PathLike, *,
    copy: bool = False, allow_duplicates: bool = False,
) -> ImportReport:
    """Import a COCO file whose ``file_name``s are relative to ``images_dir``; all or nothing.

    Categories merge with existing ones of the same name; images already in the index under the
    same name (and size), or referencing the same file, get the annotations added. An annotation
    the index already holds (same image, category, box and keypoints) is skipped, so importing a
    file again adds nothing; ``allow_duplicates`` adds it anyway. With ``copy`` new image files
    are copied into the index's ``images/`` folder; otherwise they are referenced where they are.
    """
    source = Path(coco_json)
    root = Path(images_dir)
    if not root.is_dir():
        raise BadInputError(f"{root}: image folder not found")
    checker = _Checker(source)
    data = _read_json(source)
    categories = _check_categories(checker, index, checker.entries(data, "categories"))
    images = _check_images(checker, index, checker.entries(data, "images"), root)
    annotations = _check_annotations(checker, checker.entries(data, "annotations"), images,
                                     categories)
    new_images = {coco_id: (record.name, path, probed)
                  for coco_id, (record, path, probed) in images.items() if path is not None}
    copies = _Copies(checker, index.images_dir) if copy and new_images else None
    try:
        staged = {}
        if copies is not None:
            for name, path, _ in new_images.values():
                copies.target(name, path)  # refuse a different file before copying anything
            staged = dict(zip(new_images, copies.stage([p for _, p, _ in new_images.values()]),
                              strict=True))
        with index.transaction():
            # under the write lock: what a concurrent import added since the check is reused
            cat_ids = {coco_id: _category_id(index, cat) for coco_id, cat in categories.items()}
            image_ids = {coco_id: record.id for coco_id, (record, path, _) in images.items()
                         if path is None}
            to_add = []
            for coco_id, (name, path, probed) in new_images.items():
                known = _known_image(index, name)
                if known is not None:
                    image_ids[coco_id] = known.id
                    continue
                if copies is not None:
                    path = copies.place(staged[coco_id], path, name)
                to_add.append((coco_id, name, path, probed))
            added = index.add_images([path for _, _, path, _ in to_add],
                                     names=[name for _, name, _, _ in to_add],
                                     probed=[probed for _, _, _, probed in to_add])
            image_ids.update({coco_id: r.id for (coco_id, *_), r in
                              zip(to_add, added, strict=True)})
            rows = [dict(image=image_ids[img], category=cat_ids[cat], **fields)
                    for img, cat, fields in annotations]
            new_rows = rows if allow_duplicates else _new_rows(index, rows)
            observations = index.add_observations(new_rows)
    except BaseException:
        if copies is not None:
            copies.remove_placed()
        raise
    finally:
        if copies is not None:
            copies.close()
    return ImportReport(
        source=source,
        images_added=len(added),
        images_reused=len(images) - len(added),
        categories_added=tuple(c.name for c in categories.values() if not c.id),
        categories_merged=tuple(c.name for c in categories.values() if c.id),
        observation_ids=tuple(o.id for o in observations),
        already_present=len(rows) - len(new_rows),
    )


def _annotation(obs: Observation) -> dict[str, Any]:
    ann: dict[str, Any] = {"id": obs.id, "image_id": obs.image_id,
                           "category_id": obs.category_id, "iscrowd": int(obs.iscrowd)}
    # keypoints only: the extent of the labelled keypoints sets the OKS scale
    x0, y0, x1, y1 = obs.extent or (0.0, 0.0, 0.0, 0.0)
    if obs.box is not None:
        ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    ann["area"] = (x1 - x0) * (y1 - y0)
    if obs.keypoints is not None:
        ann["keypoints"] = [v for kp in obs.keypoints for v in kp]
        ann["num_keypoints"] = sum(v > 0 for _, _, v in obs.keypoints)
    if obs.source == "model":
        ann["score"] = obs.score if obs.score is not None else 1.0
        ann["model_version"] = obs.model_version
    return ann


def export_coco(
    index: Index,
    out_json: str | os.PathLike,
    *,
    images: Iterable[ImageRecord | int | str] | None = None,
) -> dict[str, Any]:
    """Write the index (or the given images) as a COCO file; returns the written dict.

    Video clips are left out: COCO has no place for them.
    """
    records = (index.images() if images is None else
               [i if isinstance(i, ImageRecord) else index.image(i) for i in images])
    records = [r for r in records if not r.is_video]
    data = {
        "info": {"description": f"exported by napari-learn-complete from {index.path.name}"},
        "images": [{"id": r.id, "file_name": r.name, "width": r.width, "height": r.height}
                   for r in records],
        "categories": [
            {"id": c.id, "name": c.name, "supercategory": "", "keypoints": list(c.keypoint_names),
             "skeleton": [[a + 1, b + 1] for a, b in c.skeleton]}
            for c in index.categories()
        ],
        "annotations": [_annotation(o) for o in index.observations(images=records)],
    }
    _write_new(Path(out_json), json.dumps(data).encode("utf-8"))
    return data


def _write_new(out: Path, content: bytes) -> None:
    """Write ``out`` whole or not at all (a reader never sees half a file): through a temporary
    file created exclusively beside it, so a link planted under a predictable name is never
    followed. A folder that is missing, a folder as the target or a full disk is refused by name."""
    if out.is_dir():
        raise BadInputError(f"the COCO file to write is a folder; give a file name: {out}")
    if not out.parent.is_dir():
        raise BadInputError(f"the folder to write the COCO file in does not exist: {out.parent}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, out)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise BadInputError(f"could not write the COCO file ({exc.strerror or exc}): {out}") \
            from exc
