"""COCO files that must be refused as bad input (exit 2, one line naming the problem), leaving
the index as it was: nesting deeper than the JSON parser recurses, and file names no file system
takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_learn_complete.cli import main


def _coco(file_name: str) -> dict:
    return {"images": [{"id": 1, "file_name": file_name, "width": 8, "height": 8}],
            "categories": [{"id": 1, "name": "disc"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}",
         "not a readable JSON COCO file (nested too deeply)"),
        (json.dumps(_coco("a\0b.png")), r"image 1: file_name 'a\x00b.png' contains a "
                                        "NUL byte"),
        (json.dumps(_coco("x" * 300 + ".png")), "image 1 (" + "x" * 77 + "...): file_name "
                                                "is not a usable path (File name too long)"),
        (json.dumps(_coco("d/" * 3000 + "a.png")), "file_name is not a usable path (File name "
                                                   "too long)"),
    ],
    ids=["deep-nesting", "nul-byte", "long-name", "long-path"],
)
def test_bad_coco_exits_2_with_one_line_and_changes_nothing(sample_index, tmp_path, capsys,
                                                             db_dump, content, message):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "bad.json").write_text(content)
    before = db_dump(sample_index)
    assert main(["import-coco", str(sample_index.path), str(tmp_path / "bad.json"),
                 "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and len(err) < 400, err
    assert message in err
    assert db_dump(sample_index) == before
