"""The index: one folder, one SQLite database, the single source of truth of a dataset.

Layout::

    INDEX/
      index.sqlite      images, categories, observations, attributes, models, runs
      images/           image files copied in (others are referenced where they are, in the
                        folders registered as the index's image roots: nothing else is read)
      models/           model configurations and weight versions (see ``model.registry``)

Its database, transactions and change listeners: :mod:`.database`; the run history
(``index.runs``): :mod:`.runs`; the model rows (``index.models``): :mod:`.models`. This module
holds the images, categories and observations; every write is one transaction, all or nothing.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, IndexLockedError, RefusedError
from . import media
from .database import DB_NAME, Database
from .models import Models
from .records import Box, Category, ImageRecord, Keypoint, Observation
from .runs import Runs

IMAGES_DIR = "images"
MODELS_DIR = "models"
# What a killed process can leave behind, by folder of the index: the temporary files of atomic
# writes under models/ (``.NAME.RANDOM.tmp`` beside the file, in a model folder or its versions),
# a model being created (``models/.model-TOKEN.tmp/``) and the staging folder of an
# ``import_coco(copy=True)`` (``images/.import-TOKEN/``).
LEFTOVERS = {MODELS_DIR: ("*/.*.tmp", "*/versions/.*.tmp", ".model-*.tmp"),
             IMAGES_DIR: (".import-*",)}
STALE_S = 3600.0  # a leftover this old was left by a killed process: no write takes as long

log = logging.getLogger(__name__)

# A categorical palette that stays readable on dark and light images (Okabe-Ito, then Tableau).
PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#4e79a7", "#f28e2b", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
)

_UNSET: Any = object()


class Index(Database):
    """An annotation index on disk. Open with :meth:`create` or ``Index(path)``.

    Instances are safe to share between threads; use one per process and folder.
    """

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path).resolve()
        if not (self.path / DB_NAME).is_file():
            raise BadInputError(f"not an index (no {DB_NAME}; create one first): {self.path}")
        super().__init__(self.path / DB_NAME, lock_timeout=lock_timeout)
        self.runs = Runs(self)
        self.models = Models(self)
        self._roots: list[Path] = []  # image_roots(), as last read (roots are only ever added)
        if not self.read_only:  # nothing to clean up there, and no way to
            self._recover()

    def _recover(self) -> None:
        """Clean up after a process killed while it worked here: its runs become 'interrupted'
        (so a Complete can be undone) and its stale leftovers (``LEFTOVERS``) go. Best effort: a
        locked index still opens for reading; the next run started ends the runs."""
        try:
            self.runs.end_orphaned()
        except (IndexLockedError, sqlite3.OperationalError) as exc:
            log.warning("runs of killed processes left as they are for now (%s): %s", exc,
                        self.path)
        limit = time.time() - STALE_S
        for folder, patterns in LEFTOVERS.items():
            root = self.path / folder
            for pattern in patterns:
                for path in root.glob(pattern):
                    try:
                        # never through a link: a crafted folder must not make this delete
                        # elsewhere
                        if path.is_symlink() or not path.resolve().is_relative_to(
                                root.resolve()) or path.stat().st_mtime >= limit:
                            continue
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
                    except OSError as exc:  # read-only folder, already gone
                        log.warning("leftover of a killed process kept: %s (%s)", path, exc)

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | os.PathLike, *, exist_ok: bool = False, **kw: Any) -> Index:
        """Create an empty index folder (or open it when ``exist_ok`` and it exists)."""
        folder = Path(path)
        if (folder / DB_NAME).exists():
            if exist_ok:
                return cls(folder, **kw)
            raise RefusedError(f"an index already exists here: {folder}")
        if folder.exists() and not folder.is_dir():
            raise BadInputError(f"cannot create an index: a file of that name exists: {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / IMAGES_DIR).mkdir(exist_ok=True)
        (folder / MODELS_DIR).mkdir(exist_ok=True)
        sqlite3.connect(folder / DB_NAME).close()
        return cls(folder, **kw)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r})"

    @property
    def images_dir(self) -> Path:
        return self.path / IMAGES_DIR

    @property
    def models_dir(self) -> Path:
        return self.path / MODELS_DIR

    # ------------------------------------------------------------------ images
    def _relative(self, path: Path) -> str:
        path = path.resolve()
        try:
            return os.path.relpath(path, self.path)
        except ValueError:  # another drive on Windows
            return str(path)

    def resolve(self, image: ImageRecord) -> Path:
        """Absolute path of an image's file (or zarr array, or clip), its symbolic links
        resolved. Refused when that lies outside the index folder and its image roots: an edited
        or crafted database must not make the index read (and show, and train on) other files."""
        path = (self.path / image.path).resolve()
        if not self._may_read(path):
            raise RefusedError(
                f"image {image.name!r} is outside the index folder and its image roots, so it is "
                f"not read (add it again from where it is to register its folder): {path}"
            )
        return path

    def image_roots(self) -> list[Path]:
        """The folders outside the index folder that its images may be read from, each
        registered by adding images from it by reference."""
        return _read_roots(self.path, self._conn())

    def _may_read(self, path: Path) -> bool:
        """Whether a resolved path lies inside the index folder or one of its image roots."""
        if _within(path, self.path, self._roots):
            return True
        self._roots = self.image_roots()  # another process or thread may have added one since
        return _within(path, self.path, self._roots)

    def _register_roots(self, conn: sqlite3.Connection, paths: Iterable[Path]) -> None:
        """Register the folders of files added by reference as image roots, in the caller's
        transaction (those inside the index folder or a root already need none)."""
        roots = _read_roots(self.path, conn)
        for folder in sorted({Path(p).resolve().parent for p in paths}):
            if not _within(folder, self.path, roots):
                conn.execute("INSERT INTO image_roots(path) VALUES (?)", (self._relative(folder),))
                roots.append(folder)

    def add_image(
        self, path: str | os.PathLike, *, name: str | None = None, copy: bool = False
    ) -> ImageRecord:
        """Add one image file; see :meth:`add_images`."""
        return self.add_images([path], names=[name] if name else None, copy=copy)[0]

    def add_images(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        names: Sequence[str] | None = None,
        copy: bool = False,
        probed: Sequence[tuple[int, int, int]] | None = None,
    ) -> list[ImageRecord]:
        """Add image files, all or none: each is decoded once, to check it, before any is written.

        ``names`` default to the file names; a name must be unique in the index. With ``copy`` the
        files are copied into ``images/``; otherwise they are referenced where they are.
        ``probed`` passes ``media.probe`` results of a caller that has just checked the files, so
        that they are not decoded twice.
        """
        paths = [Path(p) for p in paths]
        names = list(names) if names is not None else [p.name for p in paths]
        if len(names) != len(paths):
            raise BadInputError("add_images: as many names as paths are needed")
        self._check_new_names(names)
        if probed is None:
            probed = [media.probe(p) for p in paths]
        copied: list[Path] = []
        try:
            with self._write() as conn:
                ids = []
                for path, name, (width, height, channels) in zip(paths, names, probed, strict=True):
                    if copy:
                        target = self.images_dir / name
                        if not target.resolve().is_relative_to(self.images_dir.resolve()):
                            raise BadInputError(f"image name {name!r} leaves the images folder")
                        if target.exists():
                            raise BadInputError(f"{target}: a file of that name is already there")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, target)
                        copied.append(target)
                        path = target
                    cur = conn.execute(
                        "INSERT INTO images(name, path, width, height, channels, media) "
                        "VALUES (?, ?, ?, ?, ?, 'image')",
                        (name, self._relative(path), width, height, channels),
                    )
                    ids.append(cur.lastrowid)
                if not copy:
                    self._register_roots(conn, paths)
                self._record_change("images", "added", ids)
        except BaseException:
            for target in copied:
                target.unlink(missing_ok=True)
            raise
        return [self.image(i) for i in ids]

    def add_zarr(self, path: str | os.PathLike, *, name: str | None = None) -> list[ImageRecord]:
        """Add every frame of a zarr array (N, H, W[, C]) as an image named ``NAME[frame]``."""
        path = Path(path)
        array = media.open_zarr(path, new=True)
        stem = name or path.name
        frames = array.shape[0]
        channels = 1 if array.ndim == 3 else array.shape[3]
        names = [f"{stem}[{i}]" for i in range(frames)]
        self._check_new_names(names)
        with self._write() as conn:
            ids = [
                conn.execute(
                    "INSERT INTO images(name, path, frame, width, height, channels, media) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'zarr')",
                    (n, self._relative(path), i, array.shape[2], array.shape[1], channels),
                ).lastrowid
                for i, n in enumerate(names)
            ]
            self._register_roots(conn, [path])
            self._record_change("images", "added", ids)
        return [self.image(i) for i in ids]

    def add_video(
        self, path: str | os.PathLike, *, width: int, height: int, name: str | None = None
    ) -> ImageRecord:
        """Reference a video clip. Its observations are video observations: never completed."""
        path = Path(path)
        if not path.exists():
            raise BadInputError(f"{path}: video file not found")
        if width <= 0 or height <= 0:
            raise BadInputError(f"{path}: video size {width}x{height} must be positive")
        name = name or path.name
        self._check_new_names([name])
        with self._write() as conn:
            new_id = conn.execute(
                "INSERT INTO images(name, path, width, height, media) VALUES (?, ?, ?, ?, 'video')",
                (name, self._relative(path), width, height),
            ).lastrowid
            self._register_roots(conn, [path])
            self._record_change("images", "added", [new_id])
        return self.image(new_id)

    def _check_new_names(self, names: Sequence[str]) -> None:
        seen: set[str] = set()
        for name in names:
            if not name or name in seen:
                raise BadInputError(f"image name {name!r} is empty or given twice")
            seen.add(name)
        taken = {
            row[0]
            for chunk in _chunks(list(seen), 500)
            for row in self._conn().execute(
                f"SELECT name FROM images WHERE name IN ({','.join('?' * len(chunk))})", chunk
            )
        }
        if taken:
            raise BadInputError(
                f"the index already has images named {sorted(taken)[:5]}; rename or skip them"
            )

    def image(self, key: int | str) -> ImageRecord:
        """An image by id or by name."""
        column = "id" if isinstance(key, (int, np.integer)) else "name"
        row = self._conn().execute(f"SELECT * FROM images WHERE {column} = ?", (key,)).fetchone()
        if row is None:
            raise BadInputError(f"no image {key!r} in the index")
        return _image(row)

    def images(
        self,
        *,
        ids: Iterable[int] | None = None,
        names: Iterable[str] | None = None,
        category: int | str | None = None,
        attribute: tuple[str, str] | None = None,
        exclude_category: int | str | None = None,
        reviewed: bool | None = None,
    ) -> list[ImageRecord]:
        """Images in id order, narrowed by ids, names (shell patterns allowed), category, an
        observation attribute ``(key, value)``, not having any observation of a category, or
        their reviewed state."""
        sql, params = ["SELECT * FROM images WHERE 1"], []
        if reviewed is not None:
            sql.append("AND reviewed = ?")
            params.append(int(reviewed))
        if category is not None:
            sql.append("AND id IN (SELECT image_id FROM observations WHERE category_id = ?)")
            params.append(self.category(category).id)
        if exclude_category is not None:
            sql.append("AND id NOT IN (SELECT image_id FROM observations WHERE category_id = ?)")
            params.append(self.category(exclude_category).id)
        if attribute is not None:
            sql.append(
                "AND id IN (SELECT o.image_id FROM observations o JOIN attributes a "
                "ON a.observation_id = o.id WHERE a.key = ? AND a.value = ?)"
            )
            params.extend(attribute)
        rows = [_image(r) for r in self._conn().execute(" ".join(sql) + " ORDER BY id", params)]
        if ids is not None:
            wanted = {int(i) for i in ids}
            rows = [r for r in rows if r.id in wanted]
        if names is not None:
            patterns = list(names)
            rows = [r for r in rows if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
        return rows

    def set_reviewed(self, image_ids: Iterable[int], reviewed: bool = True) -> None:
        """Mark images as reviewed by a person (or not), all in one transaction; an unknown id
        is a :class:`BadInputError` and changes nothing."""
        ids = sorted({int(i) for i in image_ids})
        self.resolve_images(ids)
        with self._write() as conn:
            conn.execute(
                "UPDATE images SET reviewed = ? WHERE id IN (SELECT value FROM json_each(?))",
                (int(reviewed), json.dumps(ids)),
            )
            self._record_change("images", "updated", ids)

    def resolve_images(self, items: Iterable[ImageRecord | int | str]) -> list[ImageRecord]:
        """Records, ids or names as the index holds them now, each once, in the order given
        (an unknown image is a :class:`BadInputError`)."""
        found: dict[int, ImageRecord] = {}
        for item in items:
            record = self.image(item.id if isinstance(item, ImageRecord) else item)
            found.setdefault(record.id, record)
        return list(found.values())

    def match_images(self, patterns: Iterable[str]) -> list[ImageRecord]:
        """Images whose names match the patterns; a pattern matching nothing is an error."""
        patterns = list(patterns)
        found = self.images(names=patterns)
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(r.name, pattern) for r in found):
                raise BadInputError(f"no image in the index matches {pattern!r}")
        return found

    def read_image(self, image: ImageRecord | int | str, *,
                   fit: tuple[int, int] | None = None) -> np.ndarray:
        """The pixels of an image as displayed, (H, W) or (H, W, C), in the file's dtype.

        ``fit = (min_size, max_size)`` of a detector reads a large image reduced to what it uses
        (a :class:`media.Reduced` array that knows the full size), decoding it reduced where the
        format allows, so a huge image costs the memory of a small one."""
        if not isinstance(image, ImageRecord):
            image = self.image(image)
        if image.is_video:
            raise RefusedError(f"{image.name}: is a video clip, not an image")
        return media.read_stored(self.resolve(image), image.media, image.frame, fit=fit)

    # -------------------------------------------------------------- categories
    def add_category(
        self,
        name: str,
        *,
        colour: str | None = None,
        keypoints: Sequence[str] | None = None,
        skeleton: Sequence[tuple[int, int]] = (),
        roi_enabled: bool = True,
    ) -> Category:
        """Add a category; giving keypoint names enables keypoints for it."""
        if not name or not name.strip():
            raise BadInputError("a category needs a name")
        if self._conn().execute("SELECT 1 FROM categories WHERE name = ?", (name,)).fetchone():
            raise BadInputError(f"category {name!r} already exists")
        names = list(keypoints or [])
        if len(set(names)) != len(names):
            raise BadInputError(f"category {name!r}: keypoint names must be unique")
        for a, b in skeleton:
            if not (0 <= a < len(names) and 0 <= b < len(names)):
                raise BadInputError(f"category {name!r}: skeleton edge {(a, b)} out of range")
        with self._write() as conn:
            if colour is None:
                count = conn.execute("SELECT COUNT(*) FROM categories").fetchone()[0]
                colour = PALETTE[count % len(PALETTE)]
            new_id = conn.execute(
                "INSERT INTO categories(name, colour, roi_enabled, keypoints_enabled, "
                "keypoint_names, skeleton) VALUES (?, ?, ?, ?, ?, ?)",
                (name, colour, int(roi_enabled), int(bool(names)), json.dumps(names),
                 json.dumps([list(e) for e in skeleton])),
            ).lastrowid
            self._record_change("categories", "added", [new_id])
        return self.category(new_id)

    def update_category(
        self,
        key: int | str,
        *,
        colour: str | None = None,
        roi_enabled: bool | None = None,
        keypoints_enabled: bool | None = None,
    ) -> Category:
        """Change a category's colour or switch ROI / keypoints on or off."""
        cat = self.category(key)
        if keypoints_enabled and not cat.keypoint_names:
            raise BadInputError(f"category {cat.name!r} has no keypoint names to enable")
        with self._write() as conn:
            conn.execute(
                "UPDATE categories SET colour = ?, roi_enabled = ?, keypoints_enabled = ? "
                "WHERE id = ?",
                (
                    colour or cat.colour,
                    int(cat.roi_enabled if roi_enabled is None else roi_enabled),
                    int(cat.keypoints_enabled if keypoints_enabled is None else keypoints_enabled),
                    cat.id,
                ),
            )
            self._record_change("categories", "updated", [cat.id])
        return self.category(cat.id)

    def category(self, key: int | str | Category) -> Category:
        """A category by id, name, or record."""
        if isinstance(key, Category):
            key = key.id
        column = "id" if isinstance(key, (int, np.integer)) else "name"
        row = self._conn().execute(
            f"SELECT * FROM categories WHERE {column} = ?", (key,)
        ).fetchone()
        if row is None:
            raise BadInputError(f"no category {key!r} in the index")
        return _category(row)

    def categories(self) -> list[Category]:
        return [_category(r) for r in self._conn().execute("SELECT * FROM categories ORDER BY id")]

    # ------------------------------------------------------------ observations
    def add_observation(
        self,
        image: ImageRecord | int | str,
        category: Category | int | str,
        *,
        box: Box | None = None,
        keypoints: Sequence[Keypoint] | None = None,
        source: str = "human",
        score: float | None = None,
        model_version: str | None = None,
        run_id: int | None = None,
        iscrowd: bool = False,
        attributes: dict[str, Any] | None = None,
    ) -> Observation:
        """Add one observation; the box must lie inside the image (pixel corners x0, y0, x1, y1)."""
        return self.add_observations(
            [dict(image=image, category=category, box=box, keypoints=keypoints, source=source,
                  score=score, model_version=model_version, run_id=run_id, iscrowd=iscrowd,
                  attributes=attributes)]
        )[0]

    def add_observations(self, items: Sequence[dict[str, Any]]) -> list[Observation]:
        """Add many observations in one transaction, all or none (keys: see add_observation)."""
        images: dict[Any, ImageRecord] = {}
        cats: dict[Any, Category] = {}
        rows = []
        for item in items:
            img_key = item["image"].id if isinstance(item["image"], ImageRecord) else item["image"]
            cat_key = item["category"]
            cat_key = cat_key.id if isinstance(cat_key, Category) else cat_key
            if img_key not in images:
                images[img_key] = self.image(img_key)
            if cat_key not in cats:
                cats[cat_key] = self.category(cat_key)
            image, cat = images[img_key], cats[cat_key]
            source = item.get("source", "human")
            if source not in ("human", "model"):
                raise BadInputError(f"source must be 'human' or 'model', not {source!r}")
            box, kps = check_observation(image, cat, item.get("box"), item.get("keypoints"))
            rows.append((image, cat, box, kps, item))
        with self._write() as conn:
            ids = []
            for image, cat, box, kps, item in rows:
                x0, y0, x1, y1 = box if box is not None else (None,) * 4
                score = item.get("score")
                new_id = conn.execute(
                    "INSERT INTO observations(image_id, category_id, x0, y0, x1, y1, keypoints, "
                    "iscrowd, source, score, model_version, run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image.id, cat.id, x0, y0, x1, y1,
                     json.dumps(kps) if kps is not None else None,
                     int(bool(item.get("iscrowd", False))), item.get("source", "human"),
                     None if score is None else float(score),
                     item.get("model_version"), item.get("run_id")),
                ).lastrowid
                for key, value in (item.get("attributes") or {}).items():
                    conn.execute(
                        "INSERT INTO attributes(observation_id, key, value) VALUES (?, ?, ?)",
                        (new_id, str(key), str(value)),
                    )
                ids.append(new_id)
            self._record_change("observations", "added", ids)
        return self.observations(ids=ids)

    def update_observation(
        self,
        obs_id: int,
        *,
        box: Box | None = _UNSET,
        keypoints: Sequence[Keypoint] | None = _UNSET,
        category: int | str | None = None,
        source: str | None = None,
        score: float | None = _UNSET,
        model_version: str | None = _UNSET,
        run_id: int | None = _UNSET,
        attributes: dict[str, Any] | None = None,
    ) -> Observation:
        """Change fields of an observation; ``box=None`` / ``keypoints=None`` remove that part.

        An edit by a person (the default) marks the observation as human-made. ``attributes``
        are set as by :meth:`set_attributes`.
        """
        obs = self.observation(obs_id)
        image = self.image(obs.image_id)
        cat = self.category(category if category is not None else obs.category_id)
        new_box = obs.box if box is _UNSET else box
        new_kps = obs.keypoints if keypoints is _UNSET else keypoints
        if category is not None and keypoints is _UNSET and cat.id != obs.category_id:
            new_kps = None  # keypoint vectors belong to their category's keypoint list
        new_box, new_kps = check_observation(image, cat, new_box, new_kps)
        x0, y0, x1, y1 = new_box if new_box is not None else (None,) * 4
        source = source or "human"
        keep = source != "human"  # a person's edit makes the observation theirs
        score = (obs.score if keep else None) if score is _UNSET else score
        model_version = (obs.model_version if keep else None) if model_version is _UNSET \
            else model_version
        with self._write() as conn:
            conn.execute(
                "UPDATE observations SET category_id = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, "
                "keypoints = ?, source = ?, score = ?, model_version = ?, run_id = ?, "
                "updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE id = ?",
                (cat.id, x0, y0, x1, y1, json.dumps(new_kps) if new_kps is not None else None,
                 source, score, model_version, obs.run_id if run_id is _UNSET else run_id,
                 obs.id),
            )
            _put_attributes(conn, obs.id, attributes or {})
            self._record_change("observations", "updated", [obs.id])
        return self.observation(obs.id)

    def set_attributes(self, observation_ids: Iterable[int],
                       attributes: dict[str, str | None]) -> None:
        """Set attributes on observations in one transaction; a value None removes that key.
        Unlike an edit of the box or keypoints, this leaves the observation's source as it is:
        tagging a model's box does not make it a person's."""
        ids = sorted({int(i) for i in observation_ids})
        found = {o.id for o in self.observations(ids=ids)}
        if missing := [i for i in ids if i not in found]:
            raise BadInputError(f"no observation {missing[0]} in the index")
        if any(not str(key).strip() for key in attributes):
            raise BadInputError("an attribute needs a key")
        with self._write() as conn:
            for obs_id in ids:
                _put_attributes(conn, obs_id, attributes)
            self._record_change("observations", "updated", ids)

    def delete_observations(self, ids: Iterable[int]) -> int:
        """Delete observations by id; returns how many were deleted."""
        ids = sorted({int(i) for i in ids})
        with self._write() as conn:
            deleted = []
            for chunk in _chunks(ids, 500):
                deleted += [
                    r[0] for r in conn.execute(
                        f"DELETE FROM observations WHERE id IN ({','.join('?' * len(chunk))}) "
                        "RETURNING id", chunk,
                    )
                ]
            self._record_change("observations", "deleted", deleted)
        return len(deleted)

    def remove_parts(self, obs_id: int, *, box: bool = False,
                     keypoints: bool | Iterable[str] = False,
                     source: str | None = None) -> Observation | None:
        """Remove an observation's box and/or keypoints (all of them with True, else the named
        ones); an observation left with no box and no labelled keypoint is deleted and None is
        returned. ``source`` as in :meth:`update_observation` (a person's edit by default)."""
        obs = self.observation(obs_id)
        new_box = None if box else obs.box
        if keypoints is True or obs.keypoints is None:
            new_kps = None if keypoints else obs.keypoints
        else:
            names = self.category(obs.category_id).keypoint_names
            gone = set(keypoints or ())
            new_kps = tuple((0.0, 0.0, 0) if name in gone else kp
                            for name, kp in zip(names, obs.keypoints, strict=True))
        if new_box is None and not any(v > 0 for _, _, v in new_kps or ()):
            self.delete_observations([obs.id])
            return None
        return self.update_observation(obs.id, box=new_box, keypoints=new_kps, source=source)

    def observation(self, obs_id: int) -> Observation:
        found = self.observations(ids=[obs_id])
        if not found:
            raise BadInputError(f"no observation {obs_id} in the index")
        return found[0]

    def observations(
        self,
        *,
        ids: Iterable[int] | None = None,
        images: Iterable[int | ImageRecord] | None = None,
        category: int | str | Category | None = None,
        source: str | None = None,
        kind: str | None = None,
        run_id: int | None = None,
    ) -> list[Observation]:
        """Observations in id order. ``kind`` 'roi' keeps those with a box, 'keypoints' those
        with at least one labelled keypoint."""
        sql, params = ["SELECT * FROM observations WHERE 1"], []
        if ids is not None:
            id_list = [int(i) for i in ids]
            sql.append("AND id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(id_list))
        if images is not None:
            img_ids = [i.id if isinstance(i, ImageRecord) else int(i) for i in images]
            sql.append("AND image_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(img_ids))
        if category is not None:
            sql.append("AND category_id = ?")
            params.append(self.category(category).id)
        if source is not None:
            sql.append("AND source = ?")
            params.append(source)
        if run_id is not None:
            sql.append("AND run_id = ?")
            params.append(run_id)
        if kind == "roi":
            sql.append("AND x0 IS NOT NULL")
        elif kind == "keypoints":
            sql.append("AND keypoints IS NOT NULL")
        elif kind is not None:
            raise BadInputError(f"kind must be 'roi' or 'keypoints', not {kind!r}")
        conn = self._conn()
        rows = conn.execute(" ".join(sql) + " ORDER BY id", params).fetchall()
        attrs: dict[int, dict[str, str]] = {}
        if rows:
            for r in conn.execute(
                "SELECT * FROM attributes WHERE observation_id IN (SELECT value FROM json_each(?))",
                (json.dumps([r["id"] for r in rows]),),
            ):
                attrs.setdefault(r["observation_id"], {})[r["key"]] = r["value"]
        found = [_observation(r, attrs.get(r["id"], {})) for r in rows]
        if kind == "keypoints":
            found = [o for o in found if o.has_keypoints]
        return found

    def observation_counts(self) -> dict[int, tuple[int, int]]:
        """``{image_id: (human, model)}``: how many observations of each source each image has
        (images without any are left out)."""
        return {r[0]: (r[1], r[2]) for r in self._conn().execute(
            "SELECT image_id, SUM(source = 'human'), SUM(source = 'model') FROM observations "
            "GROUP BY image_id"
        )}

    def count_observations(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM observations").fetchone()[0]

    def has_observations(self, category: int | str | Category) -> bool:
        """True when any image has an observation of ``category`` (propose and the menus ask)."""
        return self._conn().execute(
            "SELECT 1 FROM observations WHERE category_id = ? LIMIT 1",
            (self.category(category).id,),
        ).fetchone() is not None

    def attribute_values(self) -> dict[str, list[str]]:
        """Every attribute key with its distinct values (for filters)."""
        values: dict[str, list[str]] = {}
        for r in self._conn().execute(
            "SELECT DISTINCT key, value FROM attributes ORDER BY key, value"
        ):
            values.setdefault(r["key"], []).append(r["value"])
        return values

    def counts(self) -> dict[str, dict[str, int]]:
        """Per category name: images, boxes and keypoint observations (labelled keypoints)."""
        out = {c.name: {"images": 0, "boxes": 0, "keypoints": 0} for c in self.categories()}
        for r in self._conn().execute(
            "SELECT c.name, COUNT(DISTINCT o.image_id), COUNT(o.x0), "
            "SUM(CASE WHEN o.keypoints IS NOT NULL AND EXISTS (SELECT 1 FROM "
            "json_each(o.keypoints) k WHERE json_extract(k.value, '$[2]') > 0) THEN 1 ELSE 0 END) "
            "FROM categories c JOIN observations o ON o.category_id = c.id GROUP BY c.id"
        ):
            out[r[0]] = {"images": r[1], "boxes": r[2], "keypoints": r[3] or 0}
        return out


def check_observation(
    image: ImageRecord, cat: Category, box: Box | None, keypoints: Any
) -> tuple[Box | None, list[list[float]] | None]:
    """Check a box and keypoints against their image and category; return them normalised.

    Shared by every writer (the store, COCO import) so that all refuse the same things with the
    same words. Boxes within half a pixel outside the image are clamped (rounding by other tools).
    """
    if box is not None:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{image.name}: box {box!r} is not four numbers") from exc
        if not all(np.isfinite([x0, y0, x1, y1])):
            raise BadInputError(f"{image.name}: box {box!r} has non-finite values")
        if x1 < x0 or y1 < y0:
            raise BadInputError(f"{image.name}: box {box!r} has negative width or height")
        tol = 0.5  # half a pixel: rounding by other tools
        if x0 < -tol or y0 < -tol or x1 > image.width + tol or y1 > image.height + tol:
            raise BadInputError(
                f"{image.name}: box {box!r} lies outside the image "
                f"({image.width}x{image.height})"
            )
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, image.width), min(y1, image.height))
    kps = None
    if keypoints is not None:
        if not cat.keypoint_names:
            raise BadInputError(f"category {cat.name!r} has no keypoints")
        try:
            kps = [[float(x), float(y), int(v)] for x, y, v in keypoints]
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{image.name}: keypoints must be (x, y, v) triples") from exc
        if len(kps) != len(cat.keypoint_names):
            raise BadInputError(
                f"{image.name}: {len(kps)} keypoints given, category {cat.name!r} has "
                f"{len(cat.keypoint_names)} ({', '.join(cat.keypoint_names)})"
            )
        for (x, y, v), kp_name in zip(kps, cat.keypoint_names, strict=True):
            if v not in (0, 1, 2):
                raise BadInputError(f"{image.name}: keypoint {kp_name!r} visibility {v}")
            if v and not (-0.5 <= x <= image.width + 0.5 and -0.5 <= y <= image.height + 0.5):
                raise BadInputError(
                    f"{image.name}: keypoint {kp_name!r} at ({x:g}, {y:g}) lies outside the "
                    f"image ({image.width}x{image.height})"
                )
    if box is None and kps is None:
        raise BadInputError(f"{image.name}: an observation needs a box or keypoints")
    return box, kps


def _put_attributes(conn: sqlite3.Connection, obs_id: int,
                    attributes: dict[str, Any]) -> None:
    """Set an observation's attributes (a value None removes the key), in the caller's
    transaction."""
    for key, value in attributes.items():
        if value is None:
            conn.execute("DELETE FROM attributes WHERE observation_id = ? AND key = ?",
                         (obs_id, str(key)))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO attributes(observation_id, key, value) VALUES (?, ?, ?)",
                (obs_id, str(key), str(value)),
            )


def _within(path: Path, folder: Path, roots: list[Path]) -> bool:
    """Whether a resolved ``path`` lies in the index ``folder`` or one of its image ``roots``."""
    return path.is_relative_to(folder) or any(path.is_relative_to(root) for root in roots)


def _read_roots(folder: Path, conn: sqlite3.Connection) -> list[Path]:
    """The image roots of the index in ``folder``, resolved, as ``conn`` sees them."""
    return [(folder / row[0]).resolve()
            for row in conn.execute("SELECT path FROM image_roots ORDER BY path")]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _image(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        id=row["id"], name=row["name"], path=row["path"], frame=row["frame"],
        width=row["width"], height=row["height"], channels=row["channels"], media=row["media"],
        reviewed=bool(row["reviewed"]),
    )


def _category(row: sqlite3.Row) -> Category:
    return Category(
        id=row["id"], name=row["name"], colour=row["colour"],
        roi_enabled=bool(row["roi_enabled"]), keypoints_enabled=bool(row["keypoints_enabled"]),
        keypoint_names=tuple(json.loads(row["keypoint_names"])),
        skeleton=tuple(tuple(e) for e in json.loads(row["skeleton"])),
    )


def _observation(row: sqlite3.Row, attributes: dict[str, str]) -> Observation:
    box = None if row["x0"] is None else (row["x0"], row["y0"], row["x1"], row["y1"])
    kps = None
    if row["keypoints"] is not None:
        kps = tuple((float(x), float(y), int(v)) for x, y, v in json.loads(row["keypoints"]))
    return Observation(
        id=row["id"], image_id=row["image_id"], category_id=row["category_id"], box=box,
        keypoints=kps, iscrowd=bool(row["iscrowd"]), source=row["source"], score=row["score"],
        model_version=row["model_version"], run_id=row["run_id"], created_at=row["created_at"],
        updated_at=row["updated_at"], attributes=attributes,
    )
