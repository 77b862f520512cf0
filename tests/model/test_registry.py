"""Models registered in an index: creation, versions, rollback, loading and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from napari_learn_complete.errors import BadInputError, RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model import (
    LIGHT_BOX_HEAD,
    LIGHT_KEYPOINT_HEAD,
    ModelConfig,
    active_model,
    build_model,
    create_model,
    default_input_size,
    load_weights,
    models,
    registry,
    save_weights,
    set_active_model,
)


def test_create_model_writes_config_and_version_one(sample_index):
    handle = create_model(sample_index, weights="none", keypoints=True)
    config_file = sample_index.models_dir / "default" / "config.json"
    assert json.loads(config_file.read_text())["architecture"] == "keypointrcnn"
    assert handle.config == ModelConfig.load(config_file)
    assert handle.config.categories == [c.name for c in sample_index.categories()]
    assert handle.config.keypoint_names == ["apex", "left", "right"]
    assert handle.supports("keypoints")
    [version] = handle.versions()
    assert (version.number, version.parent, version.active) == (1, None, True)
    assert version.file == handle.folder / "versions" / "0001.pt"
    assert "initial weights: none" in version.note
    assert active_model(sample_index).name == "default"


def test_keypoint_names_are_the_ordered_union_of_enabled_categories(empty_index):
    empty_index.add_category("mouse", keypoints=["nose", "tail"])
    empty_index.add_category("rat", keypoints=["nose", "ear", "tail"])
    empty_index.add_category("fly", keypoints=["wing"])
    empty_index.update_category("fly", keypoints_enabled=False)
    handle = create_model(empty_index, weights="none", keypoints=True)
    assert handle.config.keypoint_names == ["nose", "tail", "ear"]


def test_one_active_model_per_index(sample_index):
    create_model(sample_index, weights="none")
    second = create_model(sample_index, weights="none", name="second", purpose="identify")
    assert active_model(sample_index).name == "second"
    assert second.config.purpose == "identify"
    assert [r["name"] for r in sample_index.query("SELECT name FROM models WHERE active = 1")] \
        == ["second"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"keypoints": True}, RefusedError, "needs a category with keypoints enabled"),
        ({"backbone": "vgg16"}, BadInputError,
         "backbone: must be 'mobilenet_v3_large_320_fpn', 'mobilenet_v3_large_fpn', "
         "'resnet50_fpn_v2' or 'resnet50_fpn', not 'vgg16'"),
        ({"choice": "huge"}, BadInputError,
         "model choice 'huge' is not one of fast, balanced, accurate, keypoints"),
        ({"purpose": "count"}, BadInputError,
         "purpose: must be 'locate', 'classify' or 'identify', not 'count'"),
        ({"name": "a/b"}, BadInputError, "plain folder name"),
        ({"weights": "nowhere.pt"}, BadInputError, "nowhere.pt: weight file not found"),
    ],
)
def test_refused_create_leaves_the_index_as_it_was(empty_index, db_dump, kwargs, error, message):
    empty_index.add_category("cell")
    before = db_dump(empty_index)
    with pytest.raises(error) as err:
        create_model(empty_index, **{"weights": "none", **kwargs})
    assert message in str(err.value)
    assert db_dump(empty_index) == before


def test_duplicate_name_and_stray_folder_are_refused(sample_index, db_dump):
    create_model(sample_index, weights="none")
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match=r"^a model named 'default' already exists in the index"):
        create_model(sample_index, weights="none")
    (sample_index.models_dir / "stray").mkdir()
    with pytest.raises(RefusedError, match="not a model of the index"):
        create_model(sample_index, weights="none", name="stray")
    assert db_dump(sample_index) == before


@pytest.mark.parametrize("failing", ["before the transaction", "after the folder is placed"])
def test_failed_database_write_removes_the_new_folder(sample_index, db_dump, monkeypatch,
                                                      failing):
    before = db_dump(sample_index)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    if failing == "before the transaction":
        monkeypatch.setattr(registry, "_relative", fail)
    else:
        monkeypatch.setattr(sample_index, "_record_change", fail)
    with pytest.raises(OSError, match="disk full"):
        create_model(sample_index, weights="none")
    assert db_dump(sample_index) == before
    assert not (sample_index.models_dir / "default").exists()


def test_no_model_is_refused(empty_index):
    with pytest.raises(RefusedError, match=r"^no model yet: create one in the Model panel"):
        active_model(empty_index)


def _index_with_images(tmp_path, sizes) -> Index:
    index = Index.create(tmp_path / "sized")
    paths = []
    for i, (width, height) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.new("L", (width, height)).save(path)
        paths.append(path)
    index.add_images(paths)
    return index


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([], (320, 320)),
        ([(160, 96), (120, 120), (100, 150)], (320, 480)),  # small images: at least 320
        ([(480, 360)] * 3, (352, 480)),  # 360 rounds to 352; aspect 4:3
        ([(1000, 700), (1000, 700), (64, 64)], (640, 928)),  # capped at 640
        ([(4000, 500)], (512, 1024)),  # a panorama: at most twice min_size
    ],
)
def test_default_input_size_follows_the_images(tmp_path, sizes, expected):
    index = _index_with_images(tmp_path, sizes)
    assert default_input_size(index) == expected
    assert default_input_size(index, 800)[0] == 800


def test_create_uses_the_input_size_rule(tmp_path):
    index = _index_with_images(tmp_path, [(480, 360)] * 3)
    index.add_category("cell")
    handle = create_model(index, weights="none")
    assert (handle.config.min_size, handle.config.max_size) == (352, 480)
    assert create_model(index, weights="none", name="big", min_size=640).config.min_size == 640


def test_commit_versions_and_rollback(sample_index, db_dump):
    handle = create_model(sample_index, weights="none")
    model, config = handle.load()
    assert not model.training
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.add_(1.0)
    config.training.epochs = 3
    assert handle.commit_version(model, config, note="learn 1") == 2
    assert [(v.number, v.parent, v.active) for v in handle.versions()] == [
        (1, None, False), (2, 1, True)]
    reopened = active_model(sample_index)
    assert reopened.active_version == 2 and reopened.config.training.epochs == 3
    loaded, _ = reopened.load()
    assert torch.equal(loaded.roi_heads.box_predictor.cls_score.bias,
                       model.roi_heads.box_predictor.cls_score.bias)

    reopened.rollback(1)
    assert active_model(sample_index).active_version == 1
    assert active_model(sample_index).config.training.epochs == 20  # version 1's configuration
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match=r"has no version 7 \(versions: 1, 2\)"):
        reopened.rollback(7)
    assert db_dump(sample_index) == before


@pytest.mark.parametrize("failing", ["config file", "database"])
def test_failed_commit_keeps_the_active_version(sample_index, db_dump, monkeypatch, failing):
    handle = create_model(sample_index, weights="none")
    model, config = handle.load()
    config.training.epochs = 3
    before = db_dump(sample_index)
    config_json = (handle.folder / "config.json").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    if failing == "config file":
        monkeypatch.setattr(ModelConfig, "save", fail)
    else:
        monkeypatch.setattr(sample_index.models, "add_version", fail)
    with pytest.raises(OSError, match="disk full"):
        handle.commit_version(model, config, note="doomed")
    assert db_dump(sample_index) == before  # no row, no orphan weight or configuration file
    assert (handle.folder / "config.json").read_bytes() == config_json  # version 1's, as before
    assert handle.active_version == 1 and active_model(sample_index).active_version == 1
    assert active_model(sample_index).config.training.epochs == 20


def test_a_model_from_random_weights_repeats_with_its_seed(sample_index):
    """The same seed, the same initial weights (a demo or benchmark run repeats); the seed is
    recorded with the version."""
    made = {name: create_model(sample_index, weights="none", name=name, seed=seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 7))}
    states = {name: handle.load()[0].state_dict() for name, handle in made.items()}
    assert all(torch.equal(v, states["b"][k]) for k, v in states["a"].items())
    assert not all(torch.equal(v, states["c"][k]) for k, v in states["a"].items())
    assert load_weights(made["c"].versions()[0].file)[2]["seed"] == 7


def test_load_extends_heads_for_new_categories(sample_index):
    handle = create_model(sample_index, weights="none")
    old = handle.load()[0].roi_heads.box_predictor.cls_score.weight
    sample_index.add_category("star")
    model, config = handle.load()
    assert config.categories == ["disc", "square", "triangle", "star"]
    assert handle.config.categories == ["disc", "square", "triangle"]  # the version's, unchanged
    weight = model.roi_heads.box_predictor.cls_score.weight
    assert weight.shape[0] == 5 and torch.equal(weight[:4], old)
    assert handle.commit_version(model, config) == 2
    assert handle.config.categories[-1] == "star"
    _, config_dict, _ = load_weights(handle.versions()[-1].file)
    assert config_dict["categories"][-1] == "star"


def test_create_from_a_weight_file_of_another_index(sample_index, empty_index):
    source = create_model(sample_index, weights="none")
    file = source.versions()[0].file
    empty_index.add_category("triangle")
    empty_index.add_category("disc")
    handle = create_model(empty_index, weights=file)
    old = source.load()[0].roi_heads.box_predictor.cls_score.weight
    new = handle.load()[0].roi_heads.box_predictor.cls_score.weight
    assert torch.equal(new[1], old[3]) and torch.equal(new[2], old[1])  # matched by name
    assert "initial weights: " + str(file) in handle.versions()[0].note
    assert set(build_model(handle.config, file).state_dict()) == set(
        build_model(source.config).state_dict())


def _keypoint_head_channels(model: nn.Module) -> list[int]:
    convs = [m for m in model.roi_heads.keypoint_head if isinstance(m, nn.Conv2d)]
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.in_channels == convs[-1].out_channels
    return [conv.out_channels for conv in convs]


def test_keypoint_head_light_unless_coco_keypoint_weights_fill_torchvisions(sample_index):
    handle = create_model(sample_index, keypoints=True, weights="none")
    assert handle.config.keypoint_head == list(LIGHT_KEYPOINT_HEAD) == [128] * 4
    assert _keypoint_head_channels(handle.load()[0]) == [128] * 4
    copy = create_model(sample_index, keypoints=True, weights=handle.versions()[0].file,
                        name="copy")
    assert copy.config.keypoint_head == [128] * 4  # a weight file of ours keeps its head
    resnet = create_model(sample_index, choice="keypoints", weights="none", name="resnet")
    assert resnet.config.keypoint_head is None
    assert _keypoint_head_channels(resnet.load()[0]) == [512] * 8


def _box_head_width(model: nn.Module) -> int:
    head = model.roi_heads.box_head
    assert head.fc7.out_features == head.fc6.out_features
    assert model.roi_heads.box_predictor.cls_score.in_features == head.fc6.out_features
    return head.fc6.out_features


def test_box_head_light_unless_coco_weights_fill_torchvisions(sample_index, tmp_path):
    """COCO weights fill torchvision's box head (tests/model/test_pretrained.py); from random or
    ImageNet weights it starts random, so new models get the light one."""
    boxes = create_model(sample_index, weights="none")
    assert boxes.config.box_head == LIGHT_BOX_HEAD == 256
    assert _box_head_width(boxes.load()[0]) == 256
    points = create_model(sample_index, keypoints=True, weights="none", name="points")
    assert points.config.box_head == 256 and _box_head_width(points.load()[0]) == 256
    copy = create_model(sample_index, weights=boxes.versions()[0].file, name="copy")
    assert copy.config.box_head == 256  # a weight file of ours keeps its head
    wide = tmp_path / "wide.pt"  # torchvision's head, as saved before format 4
    config = boxes.config.replace(box_head=None)
    save_weights(wide, build_model(config), config, {})
    kept = create_model(sample_index, weights=wide, name="wide")
    assert kept.config.box_head is None and _box_head_width(kept.load()[0]) == 1024


def test_switching_the_active_model(sample_index, db_dump):
    first = create_model(sample_index, weights="none", name="boxes")
    second = create_model(sample_index, weights="none", keypoints=True, name="keypoints")
    assert active_model(sample_index).name == "keypoints" == second.name
    assert [h.name for h in models(sample_index)] == ["boxes", "keypoints"]
    seen = []
    sample_index.subscribe(seen.append)
    assert set_active_model(sample_index, "boxes").name == first.name
    assert active_model(sample_index).name == "boxes" and not active_model(sample_index).supports(
        "keypoints")
    assert [c.table for c in seen] == ["models"]  # the model panel refreshes on it
    before = db_dump(sample_index)
    with pytest.raises(BadInputError, match="no model named 'nope' \\(models: boxes, keypoints\\)"):
        set_active_model(sample_index, "nope")
    assert db_dump(sample_index) == before


def test_cli_activate(sample_index, capsys):
    from napari_learn_complete import cli

    create_model(sample_index, weights="none", name="a")
    create_model(sample_index, weights="none", name="b")
    assert cli.main(["model", "activate", str(sample_index.path), "a"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "a"
    assert active_model(sample_index).name == "a"
    assert cli.main(["model", "activate", str(sample_index.path), "zzz"]) == 2
