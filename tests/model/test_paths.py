"""A model reads and writes only inside its index's models folder: a path of the database, or a
folder linked elsewhere, is refused by name before anything is written."""

from __future__ import annotations

import re
import shutil
import sqlite3

import pytest

from napari_learn_complete.errors import RefusedError
from napari_learn_complete.index.store import DB_NAME
from napari_learn_complete.model import active_model, create_model


def _edit(index, sql: str, *params: str) -> None:
    """Change the database behind the index's back, as a crafted one would be."""
    conn = sqlite3.connect(index.path / DB_NAME)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_a_linked_versions_folder_gets_no_new_version(sample_index, tmp_path, db_dump):
    handle = create_model(sample_index, weights="none")
    model, config = handle.load()
    elsewhere = tmp_path / "elsewhere"
    shutil.move(handle.folder / "versions", elsewhere)
    (handle.folder / "versions").symlink_to(elsewhere)
    before, kept = db_dump(sample_index), sorted(elsewhere.iterdir())
    with pytest.raises(RefusedError, match="model 'default': its versions folder leads outside "
                                           "the index's models folder") as refused:
        handle.commit_version(model, config, note="learn")
    assert str(elsewhere) in str(refused.value)
    assert sorted(elsewhere.iterdir()) == kept
    assert db_dump(sample_index) == before


@pytest.mark.parametrize("how", ["config_path", "linked folder"])
def test_a_model_folder_outside_the_index_is_refused(sample_index, tmp_path, how):
    """Learn would write the version and its config.json there: the handle is refused first."""
    create_model(sample_index, weights="none")
    other = tmp_path / "other_index" / "models" / "default"
    shutil.copytree(sample_index.models_dir / "default", other)
    if how == "config_path":
        _edit(sample_index, "UPDATE models SET config_path = ?",
              "../other_index/models/default/config.json")
    else:
        shutil.rmtree(sample_index.models_dir / "default")
        (sample_index.models_dir / "default").symlink_to(other)
    leads_out = f"model 'default': its folder leads outside .*{re.escape(str(other))}"
    with pytest.raises(RefusedError, match=leads_out):
        active_model(sample_index)


def test_a_version_file_outside_the_models_folder_is_refused(sample_index, tmp_path):
    handle = create_model(sample_index, weights="none")
    shutil.copy(handle.folder / "versions" / "0001.pt", tmp_path / "weights.pt")
    _edit(sample_index, "UPDATE model_versions SET file = ?", "../weights.pt")
    with pytest.raises(RefusedError, match="model 'default': its version 1 leads outside"):
        active_model(sample_index).load()


def test_a_linked_models_folder_gets_no_model(sample_index, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(sample_index.models_dir, elsewhere)
    sample_index.models_dir.symlink_to(elsewhere)
    with pytest.raises(RefusedError, match="model 'default': its folder leads outside"):
        create_model(sample_index, weights="none")
    assert list(elsewhere.iterdir()) == []
