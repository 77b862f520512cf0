"""The index store: images of every kind, categories, observations, queries, transactions,
change events, concurrent writers, and refusal of bad input with the index left as it was."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import threading
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_learn_complete.errors import BadInputError, IndexLockedError, RefusedError
from napari_learn_complete.index import Change, Index
from napari_learn_complete.index.store import DB_NAME


def _rgb(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def boxes_index(empty_index):
    """Two images and two categories, one with keypoints."""
    for i in range(2):
        Image.fromarray(_rgb(seed=i)).save(empty_index.images_dir / f"im{i}.png")
    empty_index.add_images([empty_index.images_dir / f"im{i}.png" for i in range(2)])
    empty_index.add_category("cell")
    empty_index.add_category("fly", keypoints=["head", "tail"], skeleton=[(0, 1)])
    return empty_index


# ------------------------------------------------------------------------------------ opening
def test_create_makes_the_layout_and_refuses_a_second_create(tmp_path):
    index = Index.create(tmp_path / "ix")
    assert (index.path / DB_NAME).is_file()
    assert index.images_dir.is_dir() and index.models_dir.is_dir()
    conn = sqlite3.connect(index.path / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert index.query("PRAGMA foreign_keys")[0][0] == 1
    with pytest.raises(RefusedError, match=r"^an index already exists here"):
        Index.create(tmp_path / "ix")
    assert Index.create(tmp_path / "ix", exist_ok=True).path == index.path


def test_opening_a_folder_that_is_not_an_index(tmp_path):
    # the reason first, the path last: a napari notification shows only the beginning
    with pytest.raises(BadInputError, match=f"^not an index .*: {tmp_path}$"):
        Index(tmp_path)
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BadInputError, match=r"^not a readable index database"):
        Index(tmp_path)


# ------------------------------------------------------------------------------------- images
@pytest.mark.parametrize(
    ("suffix", "array"),
    [
        (".png", _rgb()),
        (".jpg", np.repeat(np.linspace(0, 250, 80, dtype=np.uint8)[None, :, None] * [1, 0, 1],
                           64, axis=0).astype(np.uint8)),
        (".tif", _rgb()),
        (".png", (np.arange(64 * 80, dtype=np.uint16) * 13).reshape(64, 80)),
        (".tiff", (np.arange(64 * 80, dtype=np.uint16) * 13).reshape(64, 80)),
        (".tif", np.moveaxis(_rgb(), -1, 0)),  # planar (C, H, W) TIFF
    ],
    ids=["png", "jpeg", "tiff", "png16", "tiff16", "tiff-planar"],
)
def test_image_files_are_added_and_read_back(empty_index, tmp_path, suffix, array):
    path = tmp_path / f"picture{suffix}"
    if suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else None)
    else:
        Image.fromarray(array).save(path, quality=95)
    record = empty_index.add_image(path)
    assert (record.name, record.width, record.height, record.media) == (path.name, 80, 64, "image")
    assert record.channels == (3 if array.ndim == 3 else 1)
    pixels = empty_index.read_image(record.name)
    expected = np.moveaxis(array, 0, -1) if array.shape[0] == 3 else array
    assert pixels.dtype == expected.dtype and pixels.shape == expected.shape
    if suffix == ".jpg":
        assert np.abs(pixels.astype(int) - expected).mean() < 3
    else:
        assert np.array_equal(pixels, expected)


def test_copy_puts_the_file_in_images_and_names_are_unique(empty_index, tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    record = empty_index.add_image(tmp_path / "a.png", name="sub/a.png", copy=True)
    assert empty_index.resolve(record) == empty_index.images_dir / "sub" / "a.png"
    assert record.path == "images/sub/a.png"
    with pytest.raises(BadInputError, match="already has images named"):
        empty_index.add_image(tmp_path / "a.png", name="sub/a.png")
    with pytest.raises(BadInputError, match="leaves the images folder"):
        empty_index.add_image(tmp_path / "a.png", name="../../escaped.png", copy=True)
    assert not (empty_index.path.parent / "escaped.png").exists()


def test_zarr_frames_become_images(empty_index, tmp_path):
    frames = np.stack([_rgb(48, 40, seed=i) for i in range(3)])
    zarr.save_array(str(tmp_path / "movie.zarr"), frames)
    records = empty_index.add_zarr(tmp_path / "movie.zarr")
    assert [r.name for r in records] == [f"movie.zarr[{i}]" for i in range(3)]
    assert {(r.media, r.width, r.height, r.channels) for r in records} == {("zarr", 40, 48, 3)}
    assert np.array_equal(empty_index.read_image(records[2]), frames[2])
    zarr.save_array(str(tmp_path / "flat.zarr"), np.zeros((4, 4)))
    with pytest.raises(BadInputError, match="not a stack of frames"):
        empty_index.add_zarr(tmp_path / "flat.zarr")


def test_video_clips_are_referenced_but_not_read(empty_index, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 16)
    record = empty_index.add_video(clip, width=320, height=240)
    assert record.is_video and (record.width, record.height) == (320, 240)
    with pytest.raises(RefusedError, match="video clip"):
        empty_index.read_image(record)
    with pytest.raises(BadInputError, match="must be positive"):
        empty_index.add_video(clip, width=0, height=240, name="other")
    with pytest.raises(BadInputError, match="video file not found"):
        empty_index.add_video(tmp_path / "nope.mp4", width=3, height=3)


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` with a token of data: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _tiff_bomb(path) -> None:
    """A real, compressed 14080 x 14080 TIFF (198 M pixels), written tile by tile."""
    tile = np.zeros((256, 256), np.uint8)
    tifffile.imwrite(path, (tile for _ in range(55 * 55)), shape=(14080, 14080), dtype=np.uint8,
                     tile=(256, 256), compression="zlib")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "image file not found"),
        (lambda p: p.write_text("hello, I am text"), "not an image file"),
        (lambda p: p.write_bytes(_png_bytes()[:200]), "corrupt or truncated"),
        (lambda p: _png_header_only(p, 100_000, 100_000), "decompression bomb"),
    ],
    ids=["missing", "not-an-image", "truncated", "png-bomb"],
)
def test_bad_image_files_are_refused_and_nothing_is_added(
    boxes_index, tmp_path, db_dump, make, message
):
    Image.fromarray(_rgb()).save(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    make(bad)
    before = db_dump(boxes_index)
    with pytest.raises(BadInputError, match=message) as info:
        boxes_index.add_images([tmp_path / "good.png", bad], copy=True)
    assert str(bad) in str(info.value)
    assert db_dump(boxes_index) == before


def test_tiff_bomb_is_refused_from_its_header(empty_index, tmp_path, db_dump):
    bomb = tmp_path / "huge.tif"
    _tiff_bomb(bomb)
    before = db_dump(empty_index)
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError, match=r"14080x14080 .* above the limit"):
            empty_index.add_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # refused from the header: its 198 MB of pixels never allocated
    assert db_dump(empty_index) == before


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(_rgb()).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------- categories
def test_categories_get_palette_colours_and_keypoints(boxes_index):
    cell, fly = boxes_index.categories()
    assert cell.colour != fly.colour and cell.colour.startswith("#")
    assert not cell.keypoints_enabled and cell.keypoint_names == ()
    assert fly.keypoints_enabled and fly.keypoint_names == ("head", "tail")
    assert fly.skeleton == ((0, 1),)
    assert boxes_index.category("fly") == boxes_index.category(fly.id) == fly
    updated = boxes_index.update_category("fly", colour="#123456", keypoints_enabled=False)
    assert updated.colour == "#123456" and not updated.keypoints_enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="cell"), "already exists"),
        (dict(name=" "), "needs a name"),
        (dict(name="x", keypoints=["a", "a"]), "unique"),
        (dict(name="x", keypoints=["a", "b"], skeleton=[(0, 2)]), r"skeleton edge \(0, 2\)"),
    ],
)
def test_bad_categories_are_refused(boxes_index, db_dump, kwargs, message):
    before = db_dump(boxes_index)
    with pytest.raises(BadInputError, match=message):
        boxes_index.add_category(**kwargs)
    with pytest.raises(BadInputError, match="no keypoint names"):
        boxes_index.update_category("cell", keypoints_enabled=True)
    assert db_dump(boxes_index) == before


# ------------------------------------------------------------------------------- observations
def test_observations_round_trip_update_and_delete(boxes_index):
    obs = boxes_index.add_observation(
        "im0.png", "fly", box=(1, 2, 30, 40), keypoints=[(5, 6, 2), (7, 8, 1)],
        source="model", score=0.8, model_version="default@3", attributes={"batch": 7},
    )
    assert obs.box == (1, 2, 30, 40) and obs.keypoints == ((5, 6, 2), (7, 8, 1))
    assert (obs.source, obs.score, obs.model_version) == ("model", 0.8, "default@3")
    assert obs.attributes == {"batch": "7"} and obs.has_keypoints
    moved = boxes_index.update_observation(obs.id, box=(2, 3, 31, 41))
    # a person's edit makes the observation theirs
    assert (moved.box, moved.source, moved.score, moved.model_version) == (
        (2, 3, 31, 41), "human", None, None)
    assert moved.keypoints == obs.keypoints
    recat = boxes_index.update_observation(obs.id, category="cell")
    assert recat.keypoints is None and recat.box == moved.box
    assert boxes_index.delete_observations([obs.id, 999]) == 1
    assert boxes_index.observations() == []


def test_box_is_clamped_within_half_a_pixel(boxes_index):
    obs = boxes_index.add_observation("im0.png", "cell", box=(-0.4, 0, 80.3, 64))
    assert obs.box == (0, 0, 80, 64)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (dict(category="cell", box=(10, 10, 5, 20)), "negative width or height"),
        (dict(category="cell", box=(-5, 0, 10, 10)), "outside the image"),
        (dict(category="cell", box=(0, 0, 10, 100)), r"outside the image \(80x64\)"),
        (dict(category="cell", box=(0, 0, "a", 3)), "not four numbers"),
        (dict(category="cell", box=(0, 0, float("nan"), 3)), "non-finite"),
        (dict(category="cell", keypoints=[(1, 1, 2)]), "'cell' has no keypoints"),
        (dict(category="fly", keypoints=[(1, 1, 2)]), "1 keypoints given.*has 2"),
        (dict(category="fly", keypoints=[(1, 1, 2), (1, 1, 5)]), "'tail' visibility 5"),
        (dict(category="fly", keypoints=[(1, 1, 2), (500, 1, 2)]), "'tail' at .* outside"),
        (dict(category="fly"), "needs a box or keypoints"),
        (dict(category="dog", box=(0, 0, 1, 1)), "no category 'dog'"),
        (dict(category="cell", box=(0, 0, 1, 1), source="robot"), "source must be"),
    ],
)
def test_bad_observations_are_refused_all_or_none(boxes_index, db_dump, item, message):
    good = dict(image="im1.png", category="cell", box=(0, 0, 5, 5))
    before = db_dump(boxes_index)
    with pytest.raises(BadInputError, match=message):
        boxes_index.add_observations([good, dict(image="im0.png", **item)])
    assert db_dump(boxes_index) == before


# ------------------------------------------------------------------------------------ queries
@pytest.fixture
def query_index(boxes_index, tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "other_1.png")
    boxes_index.add_image(tmp_path / "other_1.png")
    boxes_index.add_observations([
        dict(image="im0.png", category="cell", box=(0, 0, 5, 5), attributes={"state": "good"}),
        dict(image="im0.png", category="cell", box=(5, 5, 9, 9)),
        dict(image="im1.png", category="fly", keypoints=[(1, 1, 2), (2, 2, 0)],
             attributes={"state": "bad"}),
        dict(image="other_1.png", category="fly", box=(1, 1, 4, 4),
             keypoints=[(1, 1, 0), (2, 2, 0)]),
    ])
    return boxes_index


def test_image_queries(query_index):
    def names(images):
        return [i.name for i in images]

    assert names(query_index.images(category="cell")) == ["im0.png"]
    assert names(query_index.images(category="fly")) == ["im1.png", "other_1.png"]
    assert names(query_index.images(exclude_category="fly")) == ["im0.png"]
    assert names(query_index.images(attribute=("state", "bad"))) == ["im1.png"]
    assert names(query_index.images(names=["im*"])) == ["im0.png", "im1.png"]
    assert names(query_index.images(names=["*_1.png"], category="fly")) == ["other_1.png"]
    assert names(query_index.match_images(["im1.png", "other*"])) == ["im1.png", "other_1.png"]
    with pytest.raises(BadInputError, match="matches 'zzz\\*'"):
        query_index.match_images(["im1.png", "zzz*"])
    assert query_index.attribute_values() == {"state": ["bad", "good"]}


def test_observation_queries_and_counts(query_index):
    assert len(query_index.observations(category="cell")) == 2
    assert len(query_index.observations(kind="roi")) == 3
    # only labelled keypoints (v > 0) count as keypoint observations
    assert [o.image_id for o in query_index.observations(kind="keypoints")] == [
        query_index.image("im1.png").id]
    assert len(query_index.observations(images=[query_index.image("im0.png")])) == 2
    assert query_index.counts() == {
        "cell": {"images": 1, "boxes": 2, "keypoints": 0},
        "fly": {"images": 2, "boxes": 1, "keypoints": 1},
    }
    with pytest.raises(BadInputError, match="kind must be"):
        query_index.observations(kind="masks")


# ------------------------------------------------------------------------ transactions, events
def test_a_failing_transaction_leaves_the_database_identical(query_index, db_dump):
    before = db_dump(query_index)
    with pytest.raises(RuntimeError, match="boom"), query_index.transaction():
        query_index.add_category("transient")
        query_index.delete_observations([o.id for o in query_index.observations()])
        query_index.update_category("cell", colour="#000000")
        raise RuntimeError("boom")
    assert db_dump(query_index) == before


def test_listeners_hear_committed_changes_only(boxes_index):
    heard: list[Change] = []
    unsubscribe = boxes_index.subscribe(heard.append)
    obs = boxes_index.add_observation("im0.png", "cell", box=(0, 0, 4, 4))
    boxes_index.update_observation(obs.id, box=(1, 1, 4, 4))
    with pytest.raises(RuntimeError), boxes_index.transaction():
        boxes_index.add_category("never")
        raise RuntimeError
    with boxes_index.transaction():  # nested writes are told after the outer commit
        boxes_index.add_category("later")
        assert heard[-1].action == "updated"
        boxes_index.delete_observations([obs.id])
    assert [(c.table, c.action, c.ids) for c in heard] == [
        ("observations", "added", (obs.id,)),
        ("observations", "updated", (obs.id,)),
        ("categories", "added", (boxes_index.category("later").id,)),
        ("observations", "deleted", (obs.id,)),
    ]
    unsubscribe()
    boxes_index.add_category("unheard")
    assert len(heard) == 4


def test_a_broken_listener_neither_fails_the_write_nor_silences_others(boxes_index, caplog):
    heard = []

    def broken(change):
        raise ValueError("listener bug")

    boxes_index.subscribe(broken)
    boxes_index.subscribe(heard.append)
    boxes_index.add_category("c")
    assert len(heard) == 1 and "listener bug" in caplog.text
    assert boxes_index.category("c")


def test_two_threads_write_at_once(boxes_index):
    errors = []
    heard = []
    boxes_index.subscribe(lambda change: heard.append(threading.current_thread().name))

    def write(image: str) -> None:
        try:
            for i in range(25):
                boxes_index.add_observation(image, "cell", box=(i, i, i + 5, i + 5))
        except Exception as exc:
            errors.append(exc)
        finally:
            boxes_index.close()

    threads = [threading.Thread(target=write, args=(f"im{i}.png",)) for i in range(2)]
    for thread in threads:
        thread.start()
    write_main = [boxes_index.add_category(f"main{i}") for i in range(10)]
    for thread in threads:
        thread.join()
    assert not errors
    assert len(write_main) == 10
    assert boxes_index.counts()["cell"] == {"images": 2, "boxes": 50, "keypoints": 0}
    assert len(set(heard)) == 3 and len(heard) == 60


def test_a_second_process_holding_the_write_lock(boxes_index, db_dump, write_locked):
    index = Index(boxes_index.path, lock_timeout=0.2)
    before = db_dump(index)
    with write_locked(index):
        with pytest.raises(IndexLockedError, match=r"^the index is locked for writing by another"):
            index.add_observation("im0.png", "cell", box=(0, 0, 3, 3))
        assert len(index.images()) == 2  # reading still works while another process writes
    assert db_dump(index) == before
    index.add_observation("im0.png", "cell", box=(0, 0, 3, 3))  # free again once released


def test_referenced_files_may_move_with_the_index(boxes_index, tmp_path):
    moved = shutil.copytree(boxes_index.path, tmp_path / "moved")
    boxes_index.close()
    again = Index(moved)
    assert np.array_equal(again.read_image("im1.png"), _rgb(seed=1))


def test_resolve_images_takes_records_ids_and_names_once_in_order(boxes_index):
    im0, im1 = boxes_index.images()
    found = boxes_index.resolve_images(["im1.png", im0, im1.id, "im0.png"])
    assert [r.id for r in found] == [im1.id, im0.id]
    with pytest.raises(BadInputError, match=r"no image 'nope\.png'"):
        boxes_index.resolve_images([im0, "nope.png"])


def test_query_only_reads(boxes_index, db_dump):
    before = db_dump(boxes_index)
    with pytest.raises(BadInputError, match="reads only"):
        boxes_index.query("DELETE FROM images")
    assert db_dump(boxes_index) == before
    assert boxes_index.query("SELECT COUNT(*) FROM images")[0][0] == 2


def test_remove_parts_deletes_an_observation_left_with_nothing(boxes_index):
    both = boxes_index.add_observation("im0.png", "fly", box=(1, 1, 30, 30),
                                       keypoints=[(5, 5, 2), (9, 9, 2)], source="model",
                                       score=0.9)
    kept = boxes_index.remove_parts(both.id, box=True, source="model")
    assert kept.box is None and kept.has_keypoints and kept.score == 0.9  # still the model's
    kept = boxes_index.remove_parts(both.id, keypoints=["head"])
    assert kept.keypoints == ((0.0, 0.0, 0), (9.0, 9.0, 2)) and kept.source == "human"
    assert boxes_index.remove_parts(both.id, keypoints=["tail"]) is None
    assert boxes_index.observations(ids=[both.id]) == []
    box = boxes_index.add_observation("im0.png", "cell", box=(1, 1, 5, 5))
    assert boxes_index.remove_parts(box.id, keypoints=True).box == (1, 1, 5, 5)
    assert boxes_index.remove_parts(box.id, box=True) is None
