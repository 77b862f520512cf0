"""COCO import/export: pycocotools reads our exports, files from other tools import, malformed
files are refused with a message naming file, item and problem, and the index stays as it was."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from napari_learn_complete.errors import BadInputError, IndexLockedError
from napari_learn_complete.index import Index
from napari_learn_complete.index.coco import export_coco, import_coco

# Real COCO keypoint files written by other tools (mmpose test data), beside the repository.
COCO_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco-keypoints-samples"
SCHEMAS = sorted(COCO_SAMPLES.glob("*/*.json"))


def _evaluate(gt_file: Path, kind: str, cat_ids: list[int], n_keypoints: int = 0) -> float:
    """AP of the file's own annotations, given score 1, scored against the file."""
    gt = COCO(str(gt_file))
    dets = [dict(a, score=1.0) for a in gt.loadAnns(gt.getAnnIds(catIds=cat_ids))]
    evaluator = COCOeval(gt, gt.loadRes(dets), kind)
    evaluator.params.catIds = cat_ids
    if kind == "keypoints":
        evaluator.params.kpt_oks_sigmas = np.full(n_keypoints, 0.05)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def test_export_loads_in_pycocotools_and_scores_ap_1_against_itself(sample_index, tmp_path):
    out = tmp_path / "export.json"
    data = export_coco(sample_index, out)
    assert json.loads(out.read_text()) == data
    tri = sample_index.category("triangle")
    assert {c["name"]: (c["keypoints"], c["skeleton"]) for c in data["categories"]} == {
        "disc": ([], []), "square": ([], []),
        "triangle": (["apex", "left", "right"], [[1, 2], [2, 3], [3, 1]]),
    }
    assert len(data["annotations"]) == len(sample_index.observations())
    cat_ids = [c.id for c in sample_index.categories()]
    assert _evaluate(out, "bbox", cat_ids) == pytest.approx(1.0)
    assert _evaluate(out, "keypoints", [tri.id], 3) == pytest.approx(1.0)
    kp = next(a for a in data["annotations"] if a["category_id"] == tri.id)
    assert kp["num_keypoints"] == 3 and len(kp["keypoints"]) == 9 and kp["iscrowd"] == 0
    assert kp["area"] == pytest.approx(kp["bbox"][2] * kp["bbox"][3])


def test_model_observations_export_as_scored_detections(sample_index, tmp_path):
    image = sample_index.images()[-1]
    obs = sample_index.add_observation(image, "disc", box=(2, 3, 30, 33), source="model",
                                       score=0.7, model_version="default@2")
    human = sample_index.add_observation(image, "triangle", keypoints=[(5, 5, 2), (9, 9, 0),
                                                                       (1, 1, 1)])
    data = export_coco(sample_index, tmp_path / "out.json", images=[image.name])
    assert [i["file_name"] for i in data["images"]] == [image.name]
    anns = {a["id"]: a for a in data["annotations"]}
    assert set(anns) == {obs.id, human.id}
    assert anns[obs.id]["score"] == 0.7 and anns[obs.id]["model_version"] == "default@2"
    assert anns[obs.id]["bbox"] == [2, 3, 28, 30]
    assert "score" not in anns[human.id] and "bbox" not in anns[human.id]
    assert anns[human.id]["num_keypoints"] == 2 and anns[human.id]["area"] == 16
    gt = COCO(str(tmp_path / "out.json"))
    assert gt.loadRes([anns[obs.id]]).anns[1]["score"] == 0.7


@pytest.mark.parametrize("coco_file", SCHEMAS, ids=[p.parent.name for p in SCHEMAS])
def test_files_from_other_tools_round_trip(empty_index, tmp_path, coco_file):
    original = json.loads(coco_file.read_text())
    report = import_coco(empty_index, coco_file, coco_file.parent)
    assert report.images_added == len(original["images"])
    assert report.observations == len(original["annotations"])
    exported = export_coco(empty_index, tmp_path / "out.json")
    COCO(str(tmp_path / "out.json"))

    def categories(data):
        return {c["name"]: (c.get("keypoints", []), c.get("skeleton", []))
                for c in data["categories"]}

    def images(data):
        return sorted((i["file_name"], i["width"], i["height"]) for i in data["images"])

    def annotations(data):
        names = {i["id"]: i["file_name"] for i in data["images"]}
        cats = {c["id"]: c["name"] for c in data["categories"]}
        return sorted(
            (names[a["image_id"]], cats[a["category_id"]], a.get("iscrowd", 0),
             tuple(np.round(a["bbox"], 3)),
             tuple(np.round(a.get("keypoints", []), 3)),
             sum(1 for v in a.get("keypoints", [])[2::3] if v > 0))
            for a in data["annotations"]
        )

    assert categories(exported) == categories(original)
    assert images(exported) == images(original)
    assert annotations(exported) == annotations(original)
    counted = {a["id"]: a["num_keypoints"] for a in exported["annotations"]}
    assert sorted(counted.values()) == sorted(a[5] for a in annotations(original))


@pytest.fixture
def coco_dir(tmp_path) -> Path:
    """An image root with sub-folders and a valid COCO file using both."""
    root = tmp_path / "export"
    (root / "train" / "day").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "train/day/b.png"):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(root / name)
    data = {
        "info": {"tool": "someone else's"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": 96, "height": 64, "coco_url": "x"},
            {"id": 2, "file_name": "train\\day\\b.png", "width": 96, "height": 64},
        ],
        "categories": [
            {"id": 1, "name": "blob", "supercategory": "thing"},
            {"id": 5, "name": "tri", "keypoints": ["apex", "left", "right"],
             "skeleton": [[1, 2], [2, 3]]},
        ],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "area": 200,
             "iscrowd": 0, "segmentation": [[1, 2, 3, 4]], "attributes": {"occluded": False}},
            {"id": 8, "image_id": 2, "category_id": 5, "bbox": [10, 10, 30, 30], "iscrowd": 1,
             "keypoints": [20, 10, 2, 10, 40, 1, 40, 40, 0], "num_keypoints": 2},
            {"id": 9, "image_id": 2, "category_id": 5, "keypoints": [5, 6, 2, 7, 8, 2, 9, 9, 2]},
        ],
    }
    (root / "coco.json").write_text(json.dumps(data))
    return root


def test_import_resolves_sub_folders_ignores_extras_and_merges_categories(
    sample_index, coco_dir
):
    before_tri = sample_index.category("triangle")
    data = json.loads((coco_dir / "coco.json").read_text())
    data["categories"][1]["name"] = "triangle"  # same keypoints: merged with the index's
    (coco_dir / "coco.json").write_text(json.dumps(data))
    report = import_coco(sample_index, coco_dir / "coco.json", coco_dir, copy=True)
    assert (report.images_added, report.images_reused) == (2, 0)
    assert report.categories_added == ("blob",) and report.categories_merged == ("triangle",)
    b = sample_index.image("train/day/b.png")
    assert sample_index.resolve(b) == sample_index.images_dir / "train" / "day" / "b.png"
    assert (b.width, b.height) == (96, 64)
    crowd, kp_only = sample_index.observations(images=[b])
    assert crowd.category_id == before_tri.id and crowd.iscrowd
    assert crowd.box == (10, 10, 40, 40)
    assert crowd.keypoints == ((20, 10, 2), (10, 40, 1), (40, 40, 0))
    assert kp_only.box is None and kp_only.source == "human"
    assert sample_index.observations(images=[sample_index.image("a.png")])[0].box == (1, 2, 11, 22)
    # importing again reuses the images by name and finds every annotation already there
    again = import_coco(sample_index, coco_dir / "coco.json", coco_dir)
    assert (again.images_added, again.images_reused, again.observations) == (0, 2, 0)
    assert again.already_present == 3


def _mutate(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


MALFORMED = {
    "missing-annotations": (lambda d: d.pop("annotations"), "file: missing key 'annotations'"),
    "missing-file-name": (lambda d: d["images"][0].pop("file_name"),
                          "image 1: missing key 'file_name'"),
    "missing-image-id": (lambda d: _ann(d, 8).pop("image_id"),
                         "annotation 8: missing key 'image_id'"),
    "bbox-wrong-type": (lambda d: _ann(d, 7).update(bbox="1,2,10,20"),
                        "annotation 7: 'bbox' must be .x, y, width, height. numbers"),
    "category-id-string": (lambda d: _ann(d, 7).update(category_id="1"),
                           "annotation 7: 'category_id' must be an integer, not '1'"),
    "unknown-category": (lambda d: _ann(d, 8).update(category_id=99),
                         "annotation 8: unknown category_id 99"),
    "unknown-image": (lambda d: _ann(d, 9).update(image_id=42),
                      "annotation 9: unknown image_id 42"),
    "negative-size": (lambda d: _ann(d, 7).update(bbox=[1, 1, -3, 4]),
                      "annotation 7: bbox .1, 1, -3, 4. has a negative width"),
    "negative-origin": (lambda d: _ann(d, 7).update(bbox=[-6, 1, 3, 4]),
                        "annotation 7: a.png: box .* lies outside the image .96x64."),
    "out-of-image": (lambda d: _ann(d, 7).update(bbox=[50, 30, 60, 10]),
                     "annotation 7: a.png: box .* lies outside the image"),
    "keypoint-count": (lambda d: _ann(d, 9).update(keypoints=[1, 2, 2, 3, 4, 2]),
                       "annotation 9: 2 keypoints given, category 'tri' has 3"),
    "keypoints-not-triples": (lambda d: _ann(d, 9).update(keypoints=[1, 2, 2, 3]),
                              "annotation 9: 'keypoints' has 4 numbers"),
    "keypoints-on-box-category": (lambda d: _ann(d, 7).update(keypoints=[1, 1, 2]),
                                  "annotation 7: .*'blob' has 0"),
    "visibility": (lambda d: _ann(d, 9).update(keypoints=[5, 6, 3, 7, 8, 2, 9, 9, 2]),
                   "annotation 9: keypoint visibility must be 0, 1 or 2"),
    "keypoint-outside": (lambda d: _ann(d, 9).update(keypoints=[500, 6, 2, 7, 8, 2, 9, 9, 2]),
                         "annotation 9: .*keypoint 'apex' at .500, 6. lies outside"),
    "duplicate-annotation": (lambda d: _ann(d, 9).update(id=8),
                             "annotation 8: annotation id is given twice"),
    "escape-dotdot": (lambda d: d["images"][0].update(file_name="../outside.png"),
                      "image 1: file_name '../outside.png' leaves the image root"),
    "escape-absolute": (lambda d: d["images"][0].update(file_name="/etc/passwd"),
                        "image 1: file_name '/etc/passwd' leaves the image root"),
    "missing-image-file": (lambda d: d["images"][0].update(file_name="gone.png"),
                           r"image 1 \(gone.png\): image file .*gone.png not found"),
    "declared-size": (lambda d: d["images"][0].update(width=100),
                      r"image 1 \(a.png\): declares 100x64 but the image is 96x64"),
    "bad-skeleton": (lambda d: d["categories"][1].update(skeleton=[[0, 1]]),
                     "category 5: skeleton edge .0, 1. is not between keypoints 1 and 3"),
    "keypoints-differ-from-index": (
        lambda d: d["categories"][1].update(name="triangle", keypoints=["a", "b", "c"]),
        "category 5: category 'triangle' exists in the index with keypoints"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_coco_is_refused_and_nothing_changes(sample_index, coco_dir, db_dump, case):
    change, message = MALFORMED[case]
    _mutate(coco_dir / "coco.json", change)
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match=message) as info:
        import_coco(sample_index, coco_dir / "coco.json", coco_dir, copy=True)
    assert str(info.value).startswith(str(coco_dir / "coco.json"))
    assert db_dump(sample_index) == before


def test_not_an_image_and_not_json_are_refused(sample_index, coco_dir, db_dump):
    before = db_dump(sample_index)
    (coco_dir / "a.png").write_text("text, not pixels")
    with pytest.raises(BadInputError, match=r"image 1 \(a.png\): .*not an image file"):
        import_coco(sample_index, coco_dir / "coco.json", coco_dir)
    (coco_dir / "coco.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not a readable JSON COCO file"):
        import_coco(sample_index, coco_dir / "coco.json", coco_dir)
    with pytest.raises(BadInputError, match="COCO file not found"):
        import_coco(sample_index, coco_dir / "none.json", coco_dir)
    with pytest.raises(BadInputError, match="image folder not found"):
        import_coco(sample_index, coco_dir / "coco.json", coco_dir / "nope")
    assert db_dump(sample_index) == before


def test_a_locked_index_gets_no_copied_files(sample_index, coco_dir, db_dump, write_locked):
    index = Index(sample_index.path, lock_timeout=0.2)
    before = db_dump(index)
    with write_locked(index), pytest.raises(IndexLockedError):
        import_coco(index, coco_dir / "coco.json", coco_dir, copy=True)
    assert db_dump(index) == before
    assert not (index.images_dir / "a.png").exists()


def test_export_then_import_into_a_new_index_gives_the_same_export(sample_index, tmp_path):
    first = export_coco(sample_index, sample_index.path / "out.json")
    other = Index.create(tmp_path / "other")
    import_coco(other, sample_index.path / "out.json", sample_index.images_dir)
    second = export_coco(other, tmp_path / "again.json")

    def strip(data):
        data = copy.deepcopy(data)
        data.pop("info")
        return data

    assert strip(second) == strip(first)


def test_the_eight_schemas_from_other_tools_are_found():
    assert len(SCHEMAS) == 8  # an empty parametrisation would silently test nothing


def test_export_never_follows_a_planted_link_and_refuses_bad_targets(sample_index, tmp_path):
    """The temporary file is created exclusively beside the target: a link planted under the
    old predictable name (``OUT.tmp``) is left alone, and so is what it points to."""
    folder = tmp_path / "export"
    folder.mkdir()
    victim = folder / "victim.txt"
    victim.write_text("keep me")
    out = folder / "out.json"
    (folder / "out.json.tmp").symlink_to(victim)
    export_coco(sample_index, out)
    assert victim.read_text() == "keep me"
    assert json.loads(out.read_text())["images"]
    assert sorted(p.name for p in folder.iterdir()) == ["out.json", "out.json.tmp",
                                                        "victim.txt"]

    with pytest.raises(BadInputError, match=r"^the COCO file to write is a folder"):
        export_coco(sample_index, folder)
    with pytest.raises(BadInputError, match=r"^the folder to write the COCO file in does not"):
        export_coco(sample_index, folder / "missing" / "out.json")
