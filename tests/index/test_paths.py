"""The index reads image files only inside its folder and the image roots the user registered by
adding images from them by reference: an edited or crafted database, or a planted link, is
refused by name, whatever the path says after its links are resolved."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.index.schema import MIGRATIONS
from napari_learn_complete.index.store import DB_NAME


def _png(path: Path, colour: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 4), (colour, 0, 0)).save(path)
    return path


def _set_path(index: Index, name: str, path: str) -> None:
    """Edit an image's path behind the index's back, as a crafted database would hold it."""
    conn = sqlite3.connect(index.path / DB_NAME)
    conn.execute("UPDATE images SET path = ? WHERE name = ?", (path, name))
    conn.commit()
    conn.close()


def test_images_added_by_reference_register_their_folder(empty_index, tmp_path):
    photos = tmp_path / "photos"
    empty_index.add_images([_png(photos / "a.png"), _png(photos / "day2" / "b.png")])
    empty_index.add_image(_png(tmp_path / "copied.png"), copy=True)
    zarr.save_array(str(tmp_path / "stacks" / "movie.zarr"), np.zeros((2, 4, 5), np.uint8))
    empty_index.add_zarr(tmp_path / "stacks" / "movie.zarr")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "run.mp4").write_bytes(b"")
    empty_index.add_video(tmp_path / "clips" / "run.mp4", width=5, height=4)
    # day2 lies in photos, a root already; a copied image needs none
    assert empty_index.image_roots() == [tmp_path / "clips", photos, tmp_path / "stacks"]
    assert empty_index.query("SELECT path FROM image_roots ORDER BY path")[1][0] \
        == os.path.join("..", "photos")  # relative, as images.path: the two move together
    assert [empty_index.read_image(r).shape for r in empty_index.images(names=["*.png"])] \
        == [(4, 5, 3)] * 3
    assert empty_index.read_image("movie.zarr[1]").shape == (4, 5)


def test_a_file_added_through_a_link_registers_the_folder_it_lies_in(empty_index, tmp_path):
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "a.png").symlink_to(_png(tmp_path / "data" / "a.png"))
    empty_index.add_images([tmp_path / "links" / "a.png"])
    assert empty_index.image_roots() == [tmp_path / "data"]
    assert empty_index.read_image("a.png").shape == (4, 5, 3)


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_a_path_edited_to_lead_elsewhere_is_refused(empty_index, tmp_path, where):
    empty_index.add_images([_png(tmp_path / "photos" / "a.png")])
    secret = _png(tmp_path / "private" / "secret.png", colour=255)
    _set_path(empty_index, "a.png", str(secret) if where == "absolute"
              else os.path.join("..", "private", "secret.png"))
    with pytest.raises(RefusedError, match=r"image 'a\.png' is outside the index folder and "
                                           r"its image roots") as refused:
        empty_index.read_image("a.png")
    assert str(secret) in str(refused.value)


def test_a_link_planted_in_the_index_is_refused(empty_index, tmp_path):
    empty_index.add_image(_png(tmp_path / "a.png"), copy=True)
    secret = _png(tmp_path / "private" / "secret.png", colour=255)
    (empty_index.images_dir / "a.png").unlink()
    (empty_index.images_dir / "a.png").symlink_to(secret)
    with pytest.raises(RefusedError, match=re.escape(str(secret))):
        empty_index.read_image("a.png")


def test_a_root_registered_by_another_instance_is_seen(empty_index, tmp_path):
    empty_index.add_images([_png(tmp_path / "first" / "a.png")])
    empty_index.read_image("a.png")  # the roots known so far are kept
    with Index(empty_index.path) as other:
        other.add_images([_png(tmp_path / "second" / "b.png")])
    assert empty_index.read_image("b.png").shape == (4, 5, 3)
    assert empty_index.image_roots() == [tmp_path / "first", tmp_path / "second"]


def test_version_3_index_registers_the_folders_of_its_images(tmp_path):
    """Images referenced before schema 4 stay readable: their folders become image roots."""
    folder = tmp_path / "old"
    folder.mkdir()
    _png(tmp_path / "photos" / "a.png")
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(";".join(MIGRATIONS[v] for v in (1, 2, 3)))
    conn.executemany("INSERT INTO images(name, path, width, height) VALUES (?, ?, 5, 4)",
                     [("a.png", os.path.join("..", "photos", "a.png")),
                      ("in.png", os.path.join("images", "in.png"))])
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with Index(folder) as index:
        assert index.query("PRAGMA user_version")[0][0] == 4
        assert index.image_roots() == [tmp_path / "photos"]
        assert index.read_image("a.png").shape == (4, 5, 3)
