"""What a labeller sets from the GUI besides geometry: an image's reviewed state (schema 2),
attributes of observations, and the per-source counts the image table shows."""

from __future__ import annotations

import sqlite3

import pytest

from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import Change, Index
from napari_learn_complete.index.coco import export_coco, import_coco
from napari_learn_complete.index.schema import MIGRATIONS, SCHEMA_VERSION
from napari_learn_complete.index.store import DB_NAME


def test_a_version_1_index_is_migrated_when_opened(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(MIGRATIONS[1])
    conn.execute("INSERT INTO images(name, path, width, height) VALUES ('a.png', 'a.png', 8, 6)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    index = Index(folder)
    assert index.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    [image] = index.images()
    assert (image.name, image.reviewed) == ("a.png", False)
    index.set_reviewed([image.id])
    assert index.image(image.id).reviewed


def test_set_clear_and_filter_reviewed_in_one_announced_change(sample_index, db_dump):
    heard: list[Change] = []
    sample_index.subscribe(heard.append)
    sample_index.set_reviewed([3, 1, 3])
    assert heard == [Change("images", "updated", (1, 3))]
    assert [i.id for i in sample_index.images(reviewed=True)] == [1, 3]
    assert 1 not in {i.id for i in sample_index.images(reviewed=False)}
    sample_index.set_reviewed([1], False)
    assert [i.id for i in sample_index.images(reviewed=True)] == [3]
    assert [i.id for i in sample_index.images(reviewed=True, category="disc")] == [3]
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match="no image 99"):
        sample_index.set_reviewed([1, 99])
    assert db_dump(sample_index) == before


def test_coco_round_trip_is_unaffected_by_reviewed(sample_index, empty_index, tmp_path):
    plain = export_coco(sample_index, tmp_path / "plain.json")
    sample_index.set_reviewed([i.id for i in sample_index.images()])
    reviewed = export_coco(sample_index, tmp_path / "coco.json")
    assert reviewed == plain
    import_coco(empty_index, tmp_path / "coco.json", sample_index.images_dir)
    assert not any(i.reviewed for i in empty_index.images())
    assert empty_index.count_observations() == sample_index.count_observations()


def test_observation_counts_by_source(sample_index):
    image = sample_index.image("sample_006.png")
    assert image.id not in sample_index.observation_counts()  # no observations: left out
    sample_index.add_observation(image, "disc", box=(1, 1, 9, 9), source="model", score=0.5)
    sample_index.add_observation(image, "disc", box=(20, 20, 29, 29), source="model", score=0.4)
    sample_index.add_observation(image, "square", box=(40, 40, 49, 49))
    counts = sample_index.observation_counts()
    assert counts[image.id] == (1, 2)
    assert counts[1] == (len(sample_index.observations(images=[1])), 0)


def test_set_attributes_sets_and_removes_keys_and_keeps_the_source(sample_index, db_dump):
    model = sample_index.add_observation("sample_006.png", "disc", box=(1, 1, 9, 9),
                                         source="model", score=0.7, model_version="m:v1",
                                         attributes={"note": "x"})
    heard: list[Change] = []
    sample_index.subscribe(heard.append)
    sample_index.set_attributes([model.id, 1], {"state": "good", "note": None})
    assert heard == [Change("observations", "updated", (1, model.id))]
    after = sample_index.observation(model.id)
    assert after.attributes == {"state": "good"}
    assert (after.source, after.score, after.model_version) == ("model", 0.7, "m:v1")
    assert sample_index.observation(1).attributes == {"state": "good"}
    assert sample_index.observation(1).source == "human"
    assert [i.id for i in sample_index.images(attribute=("state", "good"))] == [1, 7]
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match="no observation 999"):
        sample_index.set_attributes([1, 999], {"state": "bad"})
    with pytest.raises(BadInputError, match="needs a key"):
        sample_index.set_attributes([1], {" ": "bad"})
    assert db_dump(sample_index) == before
