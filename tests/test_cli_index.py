"""The index sub-commands, called through ``cli.main`` as a script would run them."""

from __future__ import annotations

import json

import pytest

from napari_learn_complete.cli import main
from napari_learn_complete.index import Index


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_create_import_info_export(sample_index, tmp_path, capsys):
    assert main(["export-coco", str(sample_index.path), str(tmp_path / "out.json")]) == 0
    exported = _last_json(capsys)
    assert exported["images"] == 12 and exported["categories"] == 3
    assert main(["create", str(tmp_path / "new")]) == 0
    assert _last_json(capsys)["created"]
    assert main(["import-coco", str(tmp_path / "new"), str(tmp_path / "out.json"),
                 "--images", str(sample_index.images_dir), "--copy"]) == 0
    report = _last_json(capsys)
    assert report["images_added"] == 12 and report["observations"] == exported["annotations"]
    assert main(["info", str(tmp_path / "new")]) == 0
    info = _last_json(capsys)
    assert info["categories"] == {
        name: {**counts, "keypoint_names": list(sample_index.category(name).keypoint_names)}
        for name, counts in sample_index.counts().items()
    }
    assert (info["images"], info["observations"]) == (12, exported["annotations"])
    assert (tmp_path / "new" / "images" / "sample_000.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "{tmp}/nothing"], "not an index"),
        (["create", "{index}"], "an index already exists here"),
        (["import-coco", "{index}", "{tmp}/missing.json", "--images", "{tmp}"],
         "COCO file not found"),
        (["import-coco", "{index}", "{tmp}/bad.json", "--images", "{tmp}"],
         "annotation 1: unknown image_id 5"),
    ],
    ids=["not-an-index", "create-twice", "missing-coco", "malformed-coco"],
)
def test_bad_input_exits_2_with_a_clear_message(sample_index, tmp_path, capsys, db_dump, argv,
                                                message):
    (tmp_path / "bad.json").write_text(json.dumps({
        "images": [], "categories": [{"id": 1, "name": "disc"}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1]}],
    }))
    before = db_dump(sample_index)
    argv = [a.format(tmp=tmp_path, index=sample_index.path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-learn-complete {argv[0]}: ") and message in err
    assert db_dump(sample_index) == before
    assert not (tmp_path / "nothing").exists()


def test_missing_images_option_is_a_usage_error(tmp_path):
    Index.create(tmp_path / "ix").close()
    with pytest.raises(SystemExit) as info:
        main(["import-coco", str(tmp_path / "ix"), str(tmp_path / "x.json")])
    assert info.value.code == 2


def test_info_names_the_folders_the_index_reads_images_from(tmp_path, capsys):
    """Images imported by reference register their folder as an image root, which ``info``
    shows (the one place outside the index it will read); copied images need none."""
    from PIL import Image

    Image.new("RGB", (5, 4)).save(tmp_path / "a.png")
    assert main(["create", str(tmp_path / "new")]) == 0
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 5, "height": 4}],
            "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert main(["info", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "image roots: none (all images inside)" in out
    assert main(["import-coco", str(tmp_path / "new"), str(tmp_path / "coco.json"),
                 "--images", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert f"image roots: {tmp_path}\n" in out
    info = json.loads(out.strip().splitlines()[-1])
    assert (info["image_roots"], info["read_only"]) == ([str(tmp_path)], False)
