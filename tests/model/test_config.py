"""Model configuration: JSON round trip and validation that names the wrong field."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from napari_learn_complete.errors import BadInputError, RefusedError
from napari_learn_complete.index import Category
from napari_learn_complete.model import Augment, InferenceSettings, ModelConfig, TrainingSettings
from napari_learn_complete.model.config import CONFIG_FORMAT_VERSION


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
        "fasterrcnn", "mobilenet_v3_large_320_fpn", 320)
    assert not config.backbone_trained  # random until a pretrained start or a Full Learn
    assert config.training.lr_decay == "cosine"
    assert config.kinds == ("roi",)
    assert _keypoint_config().kinds == ("roi", "keypoints")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"purpose": "detect"}, "purpose: must be 'locate', 'classify' or 'identify', not"),
        ({"architecture": "yolo"}, "architecture: must be 'fasterrcnn' or 'keypointrcnn'"),
        ({"backbone": "vgg16"}, "backbone: must be 'mobilenet_v3_large_320_fpn', "),
        ({"keypoint_names": []}, "needs at least one keypoint name"),
        ({"min_size": 700}, "max_size 640 is smaller than min_size 700"),
        ({"min_size": 8}, "min_size: must be greater than or equal to 32, not 8"),
        ({"min_size": 320.0}, "min_size: must be a valid integer, not 320.0"),
        ({"categories": ["a", "a"]}, "categories: lists a name twice"),
        ({"categories": ["a", ""]}, "categories.1: must have at least 1 character"),
        ({"name": "../evil"}, "name: must be a plain folder name, not '../evil'"),
        ({"training": {"optimizer": "lbfgs"}}, "training.optimizer: must be 'sgd' or 'adamw'"),
        ({"training": {"epochs": 0}}, "training.epochs: must be greater than or equal to 1"),
        ({"training": {"epochs": True}}, "training.epochs: must be a valid integer, not True"),
        ({"training": {"learning_rate": math.nan}},
         "training.learning_rate: must be a finite number, not nan"),
        ({"training": {"test_percent": 100}}, "training.test_percent: must be less than 100"),
        ({"training": {"augment": {"scale_jitter": (2.0, 1.0)}}},
         "training.augment.scale_jitter: must be 0 < low <= high, not [2.0, 1.0]"),
        ({"inference": {"nms_iou": 0}}, "inference.nms_iou: must be greater than 0, not 0"),
        ({"inference": {"score_threshold": -0.1}}, "inference.score_threshold: must be greater"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"keypoint_head": []}, "keypoint_head: must have at least 1 item"),
        ({"keypoint_head": [128, 0]}, "keypoint_head.1: must be greater than or equal to 1"),
        ({"box_head": 0}, "box_head: must be greater than or equal to 1"),
    ],
)
def test_bad_fields_are_named(change, message):
    with pytest.raises(BadInputError) as err:
        _keypoint_config().replace(**change)
    assert message in str(err.value)
    with pytest.raises(BadInputError) as err:  # built from scratch: the same words
        ModelConfig(**{**_keypoint_config().model_dump(), **change})
    assert message in str(err.value)


def test_an_assignment_is_validated_and_a_refused_one_changes_nothing():
    config = _keypoint_config()
    config.training.epochs = 5
    assert config.training.epochs == 5
    with pytest.raises(BadInputError, match=r"^learning_rate: must be a finite number, not inf"):
        config.training.learning_rate = math.inf
    with pytest.raises(BadInputError, match="max_size 640 is smaller than min_size 700"):
        config.min_size = 700  # a rule across fields, checked after the field itself
    expected = _keypoint_config()
    expected.training.epochs = 5
    assert config == expected  # min_size 480 and learning_rate 0.02 kept


def test_configuration_and_settings_pickle_and_round_trip_json():
    """Jobs carry settings to the engine process (pickled); runs record them as JSON."""
    from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings

    for value in (_keypoint_config(), LearnSettings(epochs=3, mode="full"),
                  CompleteSettings(min_score=0.5, batch_size=2)):
        assert pickle.loads(pickle.dumps(value)) == value
        assert type(value).model_validate(json.loads(json.dumps(value.model_dump()))) == value


def test_boxes_model_refuses_keypoint_names():
    with pytest.raises(BadInputError, match="use 'keypointrcnn'"):
        ModelConfig(keypoint_names=["nose"])
    with pytest.raises(BadInputError, match="keypoint_head is given but architecture"):
        ModelConfig(keypoint_head=[128])


def test_a_configuration_saved_before_the_keypoint_head_field_keeps_torchvisions_head():
    data = _keypoint_config().to_dict()
    data["format_version"] = 2
    del data["keypoint_head"]
    assert ModelConfig.from_dict(data).keypoint_head is None  # eight convolutions of 512


def test_a_configuration_saved_before_the_box_head_field_keeps_torchvisions_head():
    data = _keypoint_config().replace(box_head=64).to_dict()
    assert ModelConfig.from_dict(data).box_head == 64
    data["format_version"] = 3
    del data["box_head"]
    assert ModelConfig.from_dict(data).box_head is None  # two layers of 1024


@pytest.mark.parametrize("trained", [True, False])
def test_a_configuration_before_format_3_keeps_a_trained_backbones_statistics(trained):
    data = _keypoint_config().replace(backbone_trained=trained).to_dict()
    data["format_version"] = 2
    del data["backbone_pretrained"]
    assert ModelConfig.from_dict(data).backbone_pretrained is trained
    assert ModelConfig.from_dict({**data, "format_version": 3}).backbone_pretrained is False


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(colour="red"), "colour: unknown field"),
        (lambda d: d["training"].update(epoch=3), "training.epoch: unknown field"),
        (lambda d: d.update(format_version=CONFIG_FORMAT_VERSION + 1),
         "newer than this plugin reads"),
        (lambda d: d.update(format="something-else"), "not a model configuration"),
        (lambda d: d["training"]["augment"].update(scale_jitter=3),
         "training.augment.scale_jitter: must be a valid tuple, not 3"),
        (lambda d: d["training"].update(epochs="3"), "training.epochs: must be a valid integer"),
        (lambda d: d["training"].update(learning_rate=math.nan),
         "training.learning_rate: must be a finite number, not nan"),
        (lambda d: d["inference"].update(score_threshold=math.inf),
         "inference.score_threshold: must be a finite number, not inf"),
        # issue 15's hand edits: a text for a switch, words or nulls for a range
        (lambda d: d["training"]["augment"].update(vflip="no"),
         "training.augment.vflip: must be a valid boolean"),
        (lambda d: d["training"]["augment"].update(scale_jitter=["a", "b"]),
         "training.augment.scale_jitter.0: must be a valid number"),
        (lambda d: d["training"]["augment"].update(scale_jitter=[None, 1]),
         "training.augment.scale_jitter.0: must be a valid number"),
        (lambda d: d["training"].update(momentum=math.inf),
         "training.momentum: must be a finite number, not inf"),
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
    with pytest.raises(BadInputError, match="kind must be 'roi' or 'keypoints', not 'masks'"):
        config.supports("masks")
