"""Sample data from napari's menu, and the COCO writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycocotools.coco import COCO

from napari_learn_complete._napari import index_layers, open_index
from napari_learn_complete._napari.sample_data import ensure_sample_index
from napari_learn_complete._napari.writer import write_coco
from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import Index


def test_sample_opens_synced_and_is_built_once(make_napari_viewer, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    viewer = make_napari_viewer()
    added = viewer.open_sample("napari-learn-complete", "sample_index")

    assert [layer._type_string for layer in added] == ["image", "shapes", "vectors", "points"]
    (synced,) = index_layers(viewer)
    folder = synced.index.path
    assert folder.parent.parent == tmp_path.resolve()
    assert len(synced.boxes_layer.data) > 0 and len(synced.keypoints_layer.data) > 0
    stamp = (folder / "index.sqlite").stat().st_mtime_ns
    assert ensure_sample_index(folder) == folder  # reused, not rebuilt
    assert (folder / "index.sqlite").stat().st_mtime_ns == stamp
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no build leftovers


def test_writer_exports_the_index_of_the_layers(make_napari_viewer, sample_index: Index,
                                                tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    synced = open_index(viewer, sample_index.path)
    synced.active_category = "disc"
    synced.boxes_layer.add([[[0, 4, 4], [0, 4, 20], [0, 20, 20], [0, 20, 4]]])
    out = tmp_path / "out.json"
    viewer.layers.selection = set(synced.layers[1:])

    assert viewer.layers.save(str(out), selected=True, plugin="napari-learn-complete") \
        == [str(out)]
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == len(sample_index.observations())
    disc = coco.getCatIds(catNms=["disc"])
    assert any(ann["bbox"] == [4.0, 4.0, 16.0, 16.0] for ann in coco.loadAnns(
        coco.getAnnIds(catIds=disc)))
    triangle = coco.loadCats(coco.getCatIds(catNms=["triangle"]))[0]
    assert triangle["keypoints"] == ["apex", "left", "right"]


def test_writer_refuses_layers_without_an_index(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(BadInputError, match="'loose' do not show a Learn & Complete index"):
        write_coco(str(out), [([], {"name": "loose", "metadata": {}}, "shapes")])
    assert not out.exists()


def test_writer_refuses_two_indexes(sample_index: Index, empty_index: Index, tmp_path) -> None:
    marker = "napari_learn_complete"
    data = [([], {"name": n, "metadata": {marker: {"index": str(i.path), "role": "boxes"}}},
              "shapes") for n, i in (("a", sample_index), ("b", empty_index))]
    with pytest.raises(BadInputError, match="come from 2 indexes"):
        write_coco(str(tmp_path / "out.json"), data)
    assert not (tmp_path / "out.json").exists()
