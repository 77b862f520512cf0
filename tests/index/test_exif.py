"""EXIF orientation: an image is the displayed image, as every annotation tool shows it, in
reading, COCO import and COCO export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import media
from napari_learn_complete.index.coco import export_coco, import_coco

WIDTH, HEIGHT = 48, 80  # as displayed; the file stores 80 x 48
BOX = (4, 50, 20, 74)  # the bright object, in displayed pixels (x0, y0, x1, y1)


@pytest.fixture
def rotated(tmp_path) -> Path:
    """A JPEG stored on its side with EXIF orientation 6 (turn 90 degrees clockwise to show)."""
    shown = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x0, y0, x1, y1 = BOX
    shown[y0:y1, x0:x1] = 255
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[ExifTags.Base.Orientation] = 6
    path = tmp_path / "photo.jpg"
    stored.save(path, exif=exif, quality=95)
    return path


def _brightness(pixels: np.ndarray, box) -> float:
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(pixels[y0:y1, x0:x1].mean())


def test_a_rotated_jpeg_reads_and_probes_as_displayed(rotated):
    assert media.probe(rotated) == (WIDTH, HEIGHT, 3)
    pixels = media.read_file(rotated)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    assert _brightness(pixels, BOX) > 200
    reduced = media.read_file(rotated, fit=(16, 16))  # JPEG decodes it at a quarter, upright
    assert reduced.shape[:2] == (HEIGHT // 4, WIDTH // 4)
    assert _brightness(reduced, [v / 4 for v in BOX]) > 150
    assert media.full_size(reduced) == (WIDTH, HEIGHT)


def _coco(rotated: Path, width: int, height: int) -> Path:
    x0, y0, x1, y1 = BOX
    path = rotated.parent / "coco.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": rotated.name, "width": width, "height": height}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0]}],
    }))
    return path


def test_coco_in_displayed_coordinates_puts_the_box_on_the_object_and_exports_it(
        empty_index, rotated, tmp_path):
    import_coco(empty_index, _coco(rotated, WIDTH, HEIGHT), rotated.parent)
    record = empty_index.image(rotated.name)
    assert (record.width, record.height) == (WIDTH, HEIGHT)
    [obs] = empty_index.observations()
    assert _brightness(empty_index.read_image(record), obs.box) > 200
    exported = export_coco(empty_index, tmp_path / "out.json")
    assert [(i["width"], i["height"]) for i in exported["images"]] == [(WIDTH, HEIGHT)]
    assert [a["bbox"] for a in exported["annotations"]] == [[4, 50, 16, 24]]


def test_coco_declaring_the_stored_size_is_refused_naming_the_orientation(
        empty_index, rotated, db_dump):
    before = db_dump(empty_index)
    with pytest.raises(BadInputError, match=f"declares {HEIGHT}x{WIDTH}, the stored size, but "
                                            f"its EXIF orientation 6 turns it to {WIDTH}x"
                                            f"{HEIGHT} as displayed"):
        import_coco(empty_index, _coco(rotated, HEIGHT, WIDTH), rotated.parent)
    assert db_dump(empty_index) == before
