"""Model configuration: JSON round trip and validation that names the wrong field."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from napari_learn_complete.errors import BadInputError, RefusedError
from napari_learn_complete.index import Category
from napari_learn_complete.model import Augment, InferenceSettings, ModelConfig, TrainingSettings


def _keypoint_config() -> ModelConfig:
    return ModelConfig(
        name="mice", purpose="identify", architecture="keypointrcnn", backbone="resnet50_fpn_v2",
        min_size=480, max_size=640, categories=["mouse", "cage"],
        keypoint_names=["nose", "left_ear", "right_ear"],
        training=TrainingSettings(epochs=3, optimizer="adamw", lr_decay="step",
                                  augment=Augment(hflip=False, scale_jitter=(0.5, 1.5))),
        inference=InferenceSettings(score_threshold=0.3, nms_iou=0.4, max_detections=7),
    )


def test_json_round_trip_is_human_readable(tmp_path):
    config = _keypoint_config()
    path = tmp_path / "config.json"
    config.save(path)
    text = path.read_text()
    assert text.count("\n") > 20  # indented, one field per line
    data = json.loads(text)
    assert data["architecture"] == "keypointrcnn"
    assert data["training"]["augment"]["scale_jitter"] == [0.5, 1.5]
    assert ModelConfig.load(path) == config
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"]  # no temp file left


def test_defaults_match_the_contract():
    config = ModelConfig()
    assert (config.architecture, config.backbone, config.min_size) == (
        "fasterrcnn", "mobilenet_v3_large_fpn", 320)
    assert config.training.lr_decay == "cosine"
    assert config.kinds == ("roi",)
    assert _keypoint_config().kinds == ("roi", "keypoints")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"purpose": "detect"}, "unknown purpose 'detect'"),
        ({"architecture": "yolo"}, "unknown architecture 'yolo'"),
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'"),
        ({"keypoint_names": []}, "needs at least one keypoint name"),
        ({"min_size": 700}, "max_size 640 is smaller than min_size 700"),
        ({"min_size": 8}, "min_size must be an integer from 32 to 4096"),
        ({"categories": ["a", "a"]}, "categories lists a name twice"),
        ({"name": "../evil"}, "must be a plain folder name"),
        ({"training": TrainingSettings(optimizer="lbfgs")}, "unknown training.optimizer"),
        ({"training": TrainingSettings(epochs=0)}, "training.epochs must be an integer > 0"),
        ({"training": TrainingSettings(test_percent=100)}, "training.test_percent"),
        ({"inference": InferenceSettings(nms_iou=0)}, "nms_iou in (0, 1]"),
    ],
)
def test_bad_fields_are_named(change, message):
    with pytest.raises(BadInputError) as err:
        replace(_keypoint_config(), **change)
    assert message in str(err.value)


def test_boxes_model_refuses_keypoint_names():
    with pytest.raises(BadInputError, match="use 'keypointrcnn'"):
        ModelConfig(keypoint_names=["nose"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(colour="red"), "unknown field(s) colour"),
        (lambda d: d["training"].update(epoch=3), "training: unknown field(s) epoch"),
        (lambda d: d.update(format_version=2), "newer than this plugin reads"),
        (lambda d: d.update(format="something-else"), "not a model configuration"),
        (lambda d: d["training"]["augment"].update(scale_jitter=3), "two numbers"),
    ],
)
def test_bad_json_is_refused(tmp_path, edit, message):
    data = _keypoint_config().to_dict()
    edit(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError) as err:
        ModelConfig.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unreadable_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="not a readable JSON"):
        ModelConfig.load(path)
    with pytest.raises(BadInputError, match="not found"):
        ModelConfig.load(tmp_path / "missing.json")


def test_keypoint_slots_and_supports():
    config = _keypoint_config()
    head = Category(1, "head", "#fff", True, True, ("right_ear", "nose"), ())
    assert config.keypoint_slots(head) == [2, 0]
    tail = Category(2, "tail", "#fff", True, True, ("nose", "tail_tip"), ())
    with pytest.raises(RefusedError, match="tail_tip"):
        config.keypoint_slots(tail)
    assert config.supports("keypoints") and not ModelConfig().supports("keypoints")
    with pytest.raises(BadInputError, match="kind must be one of"):
        config.supports("masks")
