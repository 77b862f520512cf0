"""Builders, heads-only freezing, class extension and weight files."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from napari_learn_complete.errors import BadInputError, BadWeightsError
from napari_learn_complete.model import (
    InferenceSettings,
    ModelConfig,
    backbone_parameters,
    build_model,
    freeze_backbone,
    load_weights,
    save_weights,
)
from napari_learn_complete.model.build import folded, place

SIZE = 96


def _config(architecture: str = "fasterrcnn", backbone: str = "mobilenet_v3_large_320_fpn",
            **kw) -> ModelConfig:
    keypoints = ["apex", "left", "right"] if architecture == "keypointrcnn" else []
    kw.setdefault("inference", InferenceSettings(max_detections=5))
    return ModelConfig(architecture=architecture, backbone=backbone, min_size=SIZE,
                       max_size=SIZE, categories=["disc", "square"], keypoint_names=keypoints,
                       **kw)


def _fast(model: torch.nn.Module) -> torch.nn.Module:
    """Fewer proposals and sampled ROIs than torchvision's defaults: same code, CPU-test speed."""
    model.rpn._pre_nms_top_n = model.rpn._post_nms_top_n = {"training": 64, "testing": 64}
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 32
    return model


def _batch(keypoints: bool) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, SIZE, SIZE), torch.rand(3, 80, SIZE)]
    targets = []
    for label in (1, 2):
        target = {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]),
                  "labels": torch.tensor([label])}
        if keypoints:
            target["keypoints"] = torch.tensor([[[30.0, 12.0, 2], [10.0, 60.0, 2], [50, 60, 1]]])
        targets.append(target)
    return images, targets


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large_fpn", "resnet50_fpn_v2"])
@pytest.mark.parametrize("architecture", ["fasterrcnn", "keypointrcnn"])
def test_build_and_forward(architecture, backbone):
    torch.manual_seed(0)
    config = _config(architecture, backbone)
    model = _fast(build_model(config))
    keypoints = architecture == "keypointrcnn"
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # 2 categories + background
    assert model.transform.min_size == (SIZE,) and model.transform.max_size == SIZE
    if keypoints:
        assert model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels == 3
    images, targets = _batch(keypoints)
    model.train()
    losses = model(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_keypoint"} if keypoints else set())
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    assert {"boxes", "labels", "scores"} <= set(out[0])
    assert ("keypoints" in out[0]) == keypoints


def test_inference_settings_are_applied():
    config = _config(inference=InferenceSettings(score_threshold=0.4, nms_iou=0.3,
                                                 max_detections=5))
    model = build_model(config)
    heads = model.roi_heads
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.4, 0.3, 5)


def _train_step(model: torch.nn.Module, keypoints: bool = False) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    model.train()
    images, targets = _batch(keypoints)
    loss = sum(model(images, targets).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_heads_only_freezes_exactly_the_backbone_including_fpn():
    torch.manual_seed(0)
    model = _fast(build_model(_config()))
    names = dict(backbone_parameters(model))
    assert any(".fpn." in n for n in names) and any(".body." in n for n in names)
    assert set(names) == {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
    freeze_backbone(model, True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()} - set(names)
    assert any(n.startswith("rpn.") for n in trainable)
    assert any(n.startswith("roi_heads.") for n in trainable)

    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    heads_before = model.roi_heads.box_predictor.cls_score.weight.clone()
    _train_step(model)
    after = model.state_dict()
    # parameters AND BatchNorm running statistics of the backbone stay bit-identical
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(heads_before, model.roi_heads.box_predictor.cls_score.weight)

    freeze_backbone(model, False)
    assert all(p.requires_grad for p in model.parameters())
    _train_step(model)
    changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
    assert any("running_mean" in k for k in changed)
    assert any(k.endswith("weight") and "fpn" in k for k in changed)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    other = b.state_dict()
    return all(torch.equal(v, other[k]) for k, v in a.state_dict().items())


def test_random_weights_are_drawn_from_the_seed_and_leave_the_callers_rng(tmp_path):
    config = _config("keypointrcnn")
    state = torch.random.get_rng_state()
    first = build_model(config)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's draws are its own
    torch.rand(5)  # whatever the caller drew in between
    assert _same_state(first, build_model(config, seed=0))
    assert not _same_state(first, build_model(config, seed=1))
    # a file's new category gets a fresh row drawn from the seed too
    path = tmp_path / "w.pt"
    save_weights(path, first, config, {})
    other = config.replace(categories=["disc", "square", "star"])
    rows = [build_model(other, path, seed=s).roi_heads.box_predictor.cls_score.weight[3]
            for s in (0, 0, 1)]
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])


def test_weight_file_round_trip_and_class_rows_by_name(tmp_path):
    torch.manual_seed(0)
    config = _config()
    model = build_model(config)
    path = tmp_path / "w.pt"
    save_weights(path, model, config, {"note": "first"})
    _, config_dict, meta = load_weights(path)
    assert meta == {"note": "first"} and ModelConfig.from_dict(config_dict) == config
    loaded = build_model(config, path)
    assert _same_state(model, loaded)
    # another index lists the categories in another order and has one more
    other = config.replace(categories=["square", "star", "disc"])
    remapped = build_model(other, path).roi_heads.box_predictor.cls_score.weight
    original = model.roi_heads.box_predictor.cls_score.weight
    assert torch.equal(remapped[1], original[2]) and torch.equal(remapped[3], original[1])
    with pytest.raises(BadInputError, match="plain JSON"):
        save_weights(tmp_path / "x.pt", model, config, {"bad": object()})


@pytest.mark.parametrize("architecture", ["fasterrcnn", "keypointrcnn"])
def test_a_loaded_version_predicts_exactly_as_the_model_saved(tmp_path, architecture):
    # A version loads into a model built without torchvision's random initialisation: every
    # tensor must come from the file (or, the anchors, be made again), none left unset.
    torch.manual_seed(0)
    config = _config(architecture, inference=InferenceSettings(score_threshold=0,
                                                               max_detections=5))
    model = build_model(config).eval()
    save_weights(tmp_path / "w.pt", model, config, {})
    loaded = build_model(config, tmp_path / "w.pt").eval()
    saved = set(loaded.state_dict())
    assert [name for name, _ in loaded.named_buffers() if name not in saved] == []
    images = [torch.rand(3, SIZE, SIZE), torch.rand(3, 80, SIZE)]
    with torch.no_grad():
        want, got = model(images), loaded(images)
    assert all(len(found["boxes"]) == 5 for found in want)
    for expected, found in zip(want, got, strict=True):
        assert expected.keys() == found.keys()
        assert all(torch.equal(expected[key], found[key]) for key in expected)


def _learned_norms(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with BatchNorm statistics and scales as training leaves them: a fresh
    BatchNorm is nearly the identity, which folding it would not test."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large_320_fpn", "resnet50_fpn_v2"])
def test_inference_folds_batchnorms_into_a_copy_and_computes_the_same(backbone):
    torch.manual_seed(0)
    model = place(_learned_norms(build_model(_config(backbone=backbone))), "cpu").eval()
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    net = folded(model)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    # MobileNetV3 has every BatchNorm in a Sequential after its convolution; ResNet's blocks
    # hold theirs as attributes (left as they are), its FPN v2 in Sequentials
    assert left == 0 if backbone.startswith("mobilenet") else 0 < left < norms
    assert net.rpn is model.rpn  # what has nothing to fold is shared, not copied
    assert net.roi_heads.box_predictor is model.roi_heads.box_predictor
    # the model itself is untouched: Learn trains it and versions save it
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == norms
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())
    images = torch.rand(2, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = model.backbone(images), net.backbone(images)
    for name in want:
        assert not torch.equal(want[name], got[name])  # computed another way...
        # ...the same within float32 rounding of the map's range (ResNet's reach thousands)
        assert (got[name] - want[name]).abs().max() <= 1e-5 * want[name].abs().max()


def test_nothing_to_fold_runs_the_model_itself():
    stand_in = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert folded(stand_in) is stand_in


def _foreign_files(tmp_path):
    model = build_model(_config())
    valid = tmp_path / "valid.pt"
    save_weights(valid, model, _config(), {})
    files = {}
    files["pickle"] = tmp_path / "pickle.pt"
    torch.save({"args": argparse.Namespace(a=1)}, files["pickle"])
    files["state_dict"] = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), files["state_dict"])
    files["text"] = tmp_path / "text.pt"
    files["text"].write_text("hello, I am not a model\n")
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    files["missing"] = tmp_path / "missing.pt"
    return files


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("pickle", "not plain weights"),
        ("state_dict", "it holds a bare state dict"),
        ("text", "not a readable weight file"),
        ("truncated", "truncated, corrupt"),
        ("missing", "weight file not found"),
    ],
)
def test_foreign_files_are_refused(tmp_path, kind, message):
    path = _foreign_files(tmp_path)[kind]
    with pytest.raises(BadWeightsError) as err:
        build_model(_config(), path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_weights_of_another_architecture_or_newer_format_are_refused(tmp_path):
    path = tmp_path / "boxes.pt"
    save_weights(path, build_model(_config()), _config(), {})
    with pytest.raises(BadWeightsError, match=r"architecture 'fasterrcnn'.*needs 'keypointrcnn'"):
        build_model(_config("keypointrcnn"), path)
    old_head = tmp_path / "keypoints.pt"  # torchvision's keypoint head, as saved before format 3
    save_weights(old_head, build_model(_config("keypointrcnn")), _config("keypointrcnn"), {})
    with pytest.raises(BadWeightsError, match=r"keypoint_head None, this model needs \[64, 64\]"):
        build_model(_config("keypointrcnn", keypoint_head=[64, 64]), old_head)
    with pytest.raises(BadWeightsError, match=r"box_head None, this model needs 64"):
        build_model(_config(box_head=64), path)  # torchvision's box head, as before format 4
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 2
    torch.save(payload, path)
    with pytest.raises(BadWeightsError, match="format 2 is newer"):
        load_weights(path)


def test_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = _config()
    path = tmp_path / "0001.pt"
    old = build_model(config)
    save_weights(path, old, config, {"version": 1})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_weights(path, build_model(config), config, {"version": 2})
    monkeypatch.undo()
    state, _, meta = load_weights(path)
    assert meta == {"version": 1}
    assert all(torch.equal(v, state[k]) for k, v in old.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["0001.pt"]  # the temp file is gone


